"""Header-only reads for discovery: identity and links of a file, no pixels, no contours."""

from __future__ import annotations

import os

from pydicom.dataset import Dataset

from rtqa.errors import InputError
from rtqa.io.common import (
    RT_DOSE,
    RT_ION_PLAN,
    RT_PLAN,
    RT_STRUCT,
    as_int,
    open_dataset,
    quiet_pydicom,
    text,
    uid_list,
)
from rtqa.model import FileHeader, Modality

_HEADER_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "InstitutionName",
    "RTPlanLabel",
    "PlanIntent",
    "ReferencedStructureSetSequence",
    "ReferencedRTPlanSequence",
    "ReferencedFrameOfReferenceSequence",
    "DoseSummationType",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
]


@quiet_pydicom
def read_header(path: str | os.PathLike[str]) -> FileHeader:
    """Read what discovery needs from one file, without pixel data or contour data.

    Raises
    ------
    NotDicomError
        The file is not DICOM even under a forced read.
    InputError
        The file is DICOM but unreadable, lacks its identity, or is a truncated RT Dose.
    """
    spath = os.fspath(path)
    ds, headerless = open_dataset(spath, stop_before_pixels=True, specific_tags=_tags())
    try:
        return _header(ds, spath, headerless)
    except InputError:
        raise
    except Exception as exc:  # a malformed element deep in a sequence
        raise InputError(spath, f"header cannot be decoded ({type(exc).__name__}: {exc})") from exc


def _tags() -> list[int]:
    from pydicom.datadict import tag_for_keyword

    return [t for t in (tag_for_keyword(k) for k in _HEADER_TAGS) if t is not None]


def _header(ds: Dataset, path: str, headerless: bool) -> FileHeader:
    sop_class = text(ds, "SOPClassUID")
    modality_text = text(ds, "Modality").upper()
    sop_uid = text(ds, "SOPInstanceUID")
    if not sop_uid:
        raise InputError(path, "missing; every DICOM object needs one", attribute="SOPInstanceUID (0008,0018)")
    modality: Modality | str
    if sop_class == RT_ION_PLAN or modality_text == "RTIONPLAN":
        modality = Modality.RTIONPLAN
    elif sop_class == RT_PLAN or modality_text == "RTPLAN":
        modality = Modality.RTPLAN
    elif sop_class == RT_STRUCT or modality_text == "RTSTRUCT":
        modality = Modality.RTSTRUCT
    elif sop_class == RT_DOSE or modality_text == "RTDOSE":
        modality = Modality.RTDOSE
    else:
        modality = modality_text or "UNKNOWN"

    frame_of_reference = text(ds, "FrameOfReferenceUID") or None
    if modality == Modality.RTSTRUCT and frame_of_reference is None:
        refs = ds.get("ReferencedFrameOfReferenceSequence") or []
        uids = [text(r, "FrameOfReferenceUID") for r in refs if text(r, "FrameOfReferenceUID")]
        frame_of_reference = uids[0] if uids else None

    referenced_series: tuple[str, ...] = ()
    if modality == Modality.RTSTRUCT:
        # the image series the contours were drawn on (ReferencedFrameOfReferenceSequence >
        # RTReferencedStudySequence > RTReferencedSeriesSequence), used to find its CT
        referenced_series = tuple(
            text(series, "SeriesInstanceUID")
            for fr in ds.get("ReferencedFrameOfReferenceSequence") or []
            for study in fr.get("RTReferencedStudySequence") or []
            for series in study.get("RTReferencedSeriesSequence") or []
            if text(series, "SeriesInstanceUID")
        )

    ref_plans: tuple[str, ...] = ()
    relationships: tuple[str, ...] = ()
    fraction_group: int | None = None
    beams: tuple[int, ...] = ()
    plan_seq = ds.get("ReferencedRTPlanSequence") or []
    if plan_seq:
        ref_plans = uid_list(plan_seq)
        relationships = tuple(text(item, "RTPlanRelationship") for item in plan_seq)
        if modality == Modality.RTDOSE:
            fg_seq = plan_seq[0].get("ReferencedFractionGroupSequence") or []
            if fg_seq:
                fraction_group = as_int(
                    fg_seq[0].get("ReferencedFractionGroupNumber"), path, "ReferencedFractionGroupNumber"
                )
                beam_seq = fg_seq[0].get("ReferencedBeamSequence") or []
                beams = tuple(
                    n
                    for n in (as_int(b.get("ReferencedBeamNumber"), path, "ReferencedBeamNumber") for b in beam_seq)
                    if n is not None
                )

    ss_seq = ds.get("ReferencedStructureSetSequence") or []
    ref_ss = uid_list(ss_seq)

    if modality == Modality.RTDOSE:
        _require_complete_pixels(ds, path)

    return FileHeader(
        path=path,
        modality=modality,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_uid,
        patient_id=text(ds, "PatientID"),
        frame_of_reference_uid=frame_of_reference,
        study_instance_uid=text(ds, "StudyInstanceUID") or None,
        series_instance_uid=text(ds, "SeriesInstanceUID") or None,
        referenced_series_uids=referenced_series,
        institution_name=text(ds, "InstitutionName") or None,
        headerless=headerless,
        referenced_structure_set_uid=ref_ss[0] if ref_ss else None,
        plan_intent=text(ds, "PlanIntent") or None,
        plan_label=text(ds, "RTPlanLabel") or None,
        referenced_plan_uids=ref_plans,
        referenced_plan_relationships=relationships,
        dose_summation_type=text(ds, "DoseSummationType").upper() or None,
        referenced_fraction_group=fraction_group,
        referenced_beam_numbers=beams,
    )


def _require_complete_pixels(ds: Dataset, path: str) -> None:
    """Catch a truncated RT Dose from the file size, without reading its pixel data."""
    rows, cols = ds.get("Rows"), ds.get("Columns")
    bits = ds.get("BitsAllocated")
    if not rows or not cols or not bits:
        return  # an RT Dose without a grid (DVH-only); reading it later says so
    frames = as_int(ds.get("NumberOfFrames", 1), path, "NumberOfFrames") or 1
    needed = int(rows) * int(cols) * frames * int(bits) // 8
    size = os.path.getsize(path)
    if size < needed:
        raise InputError(
            path,
            f"file is truncated: {rows}x{cols}x{frames} pixels of {bits} bits need {needed} bytes, "
            f"the whole file has {size}",
            attribute="PixelData (7FE0,0010)",
        )
