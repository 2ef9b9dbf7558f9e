"""Clinical facts that DICOM does not carry, supplied per patient in a CSV file.

Columns: ``patient_id`` (required), ``child_pugh`` (A5 ... C15), ``dose_algorithm``,
``motion_management``, and one ``rx_<target>`` column per target prescription from the
case-report form, in Gy (``rx_PTVp``, ``rx_PTV_6000``...). Empty cells mean "not known".
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from rtqa.errors import InputError
from rtqa.protocol.loader import CHILD_PUGH


@dataclass(frozen=True)
class ClinicalFacts:
    patient_id: str
    child_pugh: str | None = None
    dose_algorithm: str | None = None
    motion_management: str | None = None
    prescriptions_gy: dict[str, float] = field(default_factory=dict)

    def fact(self, name: str) -> str | None:
        value = getattr(self, name, None)
        return None if value is None else str(value)


def read_clinical_csv(path: str | os.PathLike[str]) -> dict[str, ClinicalFacts]:
    """Read the clinical facts CSV, keyed by patient ID.

    Raises
    ------
    InputError
        No ``patient_id`` column, a duplicate patient, an unknown Child-Pugh score or a
        prescription that is not a positive number; the message names the file and line.
    """
    spath = os.fspath(path)
    out: dict[str, ClinicalFacts] = {}
    try:
        with open(spath, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "patient_id" not in reader.fieldnames:
                raise InputError(spath, "line 1: expected a header with a 'patient_id' column")
            for row in reader:
                line = reader.line_num
                pid = (row.get("patient_id") or "").strip()
                if not pid:
                    raise InputError(spath, f"line {line}: empty patient_id")
                if pid in out:
                    raise InputError(spath, f"line {line}: patient {pid!r} appears twice")
                cp = (row.get("child_pugh") or "").strip().upper() or None
                if cp is not None and cp not in CHILD_PUGH:
                    raise InputError(spath, f"line {line}: child_pugh {cp!r}; expected one of {', '.join(CHILD_PUGH)}")
                rx: dict[str, float] = {}
                for key, value in row.items():
                    if key and key.startswith("rx_") and value and value.strip():
                        try:
                            rx[key[3:]] = float(value)
                        except ValueError:
                            raise InputError(spath, f"line {line}: {key} {value!r} is not a dose in Gy") from None
                        if rx[key[3:]] <= 0:
                            raise InputError(spath, f"line {line}: {key} must be positive")
                out[pid] = ClinicalFacts(
                    pid,
                    cp,
                    (row.get("dose_algorithm") or "").strip() or None,
                    (row.get("motion_management") or "").strip() or None,
                    rx,
                )
    except OSError as exc:
        raise InputError(spath, f"cannot be read ({exc})") from exc
    except csv.Error as exc:
        raise InputError(spath, f"not a valid CSV file ({exc})") from exc
    return out
