"""Clinical facts that DICOM does not carry, supplied per patient in a CSV file.

Columns: ``patient_id`` (required), ``child_pugh`` (A5 ... C15), ``dose_algorithm``,
``motion_management``, ``institution`` (overrides the DICOM InstitutionName, which anonymisers
often blank), and one ``rx_<target>`` column per target prescription from the case-report form,
in Gy (``rx_PTVp``, ``rx_PTV_6000``...). Empty cells mean "not known". Any other column is
reported (a misspelt ``childpugh`` must not silently leave every fact unknown).
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
    institution: str | None = None

    def fact(self, name: str) -> str | None:
        value = getattr(self, name, None)
        return None if value is None else str(value)


KNOWN_COLUMNS = ("patient_id", "child_pugh", "dose_algorithm", "motion_management", "institution")


@dataclass(frozen=True)
class ClinicalTable:
    """The clinical facts of a CSV file, by patient ID, and what was wrong with the file."""

    path: str
    facts: dict[str, ClinicalFacts]
    warnings: tuple[str, ...] = ()

    def unmatched(self, patient_ids: set[str]) -> list[str]:
        """Warnings for patients of the CSV that no checked plan belongs to."""
        missing = sorted(set(self.facts) - patient_ids)
        if not missing:
            return []
        return [
            f"{os.path.basename(self.path)}: {len(missing)} patient ID(s) match no plan found: "
            + ", ".join(repr(m) for m in missing)
        ]


def read_clinical_table(path: str | os.PathLike[str]) -> ClinicalTable:
    """Read the clinical facts CSV with the problems a careless file has (unknown columns).

    Raises
    ------
    InputError
        As :func:`read_clinical_csv`.
    """
    spath = os.fspath(path)
    facts = read_clinical_csv(spath)
    with open(spath, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    unknown = [c for c in header if c and c not in KNOWN_COLUMNS and not c.startswith("rx_")]
    warnings = []
    if unknown:
        warnings.append(
            f"{os.path.basename(spath)}: unknown column(s) {', '.join(repr(c) for c in unknown)} ignored; "
            f"expected {', '.join(KNOWN_COLUMNS)} or rx_<target>"
        )
    return ClinicalTable(spath, facts, tuple(warnings))


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
                    (row.get("institution") or "").strip() or None,
                )
    except OSError as exc:
        raise InputError(spath, f"cannot be read ({exc})") from exc
    except csv.Error as exc:
        raise InputError(spath, f"not a valid CSV file ({exc})") from exc
    return out
