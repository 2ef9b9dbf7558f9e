"""The protocol model: what a validated protocol file says, as frozen dataclasses.

:mod:`rtqa.protocol.validate` builds these from a protocol file's YAML and
:mod:`rtqa.protocol.loader` reads the file; everything else reads only these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rtqa.dvh.expression import EndCap
from rtqa.dvh.metrics import Metric
from rtqa.protocol.limits import Limit
from rtqa.protocol.names import name_key

KNOWN_FACTS = ("child_pugh", "dose_algorithm", "motion_management")
CHILD_PUGH = ("A5", "A6", "B7", "B8", "B9", "C10", "C11", "C12", "C13", "C14", "C15")
TECHNICAL_CHECKS = (
    "dose_grid_spacing",
    "target_coverage",
    "oar_coverage",
    "heterogeneity",
    "dose_type",
    "prescription_agreement",
    "beam_radiation",
    "beam_energy",
    "gtv_outside_ptv",
    "dose_algorithm",
    "approval_status",
)
GRADE_NAMES = ("per_protocol", "variation_acceptable", "deviation_unacceptable")


@dataclass(frozen=True)
class StructureSpec:
    name: str
    role: str  # target, oar, other
    aliases: tuple[str, ...]
    patterns: tuple[str, ...]
    required: bool
    many: bool
    line: int = 0
    tg263: tuple[str, ...] = ()  # the names of the protocol's TG-263 alias table among ``aliases``


@dataclass(frozen=True)
class DerivedSpec:
    name: str
    expression: str
    prefer_roi: bool  # use an ROI of this name when the plan has one (e.g. a combined Kidneys)
    line: int = 0
    # names of a site's own composite ROI (Liver_minus_GTV): used when the expression cannot be
    # built from its parts; when both exist the computed one is used and the two are compared
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitSet:
    """The limits a rule applies for one value of a clinical fact (``limits_by``)."""

    per_protocol: Limit
    variation: Limit | None
    source: str
    unconfirmed: bool


@dataclass(frozen=True)
class LowerDoseRing:
    """The transition ring of an integrated boost: a lower-dose target's hot spot is graded on
    the target minus the higher-dose targets grown by ``width_mm`` (the dose falls from the
    higher level across the ring; that part stays graded in the union against the highest)."""

    width_mm: float
    source: str
    unconfirmed: bool


@dataclass(frozen=True)
class AlphaBeta:
    """The α/β (Gy) a protocol uses for a tissue, with its source."""

    value_gy: float
    source: str
    unconfirmed: bool
    line: int = 0

    def describe(self) -> str:
        return f"α/β {self.value_gy:g} Gy{' †' if self.unconfirmed else ''} ({self.source})"


@dataclass(frozen=True)
class DoseMeasure:
    """A constraint stated in a radiobiological dose: ``measure`` "eqd2" or "bed", converted
    per voxel with ``alpha_beta`` (:mod:`rtqa.dvh.radiobiology`)."""

    measure: str
    alpha_beta: AlphaBeta


@dataclass(frozen=True)
class Rule:
    """One graded item: a DVH constraint, an eligibility check or a technical check.

    A rule may depend on clinical facts: ``when`` names the fact values it applies to, and
    ``limits_by`` gives its limits per value of one fact (the values listed are the ones it
    applies to). :meth:`facts` and :meth:`limits_for` are what the grading needs of both.
    """

    id: str
    kind: str  # fractionation, constraint, eligibility, technical
    source: str
    unconfirmed: bool
    per_protocol: Limit | None = None
    variation: Limit | None = None
    unit: str = ""
    structure: str | None = None
    metric: Metric | None = None
    reference: str | None = None  # own, highest, or a target structure name
    scope: str = "each"  # each ROI of a many-structure, or their union
    check: str | None = None  # technical check name, or the clinical fact of an eligibility rule
    allowed: tuple[str, ...] = ()
    when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unconfirmed_when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    within: str | None = None
    note: str = ""
    limits_by: Mapping[str, Mapping[str, LimitSet]] = field(default_factory=dict)
    grades_by: Mapping[str, str] = field(default_factory=dict)  # technical: found value -> grade name
    lower_dose_ring: LowerDoseRing | None = None  # constraint graded against the highest prescription
    line: int = 0
    dose: DoseMeasure | None = None  # limits stated in EQD2 or BED; None: physical dose

    def facts(self) -> dict[str, tuple[str, ...]]:
        """Each clinical fact the rule depends on, with the values the rule applies to."""
        out = {f: tuple(v) for f, v in self.when.items()}
        for fact, by_value in self.limits_by.items():
            out[fact] = tuple(by_value)
        return out

    def limits_for(self, facts: Mapping[str, str]) -> LimitSet:
        """The limits under the given fact values (the rule's own limits where none vary).

        Raises
        ------
        KeyError
            A fact of ``limits_by`` is not given, or its value has no limits.
        """
        for fact, by_value in self.limits_by.items():
            return by_value[facts[fact]]
        assert self.per_protocol is not None
        return LimitSet(self.per_protocol, self.variation, self.source, self.unconfirmed)


@dataclass(frozen=True)
class Protocol:
    id: str
    version: str
    title: str
    path: str
    sha256: str
    end_cap: EndCap
    structures: Mapping[str, StructureSpec]
    derived: Mapping[str, DerivedSpec]
    fractionation: tuple[Rule, ...]
    constraints: tuple[Rule, ...]
    eligibility: tuple[Rule, ...]
    technical: tuple[Rule, ...]
    # the α/β of each structure ("default": every other one), for EQD2 shown beside physical doses
    alpha_beta: Mapping[str, AlphaBeta] = field(default_factory=dict)

    def alpha_beta_for(self, structure: str | None) -> AlphaBeta | None:
        """The α/β the protocol states for a structure, else its default, else None."""
        if structure is not None and structure in self.alpha_beta:
            return self.alpha_beta[structure]
        return self.alpha_beta.get("default")

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.fractionation + self.technical + self.constraints

    def all_rules(self) -> tuple[Rule, ...]:
        return self.fractionation + self.technical + self.constraints + self.eligibility


def normalise_name(name: str) -> str:
    """The key names are compared by (:func:`rtqa.protocol.names.name_key`): ``"Spinal Cord"`` -> ``"spinalcord"``."""
    return name_key(name)
