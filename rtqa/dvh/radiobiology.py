"""Linear-quadratic equivalent doses per voxel: EQD2 and BED. Pure numpy.

For a voxel receiving a total dose D in n fractions (d = D/n per fraction) and a tissue's α/β:

    BED  = D · (1 + d / (α/β))
    EQD2 = D · (d + α/β) / (2 Gy + α/β)  = BED / (1 + 2 Gy / (α/β))

The conversion is applied to every voxel of a dose grid before any DVH is built: the EQD2 of a
mean dose is not the mean EQD2 (the transform is convex). A course is converted plan by plan,
each with its own number of fractions, and the equivalent doses are summed on the common grid
of :func:`rtqa.dvh.grid.compute_common_grid`; physical doses delivered at different doses per
fraction are never added first.

One dose grid delivered by several fraction groups (or plans) whose split per voxel is not known
(one PLAN dose of a plan with two fraction groups, one MULTI_PLAN dose of a course) has no single
d per voxel. Its equivalent dose is then bounded, not guessed: with fraction counts n_1 … n_k and
the voxel's dose D = Σ n_i d_i, the quadratic term Σ n_i d_i² is smallest when every group gives
the same dose per fraction (d_i = D / Σ n_i) and largest when all of D comes from the group with
the fewest fractions (d = D / min n_i). The two ends are two grids, and a metric is graded over
the interval they give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from rtqa.dvh.grid import compute_common_grid, sum_on_grid
from rtqa.model import DoseGrid, FloatArray

REFERENCE_FRACTION_GY = 2.0  # the "2" of EQD2


class Measure(str, Enum):
    """The dose a value is stated in."""

    EQD2 = "eqd2"
    BED = "bed"

    @property
    def label(self) -> str:
        return "EQD2" if self is Measure.EQD2 else "BED"


def bed_gy(dose_gy: FloatArray | float, *, fractions: int, alpha_beta_gy: float) -> FloatArray:
    """The biologically effective dose of ``dose_gy`` delivered in ``fractions`` equal fractions.

    Examples
    --------
    >>> float(bed_gy(60.0, fractions=30, alpha_beta_gy=10.0))
    72.0
    """
    _require(fractions, alpha_beta_gy)
    d = np.asarray(dose_gy, dtype=np.float64)
    if math.isinf(alpha_beta_gy):
        return d.copy()
    return d * (1.0 + d / fractions / alpha_beta_gy)


def eqd2_gy(dose_gy: FloatArray | float, *, fractions: int, alpha_beta_gy: float) -> FloatArray:
    """The equivalent dose in 2 Gy fractions of ``dose_gy`` delivered in ``fractions`` fractions.

    An infinite α/β (no fractionation effect) gives the physical dose.

    Examples
    --------
    >>> float(eqd2_gy(45.0, fractions=15, alpha_beta_gy=3.0))
    54.0
    >>> float(eqd2_gy(50.0, fractions=25, alpha_beta_gy=3.0))
    50.0
    """
    _require(fractions, alpha_beta_gy)
    d = np.asarray(dose_gy, dtype=np.float64)
    if math.isinf(alpha_beta_gy):
        return d.copy()
    return d * (d / fractions + alpha_beta_gy) / (REFERENCE_FRACTION_GY + alpha_beta_gy)


def convert(dose_gy: FloatArray | float, *, measure: Measure, fractions: int, alpha_beta_gy: float) -> FloatArray:
    """:func:`eqd2_gy` or :func:`bed_gy`."""
    f = eqd2_gy if measure is Measure.EQD2 else bed_gy
    return f(dose_gy, fractions=fractions, alpha_beta_gy=alpha_beta_gy)


def _require(fractions: int, alpha_beta_gy: float) -> None:
    if isinstance(fractions, bool) or not isinstance(fractions, (int, np.integer)) or fractions < 1:
        raise ValueError(f"number of fractions {fractions!r}: expected a whole number of at least 1")
    if not (alpha_beta_gy > 0) or math.isnan(alpha_beta_gy):
        raise ValueError(f"alpha/beta {alpha_beta_gy!r} Gy: expected a positive number")


@dataclass(frozen=True)
class DosePart:
    """A dose grid and the fraction counts of what delivered it: one count for a plan of one
    fraction group; several when the grid is the sum of fraction groups (or plans) whose split
    per voxel is unknown."""

    label: str
    dose: DoseGrid
    fractions: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class EquivalentDose:
    """The equivalent dose of a case per voxel: ``low`` and ``high`` are the same grid when each
    voxel's dose per fraction is known, else the two ends of the bound (module docstring)."""

    measure: Measure
    alpha_beta_gy: float
    low: DoseGrid
    high: DoseGrid
    statement: str  # for the report: how each part was converted and how they were summed

    @property
    def exact(self) -> bool:
        return self.low is self.high


