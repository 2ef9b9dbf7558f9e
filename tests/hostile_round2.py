"""Hostile submissions of the second round (issue 18), built from the generated demo plan.

Each builder edits a copy of the demo plan (``tests/hostile_edits.py``) in one way and takes
its size as a parameter: the tests use small sizes (a second or two each), ``bench/stress_bombs.py``
the sizes of the issue's findings, timed under a memory limit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from hostile_edits import FILES, edit
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid


def deflated_with_pad(case: Path) -> Path:
    """The structure set in Deflated Explicit VR Little Endian, one pad byte after the stream."""
    path = case / FILES["structures"]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    with open(path, "ab") as fh:
        fh.write(b"\0")
    return path


def zeros_file(case: Path, size: int) -> Path:
    """A file of ``size`` zero bytes in the tree (a disk image left behind, say)."""
    path = case / "zeros.bin"
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def _cord(ds: Dataset) -> tuple[Dataset, list[float], float, float]:
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "SpinalCord")
    item = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
    zs = sorted({float(c.ContourData[2]) for c in item.ContourSequence})
    pts = np.array(item.ContourSequence[len(item.ContourSequence) // 2].ContourData, float).reshape(-1, 3)
    return item, zs, float(pts[:, 0].mean()), float(pts[:, 1].mean())


def _square(x0: float, y0: float, z: float, side: float) -> Dataset:
    c = Dataset()
    c.ContourGeometricType = "CLOSED_PLANAR"
    c.NumberOfContourPoints = 4
    c.ContourData = [f"{v:.3f}" for v in (x0, y0, z, x0 + side, y0, z, x0 + side, y0 + side, z, x0, y0 + side, z)]
    return c


def squares_on_cord(case: Path, count: int, *, one_plane: bool) -> Path:
    """``count`` small disjoint squares (0.8 mm, 1.2 mm apart) added to the SpinalCord, in a
    block beside the cord: all on its middle plane (``one_plane``) or spread over its planes."""

    def change(ds: Dataset) -> None:
        item, zs, cx, cy = _cord(ds)
        per_plane = count if one_plane else -(-count // len(zs))
        side = int(np.ceil(np.sqrt(per_plane)))
        new = []
        for i in range(count):
            z = zs[len(zs) // 2] if one_plane else zs[i % len(zs)]
            k = i if one_plane else i // len(zs)
            new.append(_square(cx + 20 + (k % side) * 1.2, cy - 30 + (k // side) * 1.2, z, 0.8))
        item.ContourSequence = Sequence([*item.ContourSequence, *new])

    return edit(case, "structures", change)


def stored_dvh_items(case: Path, count: int, roi_name: str = "Body") -> Path:
    """``count`` cumulative stored DVHs (DVHSequence) in the dose file, all naming ``roi_name``."""
    ss = pydicom.dcmread(case / FILES["structures"], stop_before_pixels=True)
    number = next(int(r.ROINumber) for r in ss.StructureSetROISequence if r.ROIName == roi_name)

    def change(ds: Dataset) -> None:
        items = []
        for _ in range(count):
            ref = Dataset()
            ref.ReferencedROINumber = number
            ref.DVHROIContributionType = "INCLUDED"
            item = Dataset()
            item.DVHReferencedROISequence = Sequence([ref])
            item.DVHType, item.DoseUnits, item.DoseType = "CUMULATIVE", "GY", "PHYSICAL"
            item.DVHDoseScaling, item.DVHVolumeUnits, item.DVHNumberOfBins = "1", "CM3", 3
            item.DVHData = ["10", "1000", "10", "600", "10", "100"]
            items.append(item)
        ds.DVHSequence = Sequence(items)

    return edit(case, "dose", change)


def mlc_control_points(case: Path, count: int, *, leaves: int = 120) -> Path:
    """The plan's first beam with ``count`` control points, each moving ``leaves`` MLC leaves
    (a sliding window exported at every few MU)."""

    def change(ds: Dataset) -> None:
        beam = ds.BeamSequence[0]
        first = beam.ControlPointSequence[0]
        cps = [first]
        for n in range(1, count):
            cp = Dataset()
            cp.ControlPointIndex = n
            dev = Dataset()
            dev.RTBeamLimitingDeviceType = "MLCX"
            shift = (n % 50) * 0.2
            dev.LeafJawPositions = [f"{-30 + shift:.1f}"] * (leaves // 2) + [f"{30 - shift:.1f}"] * (leaves // 2)
            cp.BeamLimitingDevicePositionSequence = Sequence([dev])
            cp.CumulativeMetersetWeight = f"{n / (count - 1):.6f}"
            cps.append(cp)
        beam.ControlPointSequence = Sequence(cps)
        beam.NumberOfControlPoints = count

    return edit(case, "plan", change)


def beam_doses(case: Path, count: int, *, shape: tuple[int, int, int] | None = None) -> list[Path]:
    """The PLAN dose replaced by ``count`` BEAM doses (the plan's beams repeated to ``count``),
    each a ``1/count`` share of the plan dose; ``shape`` (frames, rows, columns) enlarges the
    grid (finer spacing over the same extent is not needed: only the voxel count matters)."""
    plan_path = case / FILES["plan"]
    plan = pydicom.dcmread(plan_path)
    beams = list(plan.BeamSequence)
    refs = list(plan.FractionGroupSequence[0].ReferencedBeamSequence)
    new_beams, new_refs = [], []
    for n in range(1, count + 1):
        beam = beams[(n - 1) % len(beams)]
        ref = refs[(n - 1) % len(refs)]
        b, r = Dataset(), Dataset()
        b.update(beam)
        r.update(ref)
        b.BeamNumber, r.ReferencedBeamNumber = n, n
        r.BeamDose = f"{2.0 / count:.6f}"
        new_beams.append(b)
        new_refs.append(r)
    plan.BeamSequence = Sequence(new_beams)
    plan.FractionGroupSequence[0].ReferencedBeamSequence = Sequence(new_refs)
    plan.FractionGroupSequence[0].NumberOfBeams = count
    plan.save_as(plan_path)
    dose_path = case / FILES["dose"]
    dose = pydicom.dcmread(dose_path)
    dose_path.unlink()
    pixels = dose.pixel_array.astype(np.float64)
    if shape is not None:
        frames, rows, cols = shape
        dose.NumberOfFrames, dose.Rows, dose.Columns = frames, rows, cols
        spacing = [float(v) for v in dose.PixelSpacing]
        dose.GridFrameOffsetVector = [f"{i * 3.0:g}" for i in range(frames)]
        dose.PixelSpacing = [f"{spacing[0] * pixels.shape[1] / rows:.4f}", f"{spacing[1] * pixels.shape[2] / cols:.4f}"]
        zi = (np.arange(frames) * pixels.shape[0] // frames)[:, None, None]
        yi = (np.arange(rows) * pixels.shape[1] // rows)[None, :, None]
        xi = (np.arange(cols) * pixels.shape[2] // cols)[None, None, :]
        pixels = pixels[zi, yi, xi]
    stored = np.round(pixels / count).astype(np.uint32)
    dose.BitsAllocated, dose.BitsStored, dose.HighBit = 32, 32, 31
    dose.PixelData = stored.tobytes()
    dose.DoseSummationType = "BEAM"
    out = []
    for n in range(1, count + 1):
        beam_ref = Dataset()
        beam_ref.ReferencedBeamNumber = n
        fg = Dataset()
        fg.ReferencedFractionGroupNumber = 1
        fg.ReferencedBeamSequence = Sequence([beam_ref])
        dose.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence = Sequence([fg])
        dose.SOPInstanceUID = generate_uid()
        dose.file_meta.MediaStorageSOPInstanceUID = dose.SOPInstanceUID
        path = case / f"RD_BEAM{n:02d}.dcm"
        dose.save_as(path)
        out.append(path)
    return out


def rx_edit(case: Path, value: str) -> Path:
    """TargetPrescriptionDose of the first DoseReference set to ``value``."""

    def change(ds: Dataset) -> None:
        for item in ds.DoseReferenceSequence:
            if "TargetPrescriptionDose" in item:
                item.TargetPrescriptionDose = value

    return edit(case, "plan", change)


def beam_dose_edit(case: Path, value: str) -> Path:
    """BeamDose of every ReferencedBeam set to ``value``."""

    def change(ds: Dataset) -> None:
        for ref in ds.FractionGroupSequence[0].ReferencedBeamSequence:
            ref.BeamDose = value

    return edit(case, "plan", change)
