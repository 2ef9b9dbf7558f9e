"""Read an RT Plan into :class:`rtqa.model.Plan`."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from rtqa.deadline import check_time
from rtqa.errors import InputError, UnsupportedObjectError
from rtqa.io.common import (
    RT_ION_PLAN,
    RT_PLAN,
    as_float,
    as_int,
    open_dataset,
    quiet_pydicom,
    require,
    text,
    uid_list,
)
from rtqa.model import Beam, DoseReference, FloatArray, FractionGroup, Plan, ReferencedBeam


@quiet_pydicom
def read_plan(path: str | os.PathLike[str]) -> Plan:
    """Read an RT Plan (photon or electron; RT Ion plans are refused by name).

    Raises
    ------
    UnsupportedObjectError
        The file is an RT Ion Plan, or not a plan at all.
    InputError
        A required attribute is missing or malformed (NaN, infinite, a negative prescription
        or number of fractions included); the message names it.
    """
    spath = os.fspath(path)
    ds, _ = open_dataset(spath)
    sop_class = text(ds, "SOPClassUID")
    if sop_class == RT_ION_PLAN or text(ds, "Modality").upper() == "RTIONPLAN":
        raise UnsupportedObjectError(
            spath, "is an RT Ion Plan; rtqa checks photon plans (RT Plan) only", attribute="SOPClassUID (0008,0016)"
        )
    if sop_class != RT_PLAN and text(ds, "Modality").upper() != "RTPLAN":
        raise UnsupportedObjectError(
            spath, f"expected an RT Plan ({RT_PLAN}), found {sop_class or 'none'}", attribute="SOPClassUID (0008,0016)"
        )
    warnings: list[str] = []
    fraction_groups = tuple(_fraction_group(fg, spath) for fg in ds.get("FractionGroupSequence") or [])
    if not fraction_groups:
        warnings.append("FractionGroupSequence (300A,0070) is absent: number of fractions unknown")
    ref_plans = ds.get("ReferencedRTPlanSequence") or []
    return Plan(
        path=spath,
        sop_instance_uid=str(require(ds, "SOPInstanceUID", spath, "a UID")),
        patient_id=text(ds, "PatientID"),
        patient_name=text(ds, "PatientName"),
        label=text(ds, "RTPlanLabel"),
        name=text(ds, "RTPlanName"),
        date=_date(text(ds, "RTPlanDate")),
        approval_status=text(ds, "ApprovalStatus").upper(),  # "" when absent: never a default that grades
        intent=text(ds, "PlanIntent").upper(),
        frame_of_reference_uid=text(ds, "FrameOfReferenceUID") or None,
        referenced_structure_set_uid=next(iter(uid_list(ds.get("ReferencedStructureSetSequence"))), None),
        referenced_plan_uids=uid_list(ref_plans),
        fraction_groups=fraction_groups,
        dose_references=tuple(_dose_reference(d, spath) for d in ds.get("DoseReferenceSequence") or []),
        beams=tuple(_beam(b, spath) for b in ds.get("BeamSequence") or []),
        institution_name=text(ds, "InstitutionName"),
        warnings=tuple(warnings),
    )


def _date(value: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _fraction_group(fg: Dataset, path: str) -> FractionGroup:
    beams = tuple(
        ReferencedBeam(
            beam_number=as_int(rb.get("ReferencedBeamNumber"), path, "ReferencedBeamNumber") or 0,
            beam_dose_gy=as_float(rb.get("BeamDose"), path, "BeamDose"),
            meterset_mu=as_float(rb.get("BeamMeterset"), path, "BeamMeterset"),
        )
        for rb in fg.get("ReferencedBeamSequence") or []
    )
    # NumberOfFractionsPlanned is IS; some systems export "25.0" or " 25": as_int copes
    fractions = as_int(fg.get("NumberOfFractionsPlanned"), path, "NumberOfFractionsPlanned")
    if fractions is not None and fractions < 0:
        raise InputError(
            path, f"{fractions}; expected a number of fractions >= 0", attribute="NumberOfFractionsPlanned (300A,0078)"
        )
    return FractionGroup(
        number=as_int(fg.get("FractionGroupNumber"), path, "FractionGroupNumber") or 1,
        fractions_planned=fractions,
        beams=beams,
    )


def _dose_reference(d: Dataset, path: str) -> DoseReference:
    prescribed = as_float(d.get("TargetPrescriptionDose"), path, "TargetPrescriptionDose")
    if prescribed is not None and prescribed < 0:
        raise InputError(
            path,
            f"{prescribed:g} Gy; a prescription dose is never negative",
            attribute="TargetPrescriptionDose (300A,0026)",
        )
    return DoseReference(
        number=as_int(d.get("DoseReferenceNumber"), path, "DoseReferenceNumber") or 0,
        structure_type=text(d, "DoseReferenceStructureType").upper(),
        reference_type=text(d, "DoseReferenceType").upper(),
        description=text(d, "DoseReferenceDescription"),
        referenced_roi_number=as_int(d.get("ReferencedROINumber"), path, "ReferencedROINumber"),
        target_prescription_dose_gy=prescribed,
    )


def _beam(b: Dataset, path: str) -> Beam:
    cps = b.get("ControlPointSequence") or []
    energy = None
    if cps:
        energy = as_float(cps[0].get("NominalBeamEnergy"), path, "NominalBeamEnergy")
    return Beam(
        number=as_int(b.get("BeamNumber"), path, "BeamNumber") or 0,
        name=text(b, "BeamName") or text(b, "BeamDescription"),
        delivery_type=text(b, "TreatmentDeliveryType", "TREATMENT").upper(),
        beam_type=text(b, "BeamType").upper(),
        radiation_type=text(b, "RadiationType").upper(),
        nominal_energy_mev=energy,
        fluence_mode=_fluence_mode(b),
        control_point_count=len(cps),
        mlc_modulated=_mlc_modulated(cps),
    )


def _fluence_mode(b: Dataset) -> str:
    seq = b.get("PrimaryFluenceModeSequence") or []
    return text(seq[0], "FluenceMode", "STANDARD").upper() if seq else "STANDARD"


def _mlc_modulated(control_points: list[Dataset]) -> bool:
    """True when MLC leaf positions differ between control points (step-and-shoot or dynamic).

    Control points carry only the devices that change (PS3.3 C.8.8.14.5), so a device missing
    from a later control point keeps its earlier positions. Each control point is compared with
    the first as it is read, its LeafJawPositions split from the raw bytes with numpy: a plan of
    40,000 control points never holds a Python number per leaf, nor every control point's
    positions at once.
    """
    first: FloatArray | None = None
    for cp in control_points:
        check_time()  # the plan's time budget, for threads that no timer signal reaches
        for dev in cp.get("BeamLimitingDevicePositionSequence") or []:
            if "MLC" not in text(dev, "RTBeamLimitingDeviceType").upper():
                continue
            positions = _leaf_positions(dev)
            if first is None:
                first = positions
            elif positions.shape != first.shape or not np.allclose(positions, first, atol=0.01):
                return True
    return False


_LEAF_JAW_POSITIONS = 0x300A011C


def _leaf_positions(dev: Dataset) -> FloatArray:
    """LeafJawPositions as floats, from the raw bytes when pydicom has not decoded them yet."""
    elem = dev.get_item(_LEAF_JAW_POSITIONS)
    if elem is None:
        return np.zeros(0)
    if isinstance(elem, RawDataElement):
        return np.array((elem.value or b"").replace(b"\\", b" ").split(), dtype=np.float64)
    return np.asarray(elem.value, dtype=np.float64)
