"""Hostile and broken submissions built from the generated demo plan, one edit each.

The demo plan (``fixtures/demo/liver_clean``, written by ``python -m fixtures.generate``) is
copied and one attribute of one file is changed, so that every test and the stress script
(bench/stress_bombs.py) names exactly what is wrong with its input.
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "demo" / "liver_clean"
DEMO_CLINICAL = ROOT / "fixtures" / "demo" / "clinical.csv"
DEMO_PATIENT = "HCC-CLEAN"
FILES = {"plan": "RP.dcm", "structures": "RS.dcm", "dose": "RD_PLAN.dcm"}


def demo_copy(dest: Path) -> Path:
    """A copy of the demo plan in ``dest`` (created), returned."""
    shutil.copytree(DEMO, dest)
    return dest


def edit(case: Path, which: str, change: Callable[[Dataset], None]) -> Path:
    """Apply ``change`` to one file of a case (``plan``, ``structures`` or ``dose``)."""
    path = case / FILES[which]
    with warnings.catch_warnings():  # the edits write values pydicom warns about, on purpose
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)
    return path


def reidentify(case: Path, patient_id: str) -> Path:
    """Give every file of a case new UIDs (consistently) and another PatientID, so that a
    copy is a second patient rather than a duplicate of the first."""
    mapping: dict[str, str] = {}

    def fresh(uid: str) -> str:
        if uid.startswith("1.2.840.10008"):  # DICOM's own UIDs (SOP classes) stay
            return uid
        return mapping.setdefault(uid, generate_uid())

    def visit(ds: Dataset, elem: DataElement) -> None:
        if elem.VR == "UI" and elem.value:
            elem.value = fresh(str(elem.value))

    for name in FILES.values():
        path = case / name
        ds = pydicom.dcmread(path)
        ds.walk(visit)
        ds.PatientID = patient_id
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path)
    return case


# ----------------------------------------------------------------------------------------------
# single edits: (file, change)


def _set(keyword: str, value: object) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        setattr(ds, keyword, value)

    return change


def _target_prescription(value: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        ds.DoseReferenceSequence[0]["TargetPrescriptionDose"].value = value

    return change


def _fractions(value: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        raw = value.encode("ascii") + b" " * (len(value) % 2)
        ds.FractionGroupSequence[0][0x300A0078] = RawDataElement(  # type: ignore[assignment]
            BaseTag(0x300A0078), "IS", len(raw), raw, 0, False, True
        )

    return change


def _contour_nan(ds: Dataset) -> None:
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "Bowel_Small")
    item = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
    contour = item.ContourSequence[0]
    values = [str(v) for v in contour.ContourData]
    values[2] = "NaN"
    contour["ContourData"] = DataElement(0x30060050, "DS", "\\".join(values))


def _negative_doses(ds: Dataset) -> None:
    pixels = ds.pixel_array.astype(np.int32)
    pixels.flat[: pixels.size // 10] = -1000
    ds.PixelRepresentation = 1
    ds.PixelData = pixels.tobytes()


def _frame_offsets_as_un(ds: Dataset) -> None:
    """GridFrameOffsetVector stored with VR UN and 11.6 MB of bytes that are no numbers."""
    ds["GridFrameOffsetVector"] = DataElement(0x3004000C, "UN", b"\x07" * 11_600_000)


def _frame_step(step_mm: float) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        ds.GridFrameOffsetVector = [f"{i * step_mm:.6g}" for i in range(int(ds.NumberOfFrames))]

    return change


NUMBER_EDITS: dict[str, tuple[str, Callable[[Dataset], None], str]] = {
    # name: (file, change, attribute the error must name)
    "TargetPrescriptionDose NaN": ("plan", _target_prescription("NaN"), "TargetPrescriptionDose"),
    "TargetPrescriptionDose Inf": ("plan", _target_prescription("Infinity"), "TargetPrescriptionDose"),
    "TargetPrescriptionDose negative": ("plan", _target_prescription("-50"), "TargetPrescriptionDose"),
    "NumberOfFractionsPlanned NaN": ("plan", _fractions("NaN"), "NumberOfFractionsPlanned"),
    "DoseGridScaling NaN": ("dose", _set("DoseGridScaling", "NaN"), "DoseGridScaling"),
    "DoseGridScaling Inf": ("dose", _set("DoseGridScaling", "inf"), "DoseGridScaling"),
    "PixelSpacing NaN": ("dose", _set("PixelSpacing", ["NaN", "3"]), "PixelSpacing"),
    "ImagePositionPatient Inf": (
        "dose",
        _set("ImagePositionPatient", ["-163.5", "inf", "-104.5"]),
        "ImagePositionPatient",
    ),
    "ContourData NaN": ("structures", _contour_nan, "ContourData"),
    "negative doses": ("dose", _negative_doses, "PixelData"),
}

BOMB_EDITS: dict[str, tuple[str, Callable[[Dataset], None], str]] = {
    "PixelSpacing 0.25 mm": ("dose", _set("PixelSpacing", ["0.25", "0.25"]), "PixelSpacing"),
    "GridFrameOffsetVector step 1e-4 mm": ("dose", _frame_step(1e-4), "GridFrameOffsetVector"),
    "DoseGridScaling 1e-3": ("dose", _set("DoseGridScaling", "0.001"), "DoseGridScaling"),
    "GridFrameOffsetVector as UN, 11.6 MB": ("dose", _frame_offsets_as_un, "GridFrameOffsetVector"),
}


# ----------------------------------------------------------------------------------------------
# files that are not what they seem


def write_deflate_bomb(path: Path, inflated_bytes: int) -> Path:
    """An RT Dose header in Deflated Explicit VR Little Endian whose data set inflates to
    ``inflated_bytes`` (a private OB element of zeros), written in a stream: the file is about
    a thousandth of that."""
    ds = pydicom.dcmread(DEMO / FILES["dose"], stop_before_pixels=True)
    del ds.file_meta.TransferSyntaxUID
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(body, ds)
    meta = pydicom.filebase.DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    payload = inflated_bytes - len(body.getvalue())
    creator = b"RTQA"
    length = max(payload - 30, 0) // 2 * 2  # OB values have an even length
    # a private group after every attribute of the header keeps the tags in ascending order
    header = (
        struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", len(creator))
        + creator
        + struct.pack("<HH2sHI", 0x7FE1, 0x1000, b"OB", 0, length)
    )
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 24)
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM" + meta.getvalue())
        fh.write(squeeze.compress(body.getvalue() + header))
        left = length
        while left > 0:
            n = min(left, len(zeros))
            fh.write(squeeze.compress(zeros[:n]))
            left -= n
        fh.write(squeeze.flush())
    return path


def nest(case: Path, root: Path, depth: int) -> Path:
    """Move ``case`` to the bottom of ``depth`` nested folders under ``root``."""
    deep = root
    os.makedirs(root, exist_ok=True)
    for _ in range(depth):  # one mkdir at a time: os.makedirs recurses once per level
        deep = deep / "d"
        os.mkdir(deep)
    shutil.move(str(case), str(deep / case.name))
    return root


def add_specials(case: Path) -> list[Path]:
    """A FIFO, a link to /dev/zero, a dangling link and a link loop inside ``case``."""
    fifo = case / "RD_fifo.dcm"
    os.mkfifo(fifo)
    zero = case / "RD_zero.dcm"
    zero.symlink_to("/dev/zero")
    dangling = case / "RD_gone.dcm"
    dangling.symlink_to(case / "no-such-file")
    loop = case / "loop"
    loop.symlink_to(case)
    return [fifo, zero, dangling, loop]
