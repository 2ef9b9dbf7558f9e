"""Read an RT Structure Set into :class:`rtqa.model.StructureSet`.

ContourData is split from the element's raw bytes with numpy instead of letting pydicom
build one DS object per number: on clinical structure sets (10-50 MB of decimal strings) that
is what dominates the end-to-end time of a check (DOMAIN.md section 7).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from rtqa.deadline import check_time
from rtqa.errors import InputError, UnsupportedObjectError
from rtqa.io.charset import declared_charsets, text_problem
from rtqa.io.common import RT_STRUCT, as_int, open_dataset, quiet_pydicom, text
from rtqa.model import ContourPlane, ContourType, FloatArray, Roi, StructureSet

_CONTOUR_DATA = 0x30060050
_ROI_NAME = 0x30060026
PLANE_TOLERANCE_MM = 0.05


@quiet_pydicom
def read_structure_set(path: str | os.PathLike[str]) -> StructureSet:
    """Read every ROI of an RT Structure Set, its closed contours grouped by axial plane.

    POINT and OPEN_* contours enclose no volume: they are counted in ``skipped_contours``.
    Data-quality problems (non-axial contours, point-count mismatches, duplicate names or
    numbers, ROIs without contours) become warnings, not errors.

    Raises
    ------
    UnsupportedObjectError
        The file is not an RT Structure Set.
    InputError
        ContourData that is not a list of numbers in (x, y, z) triplets.
    """
    spath = os.fspath(path)
    ds, _ = open_dataset(spath)
    if text(ds, "SOPClassUID") != RT_STRUCT and text(ds, "Modality").upper() != "RTSTRUCT":
        raise UnsupportedObjectError(
            spath, f"expected an RT Structure Set ({RT_STRUCT})", attribute="SOPClassUID (0008,0016)"
        )
    warnings: list[str] = []
    names: dict[int, tuple[str, str | None]] = {}
    name_problems: dict[int, str] = {}
    charsets = declared_charsets(ds.get("SpecificCharacterSet"))
    numbers_seen: Counter[int] = Counter()
    for item in ds.get("StructureSetROISequence") or []:
        number = as_int(item.get("ROINumber"), spath, "ROINumber")
        if number is None:
            warnings.append("an ROI of StructureSetROISequence has no ROINumber; skipped")
            continue
        numbers_seen[number] += 1
        raw = item.get_item(_ROI_NAME)  # the bytes as stored, before pydicom decodes them leniently
        name = text(item, "ROIName")
        stored = raw.value if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) else None
        name_problems[number] = text_problem(stored, name, charsets)
        names[number] = (name, text(item, "ReferencedFrameOfReferenceUID") or None)
    for number, count in numbers_seen.items():
        if count > 1:
            warnings.append(f"ROI number {number} appears {count} times in StructureSetROISequence")

    interpreted = {
        as_int(o.get("ReferencedROINumber"), spath, "ReferencedROINumber"): text(o, "RTROIInterpretedType")
        for o in ds.get("RTROIObservationsSequence") or []
    }
    # every item of ROIContourSequence is read: a second item for one ROI never replaces the first
    contours_by_roi: dict[int, list[tuple[int, Dataset]]] = defaultdict(list)
    for k, item in enumerate(ds.get("ROIContourSequence") or [], start=1):
        ref = as_int(item.get("ReferencedROINumber"), spath, "ReferencedROINumber")
        if ref is not None:
            contours_by_roi[ref].append((k, item))

    rois = []
    for number in sorted(names):
        name, frame = names[number]
        items, defects, notes = _contour_items(number, contours_by_roi.get(number, []))
        roi = _roi(number, name, interpreted.get(number, ""), items, spath)
        rois.append(
            replace(
                roi,
                defects=defects,
                frame_of_reference_uid=frame,
                warnings=notes + roi.warnings,
                name_problem=name_problems[number],
            )
        )
    for ref in sorted(set(contours_by_roi) - set(names)):
        warnings.append(f"ROIContourSequence refers to ROI number {ref}, which StructureSetROISequence lacks")

    name_counts = Counter(r.name for r in rois)
    for name, count in sorted(name_counts.items()):
        if count > 1:
            warnings.append(f"ROI name {name!r} is used by {count} ROIs")
    for roi in rois:
        warnings.extend(f"ROI {roi.name!r}: {w}" for w in roi.warnings)

    frames = tuple(
        uid for ref in ds.get("ReferencedFrameOfReferenceSequence") or [] if (uid := text(ref, "FrameOfReferenceUID"))
    )
    return StructureSet(
        path=spath,
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        patient_id=text(ds, "PatientID"),
        patient_name=text(ds, "PatientName"),
        label=text(ds, "StructureSetLabel"),
        frame_of_reference_uid=frames[0] if frames else None,
        rois=tuple(rois),
        warnings=tuple(warnings),
        frame_of_reference_uids=frames,
    )


def _contour_items(
    number: int, items: list[tuple[int, Dataset]]
) -> tuple[list[Dataset], tuple[str, ...], tuple[str, ...]]:
    """The ROIContourSequence items to read for one ROI, its defects and warnings.

    Several items for one ROI: when they hold the same contours (each ContourGeometricType and
    ContourData byte for byte, in order; a display colour may differ) the first is read and the
    copies are a warning. Otherwise every item is read and the ROI is defective: which outline is
    meant cannot be told, and no rule about it may be graded.
    """
    if len(items) < 2:
        return [item for _, item in items], (), ()
    listed = ", ".join(str(k) for k, _ in items[:-1]) + f" and {items[-1][0]}"
    first = _contour_signature(items[0][1])
    if all(_contour_signature(item) == first for _, item in items[1:]):
        note = f"ROIContourSequence items {listed} hold the same contours of ROI {number}: read once"
        return [items[0][1]], (), (note,)
    defect = (
        f"ROIContourSequence items {listed} each hold contours of ROI {number}, and they differ: "
        "rtqa cannot tell which outline is meant (it never keeps only one)"
    )
    return [item for _, item in items], (defect,), ()


def _contour_signature(item: Dataset) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for contour in item.get("ContourSequence") or []:
        elem = contour.get_item(_CONTOUR_DATA)
        data = None if elem is None else elem.value if isinstance(elem, RawDataElement) else tuple(elem.value)
        out.append((text(contour, "ContourGeometricType").upper(), data))
    return out


def _roi(number: int, name: str, interpreted: str, items: list[Dataset], path: str) -> Roi:
    warnings: list[str] = []
    color = None
    skipped: Counter[str] = Counter()
    by_plane: dict[float, list[FloatArray]] = defaultdict(list)
    xor_planes: set[float] = set()
    for item in items:
        raw_color = item.get("ROIDisplayColor")
        if color is None and raw_color is not None and len(raw_color) == 3:
            color = (int(raw_color[0]), int(raw_color[1]), int(raw_color[2]))
        non_axial = 0
        for contour in item.get("ContourSequence") or []:
            check_time()  # the plan's time budget, for threads that no timer signal reaches
            kind = text(contour, "ContourGeometricType").upper()
            if kind not in (ContourType.CLOSED_PLANAR.value, ContourType.CLOSEDPLANAR_XOR.value):
                skipped[kind or "untyped"] += 1
                continue
            points = _contour_points(contour, path, number)
            declared = contour.get("NumberOfContourPoints")
            if declared is not None and as_int(declared, path, "NumberOfContourPoints") != len(points):
                warnings.append(
                    f"NumberOfContourPoints (3006,0046) says {declared}, ContourData holds {len(points)} points"
                )
            if len(points) < 3:
                skipped["closed contour with fewer than 3 points"] += 1
                continue
            z = points[:, 2]
            if float(z.max() - z.min()) > PLANE_TOLERANCE_MM:
                non_axial += 1
                continue
            key = float(np.mean(z))
            by_plane[key].append(np.ascontiguousarray(points[:, :2]))
            if kind == ContourType.CLOSEDPLANAR_XOR.value:
                xor_planes.add(key)
        if non_axial:
            warnings.append(f"{non_axial} non-axial contour(s) skipped: rtqa needs contours on axial planes")
    planes = _group(by_plane, xor_planes)
    for kind, n in sorted(skipped.items()):
        warnings.append(f"{n} {kind} contour(s) skipped: they enclose no volume")
    if not planes:
        warnings.append("has no closed contours (empty ROI)")
    return Roi(
        number=number,
        name=name,
        interpreted_type=interpreted,
        color=color,
        planes=planes,
        skipped_contours=tuple(f"{n} {kind}" for kind, n in sorted(skipped.items())),
        warnings=tuple(warnings),
    )


def _contour_points(contour: Dataset, path: str, roi_number: int) -> FloatArray:
    elem = contour.get_item(_CONTOUR_DATA)
    if elem is None:
        raise InputError(path, f"a contour of ROI {roi_number} has no ContourData", attribute="ContourData (3006,0050)")
    try:
        if isinstance(elem, RawDataElement):
            raw = elem.value or b""
            values = np.array(raw.replace(b"\\", b" ").split(), dtype=np.float64)
        else:
            values = np.asarray(elem.value, dtype=np.float64)
    except ValueError as exc:
        raise InputError(
            path, f"ROI {roi_number}: expected decimal numbers ({str(exc)[:80]})", attribute="ContourData (3006,0050)"
        ) from exc
    if not np.all(np.isfinite(values)):
        raise InputError(
            path, f"ROI {roi_number}: a contour holds NaN or infinite coordinates", attribute="ContourData (3006,0050)"
        )
    if values.size % 3:
        raise InputError(
            path,
            f"ROI {roi_number}: {values.size} numbers is not a list of (x, y, z) triplets",
            attribute="ContourData (3006,0050)",
        )
    return values.reshape(-1, 3)


def _group(by_plane: dict[float, list[FloatArray]], xor_planes: set[float]) -> tuple[ContourPlane, ...]:
    """Merge planes whose z differs by less than the tolerance (decimal-string jitter)."""
    planes: list[ContourPlane] = []
    for z in sorted(by_plane):
        rings = by_plane[z]
        xor = z in xor_planes
        if planes and z - planes[-1].z_mm <= PLANE_TOLERANCE_MM:
            last = planes.pop()
            n_old, n_new = len(last.rings), len(rings)
            zm = (last.z_mm * n_old + z * n_new) / (n_old + n_new)
            planes.append(ContourPlane(z_mm=zm, rings=last.rings + tuple(rings), xor=last.xor or xor))
        else:
            planes.append(ContourPlane(z_mm=z, rings=tuple(rings), xor=xor))
    return tuple(planes)
