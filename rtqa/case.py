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
class Prescription:
    """The prescription used to grade a plan, and where it came from."""

    total_gy: float | None
    fractions: int | None
    source: PrescriptionSource | None
    targets: tuple[TargetPrescription, ...] = ()
    candidates: tuple[tuple[PrescriptionSource, float], ...] = ()
    warnings: tuple[str, ...] = ()

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
