"""Domain objects: what rtqa knows about plans, structure sets and doses.

Frozen dataclasses with typed fields and units in the names. Nothing here knows about
pydicom: the reading layer (:mod:`rtqa.io`) builds these objects, everything after it
works on them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Modality(str, Enum):
    RTPLAN = "RTPLAN"
    RTSTRUCT = "RTSTRUCT"
    RTDOSE = "RTDOSE"
    RTIONPLAN = "RTIONPLAN"
    OTHER = "OTHER"


class DoseSummationType(str, Enum):
    """DoseSummationType (3004,000A), PS3.3 C.8.8.3."""

    PLAN = "PLAN"
    MULTI_PLAN = "MULTI_PLAN"
    FRACTION = "FRACTION"
    BEAM = "BEAM"
    BRACHY = "BRACHY"
    FRACTION_SESSION = "FRACTION_SESSION"
    BEAM_SESSION = "BEAM_SESSION"
    BRACHY_SESSION = "BRACHY_SESSION"
    CONTROL_POINT = "CONTROL_POINT"
    RECORD = "RECORD"


class DoseType(str, Enum):
    PHYSICAL = "PHYSICAL"
    EFFECTIVE = "EFFECTIVE"
    ERROR = "ERROR"


class Heterogeneity(str, Enum):
    """What TissueHeterogeneityCorrection (3004,0014) says about the calculation."""

    ON = "on"  # IMAGE and/or ROI_OVERRIDE present
    OFF = "off"  # WATER alone
    UNKNOWN = "unknown"  # attribute absent: the site must attest


class ContourType(str, Enum):
    CLOSED_PLANAR = "CLOSED_PLANAR"
    CLOSEDPLANAR_XOR = "CLOSEDPLANAR_XOR"
    POINT = "POINT"
    OPEN_PLANAR = "OPEN_PLANAR"
    OPEN_NONPLANAR = "OPEN_NONPLANAR"


# --------------------------------------------------------------------------------------------
# Discovery: what the header of one file says, read without pixel data or contours.


@dataclass(frozen=True)
class FileHeader:
    """The identity and links of one DICOM file, as discovery sees it."""

    path: str
    modality: Modality | str
    sop_class_uid: str
    sop_instance_uid: str
    patient_id: str
    frame_of_reference_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    institution_name: str | None = None
    headerless: bool = False
    # RT Plan
    referenced_structure_set_uid: str | None = None
    plan_intent: str | None = None
    plan_label: str | None = None
    # RT Plan (related plans) and RT Dose (the plan(s) it belongs to)
    referenced_plan_uids: tuple[str, ...] = ()
    referenced_plan_relationships: tuple[str, ...] = ()
    # RT Dose
    dose_summation_type: str | None = None
    referenced_fraction_group: int | None = None
    referenced_beam_numbers: tuple[int, ...] = ()
    # RT Structure Set: the image series its contours were drawn on
    referenced_series_uids: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# RT Plan


@dataclass(frozen=True)
class Beam:
    number: int
    name: str
    delivery_type: str  # TREATMENT, SETUP, ...
    beam_type: str  # STATIC, DYNAMIC
    radiation_type: str  # PHOTON, ELECTRON, ...
    nominal_energy_mev: float | None
    fluence_mode: str  # STANDARD, NON_STANDARD
    control_point_count: int
    mlc_modulated: bool  # leaf positions change across control points

    @property
    def is_treatment(self) -> bool:
        return self.delivery_type.upper() == "TREATMENT"


@dataclass(frozen=True)
class ReferencedBeam:
    beam_number: int
    beam_dose_gy: float | None  # per fraction, a point dose (Type 3)
    meterset_mu: float | None


@dataclass(frozen=True)
class FractionGroup:
    number: int
    fractions_planned: int | None
    beams: tuple[ReferencedBeam, ...]


@dataclass(frozen=True)
class DoseReference:
    number: int
    structure_type: str  # SITE, VOLUME, COORDINATES, POINT
    reference_type: str  # TARGET, ORGAN_AT_RISK
    description: str
    referenced_roi_number: int | None
    target_prescription_dose_gy: float | None


@dataclass(frozen=True)
class Plan:
    path: str
    sop_instance_uid: str
    patient_id: str
    patient_name: str
    label: str
    name: str
    date: dt.date | None
    approval_status: str
    intent: str
    frame_of_reference_uid: str | None
    referenced_structure_set_uid: str | None
    referenced_plan_uids: tuple[str, ...]
    fraction_groups: tuple[FractionGroup, ...]
    dose_references: tuple[DoseReference, ...]
    beams: tuple[Beam, ...]
    institution_name: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def is_verification(self) -> bool:
        return self.intent.upper() == "VERIFICATION"

    @property
    def treatment_beams(self) -> tuple[Beam, ...]:
        return tuple(b for b in self.beams if b.is_treatment)


# --------------------------------------------------------------------------------------------
# RT Structure Set


@dataclass(frozen=True, eq=False)
class ContourPlane:
    """The closed contours of one ROI on one axial plane.

    ``rings`` are (n, 2) arrays of (x, y) in mm. On one plane, contours combine by parity
    (even-odd): a ring inside another is a hole, whatever its winding.
    """

    z_mm: float
    rings: tuple[FloatArray, ...]
    xor: bool = False  # at least one ring was CLOSEDPLANAR_XOR


@dataclass(frozen=True, eq=False)
class Roi:
    number: int
    name: str
    interpreted_type: str
    color: tuple[int, int, int] | None
    planes: tuple[ContourPlane, ...]
    skipped_contours: tuple[str, ...] = ()  # e.g. "2 POINT", "1 OPEN_PLANAR"
    warnings: tuple[str, ...] = ()
    # what makes the contours untrustworthy, found while reading (conflicting ROIContourSequence
    # items): the ROI is present but unusable
    defects: tuple[str, ...] = ()
    frame_of_reference_uid: str | None = None  # StructureSetROISequence > ReferencedFrameOfReferenceUID
    name_problem: str = ""  # why ROIName did not decode cleanly under SpecificCharacterSet ("" if it did)

    @property
    def is_empty(self) -> bool:
        return not self.planes


@dataclass(frozen=True, eq=False)
class StructureSet:
    path: str
    sop_instance_uid: str
    patient_id: str
    patient_name: str
    label: str
    frame_of_reference_uid: str | None  # the first of ReferencedFrameOfReferenceSequence
    rois: tuple[Roi, ...]
    warnings: tuple[str, ...] = ()
    frame_of_reference_uids: tuple[str, ...] = ()  # every frame ReferencedFrameOfReferenceSequence lists

    def roi(self, name: str) -> Roi:
        """The ROI of that exact name; ``KeyError`` if there is none or several."""
        hits = [r for r in self.rois if r.name == name]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} ROIs named {name!r} in {self.path}")
        return hits[0]

    @property
    def plane_positions_mm(self) -> FloatArray:
        """Every contour plane of the structure set (the CT slice positions, in effect)."""
        zs = [p.z_mm for r in self.rois for p in r.planes]
        return group_planes(np.asarray(zs, dtype=np.float64))


def group_planes(z_mm: FloatArray, *, tolerance_mm: float = 0.05) -> FloatArray:
    """Sorted distinct plane positions, merging values closer than ``tolerance_mm``.

    Examples
    --------
    >>> group_planes(np.array([3.0, 0.0, 0.01, 2.98])).tolist()
    [0.005, 2.99]
    """
    if z_mm.size == 0:
        return np.empty(0)
    z = np.sort(z_mm)
    starts = np.concatenate([[True], np.diff(z) > tolerance_mm])
    group = np.cumsum(starts) - 1
    return np.bincount(group, weights=z) / np.bincount(group)


# --------------------------------------------------------------------------------------------
# RT Dose


@dataclass(frozen=True, eq=False)
class DoseInfo:
    """Everything about an RT Dose except its pixel data.

    The grid is canonical: ``x_mm``, ``y_mm``, ``z_mm`` strictly increasing patient
    coordinates, and the dose array of :class:`DoseGrid` indexed ``[z, y, x]``, whatever the
    patient orientation and frame-offset convention of the file.
    """

    path: str
    sop_instance_uid: str
    patient_id: str
    frame_of_reference_uid: str | None
    summation_type: DoseSummationType
    dose_type: DoseType
    heterogeneity: Heterogeneity
    heterogeneity_values: tuple[str, ...]
    referenced_plan_uids: tuple[str, ...]
    referenced_fraction_group: int | None
    referenced_beam_numbers: tuple[int, ...]
    x_mm: FloatArray
    y_mm: FloatArray
    z_mm: FloatArray
    orientation: str  # e.g. "HFS-like axial (row +x, column +y)"
    has_dvh_sequence: bool = False

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Grid spacing (x, y, z); z is the median for non-uniform frame offsets."""
        dz = float(np.median(np.diff(self.z_mm))) if self.z_mm.size > 1 else 0.0
        return (_step(self.x_mm), _step(self.y_mm), dz)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z_mm.size, self.y_mm.size, self.x_mm.size)


