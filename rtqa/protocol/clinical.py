"""Clinical facts that DICOM does not carry, supplied per patient in a CSV file.

Columns: ``patient_id`` (required), ``child_pugh`` (A5 ... C15), ``dose_algorithm``,
``motion_management``, ``institution`` (overrides the DICOM InstitutionName, which anonymisers
often blank), and one ``rx_<target>`` column per target prescription from the case-report form,
in Gy (``rx_PTVp``, ``rx_PTV_6000``...). Empty cells mean "not known". Any other column is
reported (a misspelt ``childpugh`` must not silently leave every fact unknown).

A bad cell never stops a run: that patient's fact becomes unknown, with a warning naming the
file, row, column, value and what is allowed (a Child-Pugh class without its score, ``B``, is
class B with the score unknown: B7, B8 or B9). Only a file that cannot be read as a whole (not
a regular file, too large, not UTF-8/UTF-16 text, not CSV, no ``patient_id`` header) is an error.
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
    # a fact known only in part: the values it may take (``child_pugh`` ``B`` -> B7, B8, B9)
    possible: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def fact(self, name: str) -> str | None:
        value = getattr(self, name, None)
        return None if value is None else str(value)

    def possible_values(self, name: str) -> tuple[str, ...] | None:
        """The values an unknown fact may still take, when part of it is known; None otherwise."""
        return self.possible.get(name) if self.fact(name) is None else None


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
    """Read the clinical facts CSV with the problems a careless file has: unknown columns, and
    bad cells (each makes one patient's fact unknown, with a warning).

    Raises
    ------
    InputError
        The file as a whole cannot be read (see :func:`read_clinical_csv`).
    """
    spath = os.fspath(path)
    facts, warnings = _read(spath)
    return ClinicalTable(spath, facts, tuple(warnings))


def read_clinical_csv(path: str | os.PathLike[str]) -> dict[str, ClinicalFacts]:
    """Read the clinical facts CSV, keyed by patient ID (the warnings of bad cells are dropped:
    use :func:`read_clinical_table` to show them).

    Raises
    ------
    InputError
        The file as a whole cannot be read: not a regular file, larger than 64 MiB, text that is
        neither UTF-8 nor UTF-16 with a byte-order mark (see :func:`decode_csv`), NUL characters,
        not CSV, or no header with a ``patient_id`` column. A bad cell is never an error.
    """
    return _read(os.fspath(path))[0]


def child_pugh_values(cell: str) -> tuple[str, ...] | None:
    """The Child-Pugh scores a cell may mean: one score (``B7``), every score of a class given
    alone (``B`` -> B7, B8, B9), or None when the cell is neither."""
    value = cell.strip().upper()
    if value in CHILD_PUGH:
        return (value,)
    scores = tuple(s for s in CHILD_PUGH if s[0] == value)
    return scores if len(value) == 1 and scores else None


_ALLOWED_CHILD_PUGH = f"one of {', '.join(CHILD_PUGH)}, a class alone (A, B or C) when the score is not known, or empty"


class _Rows:
    """Turns the rows of the CSV into facts, collecting a warning for every bad cell."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.warnings: list[str] = []
        self.empty: dict[str, list[int]] = {}

    def bad(self, row: int, column: str, value: str, allowed: str, effect: str) -> None:
        self.warnings.append(
            f"{self.name}, row {row}, column {column}: {_quote(value)} is not allowed ({allowed}); {effect}"
        )

    def facts(self, row: int, cells: dict[str | None, str | list[str] | None]) -> ClinicalFacts | None:
        def cell(key: str) -> str:
            value = cells.get(key)
            return value.strip() if isinstance(value, str) else ""

        extra = cells.get(None)
        if extra:
            self.warnings.append(
                f"{self.name}, row {row}: {len(extra)} cell(s) beyond the header ignored: "
                + ", ".join(_quote(str(v)) for v in extra)
            )
        pid = cell("patient_id")
        if not pid:
            self.warnings.append(f"{self.name}, row {row}, column patient_id: empty; the row is ignored")
            return None
        who = f"patient {_quote(pid)}"
        child_pugh, possible = None, {}
        raw = cell("child_pugh")
        if "child_pugh" in cells and not raw:
            self.empty.setdefault("child_pugh", []).append(row)
        elif raw:
            values = child_pugh_values(raw)
            if values is None:
                self.bad(
                    row, "child_pugh", raw, _ALLOWED_CHILD_PUGH, f"the Child-Pugh score of {who} is taken as unknown"
                )
            elif len(values) == 1:
                child_pugh = values[0]
            else:
                possible["child_pugh"] = values
                self.warnings.append(
                    f"{self.name}, row {row}, column child_pugh: {_quote(raw)} is a class without its score; "
                    f"{who} is graded over every score it may be ({', '.join(values)})"
                )
        rx: dict[str, float] = {}
        rx_bad = []
        for key, value in cells.items():
            if not (key and key.startswith("rx_") and isinstance(value, str) and value.strip()):
                continue
            try:
                dose = float(value)
            except ValueError:
                dose = math.nan
            # float() accepts "nan" and "inf"; neither is a prescription
            if not math.isfinite(dose) or dose <= 0:
                rx_bad.append((key, value))
                continue
            rx[key[3:]] = dose
        for key, value in rx_bad:
            self.bad(
                row, key, value, "a positive dose in Gy",
                f"the CSV prescriptions of {who} are all left out (a partial set would change the "
                "prescription graded against); the plan's own sources are used",
            )  # fmt: skip
        return ClinicalFacts(
            pid,
            child_pugh,
            cell("dose_algorithm") or None,
            cell("motion_management") or None,
            {} if rx_bad else rx,
            cell("institution") or None,
            possible,
        )

    def merge(self, row: int, first: ClinicalFacts, again: ClinicalFacts) -> ClinicalFacts:
        """A patient on two rows: facts that agree stand, facts that differ become unknown."""
        self.warnings.append(
            f"{self.name}, row {row}, column patient_id: patient {_quote(first.patient_id)} appears again; "
            "facts the rows disagree on are taken as unknown"
        )
        kept: dict[str, object] = {}
        for name in (
            "child_pugh",
            "dose_algorithm",
            "motion_management",
            "prescriptions_gy",
            "institution",
            "possible",
        ):
            a, b = getattr(first, name), getattr(again, name)
            if a == b or not b:
                kept[name] = a
            elif not a:
                kept[name] = b
            else:
                kept[name] = type(a)() if isinstance(a, dict) else None
                self.warnings.append(
                    f"{self.name}, row {row}, column {name}: patient {_quote(first.patient_id)} has "
                    f"{_quote(str(a))} and {_quote(str(b))}; taken as unknown"
                )
        if kept["child_pugh"] is not None:
            kept["possible"] = {}
        return ClinicalFacts(first.patient_id, **kept)  # type: ignore[arg-type]

    def summary(self) -> list[str]:
        return [
            f"{self.name}: column {column} is empty on {len(rows)} row(s) ({', '.join(map(str, rows[:20]))}"
            f"{', ...' if len(rows) > 20 else ''}): those patients' {column} is unknown"
            for column, rows in self.empty.items()
        ]


def _read(spath: str) -> tuple[dict[str, ClinicalFacts], list[str]]:
    out: dict[str, ClinicalFacts] = {}
    rows = _Rows(spath)
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
        header = [(c or "").strip() for c in reader.fieldnames or []]
        if "patient_id" not in header:
            raise InputError(spath, "line 1: expected a header with a 'patient_id' column")
        reader.fieldnames = header
        for cells in reader:
            row = reader.line_num
            facts = rows.facts(row, cells)
            if facts is None:
                continue
            out[facts.patient_id] = rows.merge(row, out[facts.patient_id], facts) if facts.patient_id in out else facts
    except OSError as exc:
        raise InputError(spath, f"cannot be read ({exc})") from exc
    except csv.Error as exc:
        raise InputError(spath, f"not a valid CSV file ({exc})") from exc
    unknown = [c for c in header if c and c not in KNOWN_COLUMNS and not c.startswith("rx_")]
    warnings = rows.warnings + rows.summary()
    if unknown:
        warnings.insert(
            0,
            f"{os.path.basename(spath)}: unknown column(s) {', '.join(repr(c) for c in unknown)} ignored; "
            f"expected {', '.join(KNOWN_COLUMNS)} or rx_<target>",
        )
    return out, warnings
