"""Clinical facts that DICOM does not carry, supplied per patient in a CSV file.

Columns: ``patient_id`` (required), ``child_pugh`` (A5 ... C15), ``dose_algorithm``,
``motion_management``, ``institution`` (overrides the DICOM InstitutionName, which anonymisers
often blank), and one ``rx_<target>`` column per target prescription from the case-report form,
in Gy (``rx_PTVp``, ``rx_PTV_6000``...). Empty cells mean "not known". Any other column is
reported (a misspelt ``childpugh`` must not silently leave every fact unknown).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import stat
from dataclasses import dataclass, field

from rtqa.errors import InputError
from rtqa.protocol.loader import CHILD_PUGH

MAX_CSV_BYTES = 64 * 1024**2


def decode_csv(data: bytes, path: str) -> str:
    """The text of a CSV file: UTF-8 (with or without BOM), or UTF-16 with its BOM.

    Other encodings (cp1252 from Excel, GB18030) cannot be told apart from each other
    reliably, and a guess would silently change a patient ID: they are refused with what to
    do, rather than read as something they are not.

    Raises
    ------
    InputError
        Bytes that are not valid UTF-8 or UTF-16, naming the first bad byte.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InputError(
                path, f"starts with a UTF-16 byte-order mark but is not UTF-16 text ({exc.reason})"
            ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            path,
            f"line {line}: byte 0x{data[exc.start]:02X} at offset {exc.start} is not UTF-8; rtqa reads UTF-8 "
            "or UTF-16 with a byte-order mark (save the table as 'CSV UTF-8')",
        ) from None


def _quote(value: str, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}... ({len(text)} characters)"


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
    with open(spath, "rb") as raw:  # read_clinical_csv has checked that it is a regular, small file
        text = decode_csv(raw.read(MAX_CSV_BYTES + 1), spath)
    header = next(csv.reader(io.StringIO(text, newline="")), [])
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
        prescription that is not a positive finite number; the message names the file and
        line. Text that is neither UTF-8 nor UTF-16 with a byte-order mark (see
        :func:`decode_csv`).
    """
    spath = os.fspath(path)
    out: dict[str, ClinicalFacts] = {}
    try:
        if not stat.S_ISREG(os.stat(spath).st_mode):
            raise InputError(spath, "is not a regular file (a FIFO or device would block the read)")
        with open(spath, "rb") as raw:
            data = raw.read(MAX_CSV_BYTES + 1)
        if len(data) > MAX_CSV_BYTES:
            raise InputError(spath, f"is larger than {MAX_CSV_BYTES // 1024**2} MiB; a clinical facts table is not")
        text = decode_csv(data, spath)
        if "\x00" in text:
            raise InputError(spath, "holds NUL characters: not a text CSV file")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or "patient_id" not in reader.fieldnames:
            raise InputError(spath, "line 1: expected a header with a 'patient_id' column")
        for row in reader:
            line = reader.line_num
            pid = (row.get("patient_id") or "").strip()
            if not pid:
                raise InputError(spath, f"line {line}: empty patient_id")
            if pid in out:
                raise InputError(spath, f"line {line}: patient {_quote(pid)} appears twice")
            cp = (row.get("child_pugh") or "").strip().upper() or None
            if cp is not None and cp not in CHILD_PUGH:
                raise InputError(
                    spath, f"line {line}: child_pugh {_quote(cp)}; expected one of {', '.join(CHILD_PUGH)}"
                )
            rx: dict[str, float] = {}
            for key, value in row.items():
                if key and key.startswith("rx_") and value and value.strip():
                    try:
                        dose = float(value)
                    except ValueError:
                        raise InputError(spath, f"line {line}: {key} {_quote(value)} is not a dose in Gy") from None
                    # float() accepts "nan" and "inf"; neither is a prescription
                    if not math.isfinite(dose) or dose <= 0:
                        raise InputError(spath, f"line {line}: {key} {_quote(value)}; expected a positive dose in Gy")
                    rx[key[3:]] = dose
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
