"""Compare the DVHs a planning system stored in the RT Dose with rtqa's. Pure.

Differences become warnings, never grades: the stored DVH is the planning system's opinion,
computed with its own end-cap and sampling conventions. Its volumes also tell which end-cap
convention the planning system seems to use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtqa.dvh.engine import DVH
from rtqa.dvh.geometry import EndCap
from rtqa.model import FloatArray, StoredDVH

VOLUME_LIMIT = 0.02
MEAN_LIMIT = 0.01


@dataclass(frozen=True)
class DecodedDVH:
    """A stored DVH as a cumulative curve in Gy and its statistics."""

    dose_gy: FloatArray  # lower edge of each bin
    volume_ge: FloatArray  # volume receiving at least dose_gy, in the stored units
    volume: float
    mean_gy: float | None
    stated_mean_gy: float | None
    problems: tuple[str, ...]

    def dose_at_fraction(self, fraction: float) -> float | None:
        target = fraction * self.volume
        above = np.flatnonzero(self.volume_ge >= target)
        if above.size == 0:
            return None
        j = int(above[-1])
        if j + 1 >= self.dose_gy.size:
            return float(self.dose_gy[j])
        v0, v1 = self.volume_ge[j], self.volume_ge[j + 1]
        f = 0.0 if v0 == v1 else (v0 - target) / (v0 - v1)
        return float(self.dose_gy[j] + f * (self.dose_gy[j + 1] - self.dose_gy[j]))


def decode_stored_dvh(
    stored: StoredDVH, *, grid_max_gy: float | None = None, gy_per_unit: float = 1.0, stats_gy_per_unit: float = 1.0
) -> DecodedDVH | None:
    """The cumulative curve of a stored DVH; ``None`` when it cannot be compared (several ROIs,
    relative dose, PER_U volumes, NATURAL type, empty).

    ``gy_per_unit`` and ``stats_gy_per_unit`` convert the stored curve and the stored statistics
    to Gy (1 when they are in Gy as labelled; Rx / 100 when a planning system wrote percent of
    the prescription under a GY label: see :func:`infer_units`)."""
    if len(stored.roi_numbers) != 1 or stored.dose_units != "GY" or stored.volume_units not in ("CM3", "PERCENT"):
        return None
    if stored.volumes.size == 0 or stored.dvh_type not in ("CUMULATIVE", "DIFFERENTIAL"):
        return None
    edges = np.concatenate([[0.0], np.cumsum(stored.bin_widths_gy)]) * gy_per_unit
    if stored.dvh_type == "CUMULATIVE":
        # Vn is the volume receiving at least the dose at the lower edge of bin n
        v_ge = np.concatenate([stored.volumes, [0.0]])
    else:
        v_ge = np.concatenate([np.cumsum(stored.volumes[::-1])[::-1], [0.0]])
    total = float(v_ge[0])
    # the volume V(n) - V(n+1) receives a dose inside bin n; at its centre (uniform within the bin,
    # as the piecewise-linear curve of dose_at_fraction assumes) the mean is the trapezoid area
    # under the cumulative curve over the total volume (dicompyler-core: bin centres too)
    mean = float(np.sum(np.diff(edges) * (v_ge[:-1] + v_ge[1:]) / 2) / total) if total > 0 else None
    problems = []
    stated = None if stored.mean_gy is None else stored.mean_gy * stats_gy_per_unit
    if stated is not None and grid_max_gy and stated > 1.5 * grid_max_gy:
        problems.append(f"stored mean {stated:g} is labelled Gy but exceeds the dose maximum: probably percent")
        stated = None
    return DecodedDVH(edges, v_ge, total, mean, stated, tuple(problems))


def compare_with_stored(name: str, computed: DVH, stored: DecodedDVH, *, volume_units: str) -> list[str]:
    """Warnings where the stored DVH differs from rtqa's: > 2 % in volume, > 1 % in mean."""
    out = [f"stored DVH of {name!r}: {p}" for p in stored.problems]
    if volume_units == "CM3" and computed.volume_cc > 0:
        diff = (stored.volume - computed.volume_cc) / computed.volume_cc
        if abs(diff) > VOLUME_LIMIT:
            out.append(
                f"stored DVH of {name!r}: volume {stored.volume:.2f} cc, rtqa {computed.volume_cc:.2f} cc "
                f"({diff:+.1%}, more than {VOLUME_LIMIT:.0%})"
            )
    # the stated DVHMeanDose when present, else the mean of the stored curve
    mean = stored.stated_mean_gy if stored.stated_mean_gy is not None else stored.mean_gy
    if mean is not None and computed.mean_gy:
        diff = (mean - computed.mean_gy) / computed.mean_gy
        if abs(diff) > MEAN_LIMIT:
            out.append(
                f"stored DVH of {name!r}: mean {mean:.2f} Gy, rtqa {computed.mean_gy:.2f} Gy "
                f"({diff:+.1%}, more than {MEAN_LIMIT:.0%})"
            )
    return out


