"""The tables of Nelms et al. (Med Phys 2015;42:4435) on an equivalent benchmark built from the
paper's description (fixtures/nelms.py): how many parameters are more than 3 % off the analytic
value, per parameter, in Test 1 and Test 2, for rtqa under each end-cap convention and, in the
same run, for dicompyler-core 0.5.6 (run in its own interpreter: it needs pydicom < 3).

    python bench/nelms_like.py [--dicompyler-python PATH] [--shifted] [--out DIR] [--details FILE]

Without ``--dicompyler-python`` the dicompyler-core column is left out. ``--shifted`` adds
Test 2s (the shapes moved half a dose voxel along x). Takes a few minutes (the 0.4 x 0.2 x 0.4 mm
grid and dicompyler-core dominate).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import nelms
from rtqa.dvh.engine import compute_dvh, prepare_dose
from rtqa.dvh.expression import EndCap
from rtqa.dvh.geometry import roi_stack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.io import read_dose, read_structure_set

THRESHOLD_PERCENT = 3.0
RTQA_METRICS = {
    "min_gy": "Min[Gy]",
    "max_gy": "Max[Gy]",
    "mean_gy": "Mean[Gy]",
    "D99": "D99%[Gy]",
    "D95": "D95%[Gy]",
    "D5": "D5%[Gy]",
    "D1": "D1%[Gy]",
    "D0.03cc": "D0.03cc[Gy]",
}
# The paper's counts (Tables I and II: values more than 3 % off, per parameter)
PUBLISHED = {
    "1": {
        "PlanIQ (paper)": {"volume_cc": 0, "min_gy": 0, "max_gy": 0, "mean_gy": 0, "D99": 3, "D95": 2, "D5": 0,
                           "D1": 0, "D0.03cc": 0},
        "Pinnacle (paper)": {"volume_cc": 0, "min_gy": 20, "max_gy": 0, "mean_gy": 0, "D99": 20, "D95": 12,
                             "D5": 0, "D1": 0, "D0.03cc": 0},
    },
    "2": {
        "PlanIQ (paper)": {"volume_cc": 1, "min_gy": 0, "max_gy": 0, "mean_gy": 0, "D99": 11, "D95": 4, "D5": 0,
                           "D1": 1, "D0.03cc": 1},
        "Pinnacle (paper)": {"volume_cc": 0, "min_gy": 30, "max_gy": 10, "mean_gy": 0, "D99": 18, "D95": 19,
                             "D5": 2, "D1": 7, "D0.03cc": 7},
    },
}  # fmt: skip
TESTS = {"1": "Test 1: contours every 0.2 mm; grids 0.4x0.2x0.4, 1, 2, 3 mm",
         "2": "Test 2: contours every 1, 2, 3 mm on the grid of the same spacing",
         "2s": "Test 2s: as Test 2, the shapes moved half a dose voxel along x"}  # fmt: skip


def rtqa_values(case: nelms.Case, end_cap: EndCap) -> dict[str, dict[str, float | None]]:
    """gradient -> parameter -> value, for one structure set and grid."""
    ss = read_structure_set(case.rs)
    out: dict[str, dict[str, float | None]] = {}
    for gradient, rd in case.rd.items():
        dose = read_dose(rd)
        stack = roi_stack(ss.rois[0], ss.plane_positions_mm, end_cap=end_cap)
        dvh = compute_dvh(stack, dose, prepared=prepare_dose(dose))
        values: dict[str, float | None] = {"volume_cc": dvh.volume_cc}
        values.update({k: evaluate_metric(dvh, m) for k, m in RTQA_METRICS.items()})
        out[gradient] = values
    return out


def dicompyler_values(cases: list[nelms.Case], python: str) -> list[dict[str, dict[str, float | None]]]:
    jobs = [
        {"rs": c.rs, "rd": rd, "roi": 1, "mode": "default", "repeats": 1, "profile": False,
         "statistics": ["D99", "D95", "D5", "D1", "D0.03cc"]}
        for c in cases
        for rd in c.rd.values()
    ]  # fmt: skip
    runner = Path(__file__).with_name("dicompyler_runner.py")
    proc = subprocess.run([python, str(runner)], input=json.dumps(jobs), capture_output=True, text=True, check=True)
    results = iter(json.loads(proc.stdout))
    out = []
    for c in cases:
        per: dict[str, dict[str, float | None]] = {}
        for gradient in c.rd:
            r = next(results)
            stats = {k: r.get(k) for k in ("D99", "D95", "D5", "D1", "D0.03cc")}
            per[gradient] = {k: r[k] for k in ("volume_cc", "min_gy", "max_gy", "mean_gy")} | stats
        out.append(per)
    return out


def errors(case: nelms.Case, values: dict[str, dict[str, float | None]]) -> list[tuple[str, str, float]]:
    """(parameter, label, % error) of the 17 values of one structure set and grid."""
    out = []
    for gradient in nelms.GRADIENTS:
        t = nelms.truth(case.shape, gradient)
        for p in nelms.PARAMETERS:
            if p == "volume_cc" and gradient != "AP":
                continue  # the volume once per structure set and grid
            v = values[gradient][p]
            err = float("inf") if v is None else 100 * (v - t.get(p)) / t.get(p)
            label = f"{case.shape} {case.spacing_mm:g} mm / grid {case.grid}" + (
                "" if p == "volume_cc" else f" {gradient}"
            )
            out.append((p, label, err))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dicompyler-python", help="the interpreter of bench/dicompyler_env.py")
    ap.add_argument("--shifted", action="store_true", help="add Test 2s (shapes half a dose voxel off along x)")
    ap.add_argument("--out", help="write the benchmark files here (default: a temporary folder)")
    ap.add_argument("--details", help="write every value and error as JSON here")
    args = ap.parse_args()
    folder = args.out or tempfile.mkdtemp(prefix="rtqa-nelms-")
    t0 = time.perf_counter()
    cases = nelms.write_benchmark(folder, shifted=args.shifted)
    print(f"benchmark written to {folder} in {time.perf_counter() - t0:.0f} s ({len(cases)} structure sets x grids)")
    methods: dict[str, list[dict[str, dict[str, float | None]]]] = {}
    for cap in (EndCap.SHAPE, EndCap.HALF_SLAB, EndCap.NONE):
        t0 = time.perf_counter()
        methods[f"rtqa ({cap.value})"] = [rtqa_values(c, cap) for c in cases]
        print(f"rtqa {cap.value}: {time.perf_counter() - t0:.0f} s")
    if args.dicompyler_python:
        t0 = time.perf_counter()
        methods["dicompyler-core 0.5.6"] = dicompyler_values(cases, args.dicompyler_python)
        print(f"dicompyler-core: {time.perf_counter() - t0:.0f} s")
    details: dict[str, list[tuple[str, str, str, float]]] = defaultdict(list)
    for method, per_case in methods.items():
        for case, values in zip(cases, per_case, strict=True):
            details[method] += [(case.test, p, label, e) for p, label, e in errors(case, values)]
    for test in sorted({c.test for c in cases}):
        n = sum(1 for _, rows in list(details.items())[:1] for row in rows if row[0] == test)
        print(f"\n{TESTS[test]} (values more than {THRESHOLD_PERCENT:g} % off the analytic value, of {n})\n")
        columns = list(methods) + list(PUBLISHED.get(test, {}))
        print("| parameter | " + " | ".join(columns) + " |")
        print("|---|" + "---|" * len(columns))
        totals = dict.fromkeys(columns, 0)
        for p in nelms.PARAMETERS:
            cells = []
            for m in columns:
                if m in methods:
                    count = sum(1 for t, q, _, e in details[m] if t == test and q == p and abs(e) > THRESHOLD_PERCENT)
                else:
                    count = PUBLISHED[test][m][p]
                totals[m] += count
                cells.append(str(count))
            print(f"| {p} | " + " | ".join(cells) + " |")
        print("| **total** | " + " | ".join(f"**{totals[m]} of {n}**" for m in columns) + " |")
    for m in methods:
        misses = [(t, p, label, e) for t, p, label, e in details[m] if abs(e) > THRESHOLD_PERCENT]
        worst = sorted(misses, key=lambda r: -abs(r[3]))[:12]
        print(f"\n{m}: {len(misses)} values over {THRESHOLD_PERCENT:g} %" + (", the largest:" if worst else ""))
        for t, p, label, e in worst:
            print(f"  Test {t}: {p:<9} {label:<36} {e:+.1f} %")
    if args.details:
        Path(args.details).write_text(json.dumps(details, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
