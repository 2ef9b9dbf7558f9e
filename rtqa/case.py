"""The units of work: plan sets found by discovery, plan sets loaded from disk, the dose chosen
for a plan and its prescription. Pure data: the domain types every layer above the reading
layer shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from rtqa.model import DoseGrid, DoseInfo, FileHeader, Plan, StoredDVH, StructureSet


@dataclass(frozen=True)
class DoseChoice:
    """The dose files to add up, each with its weight, and how they were chosen."""

    parts: tuple[tuple[DoseInfo, float], ...]
    source: str  # e.g. "PLAN", "BEAM sum (7 files)", "MULTI_PLAN"
    crosscheck: tuple[DoseInfo, ...] = ()  # BEAM doses to compare with a PLAN dose
    warnings: tuple[str, ...] = ()
    per_plan: tuple[tuple[str, DoseChoice], ...] = ()  # a course summed from its plans: each plan's own choice


class PrescriptionSource(str, Enum):
    CLINICAL = "clinical"
    DOSE_REFERENCE = "dose_reference"
    BEAM_DOSES = "beam_doses"


@dataclass(frozen=True)
class TargetPrescription:
    name: str  # ROI name, dose-reference description, or the target of the case-report form
    total_gy: float
    roi_number: int | None = None


@dataclass(frozen=True)
class GroupPrescription:
    """One fraction group of a plan: its fractions and the per-fraction sum of its BeamDose values
    (a point dose, ``None`` when a beam of the group has none)."""

    number: int
    fractions: int | None
    per_fraction_gy: float | None

    @property
    def total_gy(self) -> float | None:
        if self.per_fraction_gy is None or self.fractions is None:
            return None
        return self.per_fraction_gy * self.fractions

    def describe(self) -> str:
        fx = "?" if self.fractions is None else str(self.fractions)
        per = "?" if self.per_fraction_gy is None else f"{self.per_fraction_gy:.2f} Gy"
        total = "" if self.total_gy is None else f" = {self.total_gy:.2f} Gy"
        return f"fraction group {self.number}: {fx} x {per}{total}"


@dataclass(frozen=True)
class Prescription:
    """The prescription used to grade a plan, and where it came from.

    ``fractions`` is the number of fractions over every fraction group of the plan; ``groups``
    holds each group (one entry for a plan with one fraction group).
    """

    total_gy: float | None
    fractions: int | None
    source: PrescriptionSource | None
    targets: tuple[TargetPrescription, ...] = ()
    candidates: tuple[tuple[PrescriptionSource, float], ...] = ()
    warnings: tuple[str, ...] = ()
    groups: tuple[GroupPrescription, ...] = ()
    # sources whose value is no treatment (outside 0.01-100 Gy, or infinite): not candidates,
    # but never taken as agreeing either
    absurd: tuple[tuple[PrescriptionSource, float], ...] = ()

    @property
    def per_fraction_gy(self) -> float | None:
        if self.total_gy is None or not self.fractions:
            return None
        return self.total_gy / self.fractions


@dataclass(frozen=True)
class UnassignedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class Course:
    """A treatment course: every treatment plan of one patient (institution + PatientID) in one
    frame of reference, verification plans aside. Formed in discovery.

    The plans are joined by a plan reference (ReferencedRTPlanSequence), by a MULTI_PLAN dose
    that names them, or by nothing but the same patient and frame (an unlinked boost): the
    course's dose constraints are graded on its composite dose whatever joined it. ``links``
    says, for the report, how each join was made.
    """

    institution: str
    patient_id: str
    frame_of_reference_uid: str | None
    plan_uids: tuple[str, ...]
    links: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """What names the case in the ledger: the same PatientID at two centres is two cases."""
        return (self.institution, self.patient_id)


@dataclass(frozen=True)
class PlanDose:
    """One plan of a loaded course with its own dose and fractions, kept beside the composite
    (a per-plan transform such as EQD2 is applied before a course's sum, never after).

    ``dose`` is ``None`` when the course's dose is a MULTI_PLAN sum and the plan has none of
    its own."""

    plan_uid: str
    label: str
    fractions: int | None
    dose: DoseGrid | None
    dose_source: str | None


@dataclass(frozen=True)
class PlanSet:
    """The files of one case: its plan(s), structure set and dose files.

    ``plans`` has several entries for a composite (a sequential boost). A structure-set-only
    case (no plan yet: eligibility before planning) has no plans and no doses.
    """

    patient_id: str
    plans: tuple[FileHeader, ...]
    structure_set: FileHeader | None
    doses: tuple[FileHeader, ...]
    inferred_links: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    ct_images: tuple[FileHeader, ...] = ()  # the CT series of the structure set (report images only)
    course: Course | None = None  # the course its plans form (None for a structure set alone)

    @property
    def label(self) -> str:
        if self.plans:
            return " + ".join(p.plan_label or p.sop_instance_uid for p in self.plans)
        return "structure set only"

    @property
    def is_composite(self) -> bool:
        return len(self.plans) > 1

    @property
    def files(self) -> tuple[str, ...]:
        ss = (self.structure_set.path,) if self.structure_set else ()
        return tuple(p.path for p in self.plans) + ss + tuple(d.path for d in self.doses)


@dataclass(frozen=True)
class Discovery:
    plan_sets: tuple[PlanSet, ...]
    unassigned: tuple[UnassignedFile, ...]
    ignored: dict[str, int] = field(default_factory=dict)  # modality (or "not DICOM") -> count
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason): FIFOs, devices, links in a loop...


@dataclass(frozen=True, eq=False)
class LoadedCase:
    """A plan set read from disk: what evaluation needs, with the checksum of every input."""

    plan_set: PlanSet
    plans: tuple[Plan, ...]
    structure_set: StructureSet | None
    dose: DoseGrid | None
    dose_choice: DoseChoice | None
    prescriptions: tuple[Prescription, ...]
    warnings: tuple[str, ...]
    sha256: dict[str, str] = field(default_factory=dict)  # path -> checksum of the file as read
    stored_dvhs: tuple[StoredDVH, ...] = ()  # the DVHs the planning system stored in the RT Dose
    plan_doses: tuple[PlanDose, ...] = ()  # each plan of a course with its own dose (one entry per plan)
    composite: str | None = None  # how a course's composite dose was formed (grids, resampling)