def end_cap_vote(volumes: list[tuple[float, float, float]]) -> EndCap | None:
    """The end-cap convention most stored volumes follow (None when none tells them apart)."""
    votes = {EndCap.HALF_SLAB: 0, EndCap.NONE: 0}
    for stored, half, none in volumes:
        if abs(half - none) < 0.001 * half:
            continue
        votes[EndCap.HALF_SLAB if abs(stored - half) < abs(stored - none) else EndCap.NONE] += 1
    if not sum(votes.values()):
        return None
    return max(votes, key=lambda k: votes[k])


def infer_end_cap(volumes: list[tuple[float, float, float]]) -> str | None:
    """Which end-cap convention the stored volumes follow.

    ``volumes`` holds (stored, half_slab, none) volumes in cc per ROI. Returns a sentence, or
    ``None`` when no ROI tells the conventions apart (by more than 0.1 %).
    """
    votes = {"half_slab": 0, "none": 0}
    for stored, half, none in volumes:
        if abs(half - none) < 0.001 * half:
            continue
        votes["half_slab" if abs(stored - half) < abs(stored - none) else "none"] += 1
    total = sum(votes.values())
    if not total:
        return None
    best = max(votes, key=lambda k: votes[k])
    return (
        f"stored DVH volumes follow the {best} end-cap convention for {votes[best]} of {total} ROIs "
        "that tell the conventions apart"
    )


@dataclass(frozen=True)
class StoredUnits:
    """What the stored doses of one RT Dose file are, inferred once for the whole file."""

    curve_gy_per_unit: float | None  # None: the curve's unit could not be inferred
    stats_gy_per_unit: float | None
    notes: tuple[str, ...]


def infer_units(stored: list[StoredDVH], *, grid_max_gy: float, prescription_gy: float | None) -> StoredUnits:
    """Infer, once per file, whether stored DVH doses labelled GY are Gy or percent of the
    prescription (some exports write percent under a GY label).

    The hottest stored structure reaches about the dose maximum of the grid: its highest dose
    (the curve's last bin with volume, after DVHDoseScaling, and the stated maximum or mean) is
    about the grid maximum in Gy, or about ``100 * max / Rx`` in percent. The curve and the
    statistics are inferred separately, since exports differ in which they write in percent.
    """
    items = [s for s in stored if s.dose_units == "GY" and s.volumes.size]
    tops = []
    for s in items:
        edges = np.concatenate([[0.0], np.cumsum(s.bin_widths_gy)])
        filled = np.flatnonzero(s.volumes > 0)
        if filled.size:
            tops.append(float(edges[filled[-1] + 1]) if s.dvh_type == "DIFFERENTIAL" else float(edges[filled[-1]]))
    stats = [v for s in items for v in (s.max_gy, s.mean_gy) if v is not None]
    notes: list[str] = []

    def decide(top: float | None, what: str) -> float | None:
        if top is None or grid_max_gy <= 0:
            return 1.0
        if top <= 1.1 * grid_max_gy + 0.5:
            return 1.0
        if prescription_gy and abs(top / 100 * prescription_gy - grid_max_gy) <= 0.15 * grid_max_gy + 0.5:
            notes.append(
                f"stored DVH {what} are labelled GY but are percent of the {prescription_gy:.2f} Gy prescription "
                f"(their highest value {top:.1f} against a dose maximum of {grid_max_gy:.2f} Gy): read as percent"
            )
            return prescription_gy / 100
        notes.append(
            f"stored DVH {what}: highest value {top:.2f} (labelled GY) exceeds the dose maximum {grid_max_gy:.2f} Gy "
            "and is not percent of the prescription either: not compared"
        )
        return None

    return StoredUnits(
        decide(max(tops) if tops else None, "doses"), decide(max(stats) if stats else None, "statistics"), tuple(notes)
    )
