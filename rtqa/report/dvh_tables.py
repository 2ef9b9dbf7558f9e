"""Renderers of ``rtqa dvh`` results: text, JSON (the DVH contract of DESIGN.md) and CSV."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from rtqa.dvh.engine import DVH
from rtqa.dvh.metrics import evaluate_metric
from rtqa.report.csv_cells import Cell, csv_text
from rtqa.report.text_cells import clean_lines

CURVE_STEP_GY = 0.1
SUMMARY_METRICS = ("D98%[Gy]", "D95%[Gy]", "D50%[Gy]", "D2%[Gy]", "D2cc[Gy]", "D0.03cc[Gy]")
TEXT_COLUMNS = ("volume_cc", "uncovered_cc", "min_gy", "mean_gy", "max_gy", "D98%", "D95%", "D2%", "D0.03cc")
# relative to the prescription (% of Rx), physical dose only
RELATIVE_METRICS = ("Min[%]", "Mean[%]", "Max[%]", "D98%[%]", "D95%[%]", "D2%[%]", "D0.03cc[%]")
RELATIVE_NAMES = tuple(m.split("[")[0] for m in RELATIVE_METRICS)
NOT_ON_EQUIVALENT = "no % of Rx on an equivalent dose: the prescription is a physical dose"


@dataclass(frozen=True, eq=False)
class StructureDVH:
    name: str
    roi: str | None  # the ROI in the file; None for a derived structure
    dvh: DVH | None
    problem: str | None = None  # why there is no DVH (missing, empty, ...)

    def statistics(self) -> dict[str, float | None]:
        """Volume, uncovered volume, min/mean/max and the summary D metrics, in report order."""
        if self.dvh is None:
            return {}
        dvh = self.dvh
        return {
            "volume_cc": dvh.volume_cc,
            "uncovered_cc": dvh.uncovered_cc,
            "min_gy": dvh.min_gy,
            "mean_gy": dvh.mean_gy,
            "max_gy": dvh.max_gy,
            **self.d_gy(),
        }

    def d_gy(self) -> dict[str, float | None]:
        if self.dvh is None:
            return {}
        return {m.split("[")[0]: evaluate_metric(self.dvh, m) for m in SUMMARY_METRICS}

    def pct_rx(self, rx_gy: float) -> dict[str, float | None]:
        """Min, mean, max and the summary D metrics as % of the prescription ``rx_gy``."""
        if self.dvh is None:
            return {}
        return {m.split("[")[0]: evaluate_metric(self.dvh, m, reference_dose_gy=rx_gy) for m in RELATIVE_METRICS}


@dataclass(frozen=True)
class Relative:
    """The prescription relative values are given against, or why there is none.

    ``rx_gy`` with ``basis`` saying where it comes from (``--rx``, the plan's prescription);
    ``rx_gy`` None with ``basis`` saying why the relative values are unavailable."""

    rx_gy: float | None
    basis: str

    @property
    def text(self) -> str:
        if self.rx_gy is None:
            return f"unavailable: {self.basis}"
        return f"{self.rx_gy:.2f} Gy from {self.basis}"


@dataclass(frozen=True, eq=False)
class DvhResult:
    """One case: identity, facts to print, and its structures (or the error that stopped it)."""

    patient_id: str
    plan_uid: str | None
    plan_label: str
    facts: tuple[tuple[str, str], ...]
    structures: tuple[StructureDVH, ...]
    warnings: tuple[str, ...] = ()
    error: str | None = None
    # ``--alpha-beta``: (label, structures) on the EQD2 per voxel; two tables (lowest and highest
    # dose per fraction) when one dose holds several fraction counts
    equivalent: tuple[tuple[str, tuple[StructureDVH, ...]], ...] = ()
    relative: Relative = Relative(None, "no prescription")


def _r(value: float | None, digits: int = 2) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def render_text(results: list[DvhResult]) -> str:
    lines: list[str] = []
    for res in results:
        lines.append(f"Patient {res.patient_id} - plan {res.plan_label}")
        lines.extend(f"  {k}: {v}" for k, v in res.facts)
        if res.error:
            lines.append(f"  NOT EVALUABLE: {res.error}")
            lines.append("")
            continue
        lines.extend(_table(res.structures))
        lines.extend(_relative_table(res.structures, res.relative))
        for label, structures in res.equivalent:
            lines.append(f"  {label}:")
            lines.extend(_table(structures))
        for w in res.warnings:
            lines.append(f"  warning: {w}")
        lines.append("")
    return clean_lines(lines).rstrip() + "\n"


def _table(structures: tuple[StructureDVH, ...]) -> list[str]:
    lines = [
        f"  {'structure':<18}{'volume cc':>11}{'uncov cc':>10}{'min Gy':>9}{'mean Gy':>9}{'max Gy':>9}"
        f"{'D98%':>8}{'D95%':>8}{'D2%':>8}{'D0.03cc':>9}"
    ]
    for s in structures:
        if s.dvh is None:
            lines.append(f"  {s.name:<18}  missing: {s.problem}")
            continue
        stats = s.statistics()
        cells = [stats[k] for k in TEXT_COLUMNS]
        widths = (11, 10, 9, 9, 9, 8, 8, 8, 9)
        text = "".join(f"{'-' if v is None else f'{v:.2f}':>{w}}" for v, w in zip(cells, widths, strict=True))
        flag = "  (small)" if s.dvh.is_small else ""
        lines.append(f"  {s.name:<18}{text}{flag}")
    return lines


def _relative_table(structures: tuple[StructureDVH, ...], relative: Relative) -> list[str]:
    """The relative values, as % of the prescription, or one line saying why there are none."""
    rx = relative.rx_gy
    if rx is None:
        return [f"  % of Rx: {relative.text}"]
    lines = [f"  % of Rx ({relative.text}):", f"  {'structure':<18}" + "".join(f"{n:>9}" for n in RELATIVE_NAMES)]
    for s in structures:
        if s.dvh is None:
            continue  # said in the table above
        cells = s.pct_rx(rx).values()
        lines.append(f"  {s.name:<18}" + "".join(f"{'-' if v is None else f'{v:.1f}':>9}" for v in cells))
    return lines


def _structure_json(s: StructureDVH, rx_gy: float | None = None) -> dict[str, object]:
    if s.dvh is None:
        return {"roi": s.roi, "missing": s.problem}
    dvh = s.dvh
    top = dvh.max_gy or 0.0
    grid = np.arange(0.0, top + CURVE_STEP_GY, CURVE_STEP_GY)
    curve = np.interp(grid, dvh.dose_edges_gy, dvh.volume_ge_cc, left=dvh.covered_cc, right=0.0)
    return {
        "roi": s.roi,
        "volume_cc": _r(dvh.volume_cc),
        "uncovered_cc": _r(dvh.uncovered_cc),
        "min_gy": _r(dvh.min_gy),
        "mean_gy": _r(dvh.mean_gy),
        "max_gy": _r(dvh.max_gy),
        "d_gy": {k: _r(v) for k, v in s.d_gy().items()},
        "pct_rx": None if rx_gy is None else {k: _r(v, 1) for k, v in s.pct_rx(rx_gy).items()},
        "end_cap": dvh.end_cap.value,
        "small": dvh.is_small,
        "curve": {"dose_gy": [_r(v) for v in grid], "volume_cc": [_r(v, 3) for v in curve]},
        "warnings": list(dvh.warnings),
    }


def render_json(results: list[DvhResult]) -> str:
    plans = []
    for res in results:
        plans.append(
            {
                "patient_id": res.patient_id,
                "plan_uid": res.plan_uid,
                "plan_label": res.plan_label,
                "facts": dict(res.facts),
                "error": res.error,
                "warnings": list(res.warnings),
                "relative": {"rx_gy": _r(res.relative.rx_gy), "basis": res.relative.basis, "text": res.relative.text},
                "structures": {s.name: _structure_json(s, res.relative.rx_gy) for s in res.structures},
                "equivalent": [
                    {
                        "label": label,
                        "relative": NOT_ON_EQUIVALENT,
                        "structures": {s.name: _structure_json(s) for s in structures},
                    }
                    for label, structures in res.equivalent
                ],
            }
        )
    return json.dumps({"plans": plans}, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


DVH_CSV_COLUMNS = (
    "patient_id",
    "plan_uid",
    "structure",
    "roi",
    "volume_cc",
    "uncovered_cc",
    "min_gy",
    "mean_gy",
    "max_gy",
    "D98%_gy",
    "D95%_gy",
    "D50%_gy",
    "D2%_gy",
    "D2cc_gy",
    "D0.03cc_gy",
    "problem",
    "rx_gy",
    *(f"{n}_pct_rx" for n in RELATIVE_NAMES),
    "relative",
)


def render_csv(results: list[DvhResult]) -> str:
    """One row per structure; ROI names and other DICOM text neutralised against formula
    injection (:mod:`rtqa.report.csv_cells`), statistics as numbers rounded to 0.01 (% of Rx to
    0.1). The relative columns are empty where there is no prescription, and ``relative`` says
    why (or which prescription they are against)."""
    rows: list[list[Cell]] = []
    blank: list[Cell] = [None] * 11
    no_pct: list[Cell] = [None] * len(RELATIVE_NAMES)
    for res in results:
        if res.error:
            rows.append([res.patient_id, res.plan_uid, None, None, *blank, res.error, None, *no_pct, None])
        rx = res.relative.rx_gy
        tables = [("", res.structures), *((f" [{label}]", structures) for label, structures in res.equivalent)]
        for suffix, structures in tables:
            relative = res.relative.text if not suffix else NOT_ON_EQUIVALENT
            for s in structures:
                if s.dvh is None:
                    rows.append([res.patient_id, res.plan_uid, s.name + suffix, s.roi, *blank, s.problem,
                                 None, *no_pct, relative])  # fmt: skip
                    continue
                values: list[Cell] = [_r(v) for v in s.statistics().values()]
                pct: list[Cell] = no_pct if suffix or rx is None else [_r(v, 1) for v in s.pct_rx(rx).values()]
                rx_cell = None if suffix else _r(rx)
                rows.append([res.patient_id, res.plan_uid, s.name + suffix, s.roi, *values, None, rx_cell, *pct,
                             relative])  # fmt: skip
    return csv_text(DVH_CSV_COLUMNS, rows)
