"""Read an RT Dose: its header (:class:`DoseInfo`) cheaply, its pixel data on demand."""

from __future__ import annotations

import math
import os

import numpy as np
from pydicom.dataset import Dataset

from rtqa.dvh.budget import configured_budget_bytes, require_dose_budget, require_plausible_dose
from rtqa.dvh.grid import CanonicalGrid, compute_canonical_grid, relative_frame_offsets
from rtqa.errors import DoseGridError, InputError, UnsupportedObjectError
from rtqa.io.common import (
    RT_DOSE,
    as_float,
    as_int,
    excerpt,
    open_dataset,
    quiet_pydicom,
    require,
    text,
    uid_list,
)
from rtqa.io.deferred import materialize
from rtqa.model import DoseGrid, DoseInfo, DoseSummationType, DoseType, Heterogeneity, StoredDVH


@quiet_pydicom
def read_dose_info(path: str | os.PathLike[str]) -> DoseInfo:
    """Read everything about an RT Dose except its pixel data (which is never loaded).

    Raises
    ------
    DoseGridError
        RELATIVE dose units, a spatial transform, an oblique grid, bad frame offsets, NaN or
        infinite geometry.
    InputError
        A required attribute missing or malformed; the message names it.
    """
    spath = os.fspath(path)
    ds, _ = open_dataset(spath, stop_before_pixels=True)
    return _info(ds, spath)


@quiet_pydicom
def read_dose(path: str | os.PathLike[str], *, held_bytes: int = 0) -> DoseGrid:
    """Read an RT Dose into a canonical grid in Gy (``[z, y, x]``, axes increasing).

    Raises
    ------
    DoseGridError, InputError
        As :func:`read_dose_info`, and when the pixel data is truncated or undecodable, the
        grid is over the memory budget (:mod:`rtqa.dvh.budget`), or the doses are negative or
        implausibly high (DoseGridScaling off by orders of magnitude). ``held_bytes`` is what
        the plan already holds (the sum of the doses read before this one): the grid must fit
        in what the budget leaves.
    """
    spath = os.fspath(path)
    ds, _ = open_dataset(spath)
    info = _info(ds, spath)
    scaling = as_float(require(ds, "DoseGridScaling", spath, "a positive scaling factor"), spath, "DoseGridScaling")
    if scaling is None or scaling <= 0:
        raise DoseGridError(spath, f"{scaling} must be positive", attribute="DoseGridScaling (3004,000E)")
    # the stored layout (frames of Rows x Columns), which for a sagittal or coronal dose is not
    # the patient axes' sizes (its frames run along x or y): the grid maps one onto the other
    frames = as_int(ds.get("NumberOfFrames", 1), spath, "NumberOfFrames") or 1
    rows = as_int(ds.get("Rows"), spath, "Rows") or 0
    cols = as_int(ds.get("Columns"), spath, "Columns") or 0
    # pixel data is deferred by open_dataset: nothing of it is read or decoded before this check
    require_dose_budget(
        rows=rows,
        columns=cols,
        frames=frames,
        path=spath,
        budget_bytes=configured_budget_bytes(),
        held_bytes=held_bytes,
    )
    try:
        pixels = _native_pixels(ds)
        if pixels is None:  # encapsulated, big endian, packed bits: pydicom's decoders
            materialize()
            pixels = ds.pixel_array
    except Exception as exc:
        raise DoseGridError(
            spath,
            f"pixel data cannot be decoded ({type(exc).__name__}: {excerpt(str(exc), 200)})",
            attribute="PixelData (7FE0,0010)",
        ) from exc
    pixels = np.asarray(pixels)
    if pixels.size != frames * rows * cols:
        raise DoseGridError(
            spath,
            f"holds {pixels.size} values; Rows x Columns x NumberOfFrames = {rows} x {cols} x {frames} expected",
            attribute="PixelData (7FE0,0010)",
        )
    pixels = pixels.reshape(frames, rows, cols)
    if pixels.size:
        # the extremes of the stored integers give the dose range without a float copy; an
        # ERROR dose (a difference of doses, PS3.3 C.8.8.3) is the one kind that may be negative
        lowest = float(pixels.min()) * scaling if info.dose_type is not DoseType.ERROR else 0.0
        require_plausible_dose(float(pixels.max()) * scaling, lowest, path=spath)
    grid = _grid(ds, spath, frames)
    dose = grid.apply(pixels.astype(np.float64) * scaling)
    return DoseGrid(dose_gy=dose, x_mm=info.x_mm, y_mm=info.y_mm, z_mm=info.z_mm, info=info)