def _step(a: FloatArray) -> float:
    return float(a[1] - a[0]) if a.size > 1 else 0.0


@dataclass(frozen=True, eq=False)
class DoseGrid:
    """A dose distribution in Gy on a canonical rectilinear grid (see :class:`DoseInfo`)."""

    dose_gy: FloatArray  # shape (nz, ny, nx)
    x_mm: FloatArray
    y_mm: FloatArray
    z_mm: FloatArray
    info: DoseInfo | None = field(default=None)

    def __post_init__(self) -> None:
        expected = (self.z_mm.size, self.y_mm.size, self.x_mm.size)
        if self.dose_gy.shape != expected:
            raise ValueError(f"dose array shape {self.dose_gy.shape} != axes {expected}")
        for name, axis in (("x", self.x_mm), ("y", self.y_mm), ("z", self.z_mm)):
            if axis.size > 1 and not np.all(np.diff(axis) > 0):
                raise ValueError(f"{name} axis must be strictly increasing")

    @property
    def max_gy(self) -> float:
        return float(self.dose_gy.max()) if self.dose_gy.size else 0.0


@dataclass(frozen=True, eq=False)
class StoredDVH:
    """One item of an RT Dose's DVHSequence, decoded (doses in Gy, as stored otherwise)."""

    roi_numbers: tuple[int, ...]
    dvh_type: str  # CUMULATIVE, DIFFERENTIAL, NATURAL
    dose_units: str  # GY or RELATIVE
    volume_units: str  # CM3, PERCENT, PER_U
    bin_widths_gy: FloatArray
    volumes: FloatArray
    min_gy: float | None
    mean_gy: float | None
    max_gy: float | None


# --------------------------------------------------------------------------------------------
# CT (the background of the report's images; never graded)


@dataclass(frozen=True, eq=False)
class CtVolume:
    """A CT series in Hounsfield units on a canonical grid (``hu[z, y, x]``, axes increasing)."""

    hu: FloatArray
    x_mm: FloatArray
    y_mm: FloatArray
    z_mm: FloatArray
    paths: tuple[str, ...] = ()