def compute_equivalent_dose(parts: Sequence[DosePart], *, measure: Measure, alpha_beta_gy: float) -> EquivalentDose:
    """Convert each part voxel by voxel with its own fractions, then sum the parts.

    Parameters
    ----------
    parts
        The doses of a case: one per plan of a course (each with its own dose), or one grid
        for the whole case.
    measure
        EQD2 or BED.
    alpha_beta_gy
        The tissue's α/β in Gy (``math.inf`` gives the physical dose).

    Raises
    ------
    ValueError
        No part, a part without fractions, a count below 1 or an α/β that is not positive.

    Examples
    --------
    >>> g = DoseGrid(np.full((1, 2, 2), 45.0), np.array([0., 1.]), np.array([0., 1.]), np.array([0.]))
    >>> e = compute_equivalent_dose([DosePart("plan", g, (15,))], measure=Measure.EQD2, alpha_beta_gy=3.0)
    >>> e.exact, float(e.low.dose_gy.max())
    (True, 54.0)
    """
    if not parts:
        raise ValueError("no dose to convert")
    lows: list[DoseGrid] = []
    highs: list[DoseGrid] = []
    said: list[str] = []
    bounded = False
    for part in parts:
        if not part.fractions:
            raise ValueError(f"{part.label}: no number of fractions")
        total = sum(part.fractions)
        fewest = min(part.fractions)
        low = _converted(part.dose, measure, total, alpha_beta_gy)
        if len(part.fractions) == 1:
            lows.append(low)
            highs.append(low)
            said.append(f"{part.label}: {total} fractions")
            continue
        bounded = True
        high = _converted(part.dose, measure, fewest, alpha_beta_gy)
        lows.append(low)
        highs.append(high)
        counts = " + ".join(str(n) for n in part.fractions)
        said.append(
            f"{part.label}: one dose for {len(part.fractions)} parts of {counts} fractions whose split per voxel "
            f"is unknown: between n = {total} (the same dose per fraction in every part) and n = {fewest} "
            f"(all of a voxel's dose from the part of {fewest} fractions)"
        )
    how = "per voxel, d = D/n; " + "; ".join(said)
    if len(parts) == 1:
        return EquivalentDose(measure, alpha_beta_gy, lows[0], highs[0] if bounded else lows[0], how)
    grid = compute_common_grid(lows, names=[p.label for p in parts])
    low_sum = sum_on_grid(lows, grid)
    high_sum = sum_on_grid(highs, grid) if bounded else low_sum
    how += f"; each plan converted with its own fractions, then the {measure.label}s summed ({grid.statement})"
    return EquivalentDose(measure, alpha_beta_gy, low_sum, high_sum, how)


def _converted(dose: DoseGrid, measure: Measure, fractions: int, alpha_beta_gy: float) -> DoseGrid:
    values = convert(dose.dose_gy, measure=measure, fractions=fractions, alpha_beta_gy=alpha_beta_gy)
    return DoseGrid(values, dose.x_mm, dose.y_mm, dose.z_mm, info=dose.info)