# Transfer syntaxes whose Pixel Data is stored natively, little endian (a deflated data set is
# inflated whole by pydicom before its elements are read)
_NATIVE_LITTLE_ENDIAN = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)
_NATIVE_DTYPES = {(16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


def _native_pixels(ds: Dataset) -> np.ndarray | None:
    """The stored integers of natively encoded RT Dose pixel data, without pydicom's decoders.

    Only for the layouts RT Dose uses (PS3.3 C.8.8.3.4.1: one sample per pixel, 16 or 32 bits
    allocated and stored, unsigned or two's complement) in a little-endian native transfer
    syntax, and a Pixel Data length of exactly Rows x Columns x frames x bytes per value; any
    other file (encapsulated, big endian, fewer bits stored, padded or short) returns None and
    goes to pydicom's own decoding, which raises or decodes as before. The values equal
    ``ds.pixel_array`` for these layouts (tests/test_native_dose.py).
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax not in _NATIVE_LITTLE_ENDIAN or "PixelData" not in ds:
        return None
    try:
        bits, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        samples, representation = int(ds.SamplesPerPixel), int(ds.PixelRepresentation)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    dtype = _NATIVE_DTYPES.get((bits, representation))
    if dtype is None or stored != bits or samples != 1 or min(rows, cols, frames) < 1:
        return None
    raw = ds.PixelData
    if not isinstance(raw, bytes) or len(raw) != rows * cols * frames * (bits // 8):
        return None
    return np.frombuffer(raw, dtype=dtype)


@quiet_pydicom
def read_stored_dvhs(path: str | os.PathLike[str]) -> tuple[StoredDVH, ...]:
    """The DVHs a planning system stored in an RT Dose (DVHSequence), decoded.

    Bin widths are multiplied by DVHDoseScaling; DVHData holds (bin width, volume) pairs.

    Raises
    ------
    InputError
        DVHData that is not a list of (width, volume) pairs.
    """
    spath = os.fspath(path)
    ds, _ = open_dataset(spath, stop_before_pixels=True)
    out = []
    for n, item in enumerate(ds.get("DVHSequence") or [], start=1):
        try:
            data = np.asarray([float(str(v)) for v in _multi(item.get("DVHData"))], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(
                spath, f"item {n}: expected numbers ({excerpt(str(exc))})", attribute="DVHData (3004,0058)"
            ) from None
        if not np.all(np.isfinite(data)):
            raise InputError(spath, f"item {n}: holds NaN or infinite values", attribute="DVHData (3004,0058)")
        if data.size % 2:
            raise InputError(
                spath, f"item {n}: {data.size} numbers are not (width, volume) pairs", attribute="DVHData (3004,0058)"
            )
        scaling = as_float(item.get("DVHDoseScaling"), spath, "DVHDoseScaling") or 1.0
        rois = tuple(
            as_int(r.get("ReferencedROINumber"), spath, "ReferencedROINumber") or 0
            for r in item.get("DVHReferencedROISequence") or []
        )
        out.append(
            StoredDVH(
                roi_numbers=rois,
                dvh_type=text(item, "DVHType").upper(),
                dose_units=text(item, "DoseUnits").upper(),
                volume_units=text(item, "DVHVolumeUnits").upper(),
                bin_widths_gy=data[0::2] * scaling,
                volumes=data[1::2],
                min_gy=as_float(item.get("DVHMinimumDose"), spath, "DVHMinimumDose"),
                mean_gy=as_float(item.get("DVHMeanDose"), spath, "DVHMeanDose"),
                max_gy=as_float(item.get("DVHMaximumDose"), spath, "DVHMaximumDose"),
            )
        )
    return tuple(out)


def _info(ds: Dataset, path: str) -> DoseInfo:
    if text(ds, "SOPClassUID") != RT_DOSE and text(ds, "Modality").upper() != "RTDOSE":
        raise UnsupportedObjectError(path, f"expected an RT Dose ({RT_DOSE})", attribute="SOPClassUID (0008,0016)")
    units = text(ds, "DoseUnits").upper()
    if units != "GY":
        raise DoseGridError(
            path,
            f"is {excerpt(units, quote=False) if units else 'absent'}; rtqa needs absolute dose in GY "
            "(RELATIVE dose cannot be graded)",
            attribute="DoseUnits (3004,0002)",
        )
    transform = text(ds, "SpatialTransformOfDose", "NONE").upper()
    if transform not in ("NONE", ""):
        raise DoseGridError(
            path,
            f"is {excerpt(transform, quote=False)}; rtqa reads only dose in the planning frame (NONE)",
            attribute="SpatialTransformOfDose (3004,0005)",
        )
    summation_text = text(ds, "DoseSummationType").upper()
    try:
        summation = DoseSummationType(summation_text)
    except ValueError:
        raise InputError(
            path,
            f"{excerpt(summation_text, quote=False) if summation_text else 'absent'} "
            "is not a defined term of PS3.3 C.8.8.3",
            attribute="DoseSummationType (3004,000A)",
        ) from None
    dose_type_text = text(ds, "DoseType").upper()
    try:
        dose_type = DoseType(dose_type_text)
    except ValueError:
        raise InputError(
            path,
            f"{excerpt(dose_type_text, quote=False) if dose_type_text else 'absent'}; "
            "expected PHYSICAL, EFFECTIVE or ERROR",
            attribute="DoseType (3004,0004)",
        ) from None

    hetero_values = tuple(str(v).upper() for v in _multi(ds.get("TissueHeterogeneityCorrection")))
    if not hetero_values:
        hetero = Heterogeneity.UNKNOWN
    elif set(hetero_values) == {"WATER"}:
        hetero = Heterogeneity.OFF
    else:
        hetero = Heterogeneity.ON

    plan_seq = ds.get("ReferencedRTPlanSequence") or []
    fraction_group = None
    beams: tuple[int, ...] = ()
    if plan_seq:
        fg_seq = plan_seq[0].get("ReferencedFractionGroupSequence") or []
        if fg_seq:
            fraction_group = as_int(
                fg_seq[0].get("ReferencedFractionGroupNumber"), path, "ReferencedFractionGroupNumber"
            )
            beams = tuple(
                as_int(b.get("ReferencedBeamNumber"), path, "ReferencedBeamNumber") or 0
                for b in fg_seq[0].get("ReferencedBeamSequence") or []
            )
    frames = as_int(ds.get("NumberOfFrames", 1), path, "NumberOfFrames") or 1
    grid = _grid(ds, path, frames)
    return DoseInfo(
        path=path,
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        patient_id=text(ds, "PatientID"),
        frame_of_reference_uid=text(ds, "FrameOfReferenceUID") or None,
        summation_type=summation,
        dose_type=dose_type,
        heterogeneity=hetero,
        heterogeneity_values=hetero_values,
        referenced_plan_uids=uid_list(plan_seq),
        referenced_fraction_group=fraction_group,
        referenced_beam_numbers=beams,
        x_mm=grid.x_mm,
        y_mm=grid.y_mm,
        z_mm=grid.z_mm,
        orientation=grid.orientation,
        has_dvh_sequence=bool(ds.get("DVHSequence")),
    )


def _multi(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)  # type: ignore[call-overload, no-any-return]
    return [value]


def _floats(ds: Dataset, keyword: str, path: str, n: int, expected: str) -> tuple[float, ...]:
    value = require(ds, keyword, path, expected)
    values = _multi(value)
    if n and len(values) != n:
        raise InputError(path, f"has {len(values)} values; expected {expected}", attribute=_attr(keyword))
    try:
        out = tuple(float(v) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"{excerpt(value)}; expected {expected}", attribute=_attr(keyword)) from None
    if not all(math.isfinite(v) for v in out):
        raise InputError(
            path, f"{excerpt(value)} holds NaN or infinite values; expected {expected}", attribute=_attr(keyword)
        )
    return out


def _attr(keyword: str) -> str:
    from rtqa.io.common import attr_name

    return attr_name(keyword)


def _grid(ds: Dataset, path: str, frames: int) -> CanonicalGrid:
    ipp = _floats(ds, "ImagePositionPatient", path, 3, "3 numbers (x, y, z of the first voxel)")
    iop = _floats(ds, "ImageOrientationPatient", path, 6, "6 direction cosines")
    spacing = _floats(ds, "PixelSpacing", path, 2, "2 numbers (row spacing, column spacing)")
    rows = as_int(require(ds, "Rows", path, "the number of rows"), path, "Rows") or 0
    cols = as_int(require(ds, "Columns", path, "the number of columns"), path, "Columns") or 0
    if frames > 1 or ds.get("GridFrameOffsetVector") is not None:
        offsets = np.asarray(
            _floats(ds, "GridFrameOffsetVector", path, frames, f"{frames} offsets (one per frame)"), dtype=np.float64
        )
    else:
        offsets = np.zeros(1)
    try:
        rel = relative_frame_offsets(offsets, position_z_mm=ipp[2], orientation=iop)
        return compute_canonical_grid(
            position_mm=(ipp[0], ipp[1], ipp[2]),
            orientation=iop,
            pixel_spacing_mm=(spacing[0], spacing[1]),
            frame_offsets_mm=rel,
            rows=rows,
            columns=cols,
        )
    except DoseGridError as exc:
        raise DoseGridError(path, str(exc), attribute=None) from exc
