"""Benchmark: rtqa's DVH engine against dicompyler-core 0.5.6, in the same run, on the same cases.

    python bench/bench_dvh.py [--dicompyler-python PATH] [--quick] [--out FILE.md]

dicompyler-core needs pydicom < 3, so it runs in its own interpreter (by default the one
``python bench/dicompyler_env.py`` creates under .tox/dicompyler-ref). For every case and
structure the table gives the median time of repeated runs, the peak traced memory and the
error against the generator's truth for both engines. Timing lives here, never in the tests.

Reference: the contour-stack truth of fixtures/phantoms.py (analytic phantoms) and
fixtures/truth.py (liver case). dicompyler-core is a second opinion, not the truth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import cases, phantoms
from rtqa.dvh.engine import compute_dvh, prepare_dose
from rtqa.dvh.geometry import roi_stack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.evaluation.casedvh import compute_case_dvhs
from rtqa.io import read_dose, read_structure_set

METRICS = ("volume_cc", "mean_gy", "D98", "D95", "D50", "D2")
TRUTH_KEYS = {"volume_cc": "volume_cc", "mean_gy": "mean_gy", "D98": "D98%", "D95": "D95%", "D50": "D50%", "D2": "D2%"}
LIVER_STRUCTURES = (
    "Body",
    "Liver",
    "GTVp",
    "GTVv",
    "GTVn",
    "PTVp",
    "PTVv",
    "PTVn",
    "Stomach",
    "Duodenum",
    "Bowel_Small",
    "Kidney_L",
    "Kidney_R",
    "SpinalCord",
    "Esophagus",
    "Heart",
    "Lungs",
)


def timed(func, repeats):  # type: ignore[no-untyped-def]
    """Median wall time of ``repeats`` runs, then one more run under tracemalloc for the peak."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20, result


def rtqa_metrics(dvh) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {
        "volume_cc": dvh.volume_cc,
        "mean_gy": dvh.mean_gy,
        **{m: evaluate_metric(dvh, f"{m}%[Gy]") for m in ("D98", "D95", "D50", "D2")},
    }


def error(values: dict, truth: dict, reference: float) -> dict[str, float]:  # type: ignore[type-arg]
    """Relative error (%) in volume; dose errors in % of the reference dose."""
    out = {}
    for m in METRICS:
        t, v = truth[TRUTH_KEYS[m]], values.get(m)
        if v is None or t is None:
            out[m] = float("nan")
        elif m == "volume_cc":
            out[m] = 100 * (v - t) / t
        else:
            out[m] = 100 * (v - t) / reference
    return out


def run_dicompyler(python: str, jobs: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    proc = subprocess.run(
        [python, str(Path(__file__).with_name("dicompyler_runner.py"))],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicompyler-python", default=str(Path(".tox/dicompyler-ref/bin/python")))
    parser.add_argument("--quick", action="store_true", help="fewer cases and repeats")
    parser.add_argument("--out", help="also write the tables (markdown) here")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    out = tempfile.mkdtemp(prefix="rtqa-bench-")
    spacings = (2.0, 3.0) if args.quick else cases.PHANTOM_SPACINGS
    rows = []
    jobs = []
    for shape in cases.PHANTOM_SHAPES:
        for dose_kind in phantoms.DOSES:
            for spacing in spacings:
                for grid in cases.PHANTOM_GRIDS:
                    folder = cases.write_phantom_case(out, shape, dose_kind, spacing, grid)
                    truth = json.loads(Path(folder + ".truth.json").read_text())["stack"]
                    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
                    dose = read_dose(os.path.join(folder, "RD.dcm"))
                    stack = roi_stack(ss.rois[0], ss.plane_positions_mm)
                    t, mem, dvh = timed(lambda s=stack, d=dose: compute_dvh(s, d), repeats)
                    rows.append(
                        {
                            "case": os.path.basename(folder),
                            "structure": shape,
                            "truth": truth,
                            "rtqa": {"time_s": t, "peak_mb": mem, **rtqa_metrics(dvh)},
                        }
                    )
                    for mode in ("default", "interp"):
                        interp_ok = mode == "default" or (spacing == 3.0 and grid == 3.0)
                        if interp_ok:
                            jobs.append(
                                {
                                    "rs": os.path.join(folder, "RS.dcm"),
                                    "rd": os.path.join(folder, "RD.dcm"),
                                    "roi": 1,
                                    "mode": mode,
                                    "pixel_mm": grid,
                                    "repeats": 3,
                                    "row": len(rows) - 1,
                                }
                            )
    # the liver plan: every structure, one dose preparation shared, as rtqa check would run it
    liver = cases.write_liver_case(
        out, cases.LiverSpec(name="liver_bench", patient_id="BENCH", with_ct=False, truth=True)
    )
    ss = read_structure_set(os.path.join(liver, "RS.dcm"))
    dose = read_dose(os.path.join(liver, "RD_PLAN.dcm"))
    plan_t, plan_mem, results = timed(
        lambda: compute_case_dvhs(ss, dose, derived=[("Liver-GTV", "Liver - (GTVp | GTVv | GTVn)")]), repeats
    )
    prepared = prepare_dose(dose)
    liver_truth = json.loads(Path(liver + ".truth.json").read_text())["structures"]
    roi_numbers = {r.name: r.number for r in ss.rois}
    liver_rows = []
    for s in results:
        if s.name not in roi_numbers:
            continue
        stack = roi_stack(ss.roi(s.name), ss.plane_positions_mm)
        t, mem, dvh = timed(lambda st=stack: compute_dvh(st, dose, prepared=prepared), repeats)
        liver_rows.append(
            {
                "structure": s.name,
                "truth": liver_truth.get(s.name),
                "rtqa": {"time_s": t, "peak_mb": mem, **rtqa_metrics(dvh)},
            }
        )
        jobs.append(
            {
                "rs": os.path.join(liver, "RS.dcm"),
                "rd": os.path.join(liver, "RD_PLAN.dcm"),
                "roi": roi_numbers[s.name],
                "mode": "default",
                "pixel_mm": 3.0,
                "repeats": 1 if args.quick else 3,
                "liver": len(liver_rows) - 1,
            }
        )
        if s.name in ("Liver", "PTVp", "SpinalCord", "Kidney_L"):
            jobs.append({**jobs[-1], "mode": "interp", "repeats": 1})
    dc = run_dicompyler(args.dicompyler_python, jobs)
    for job, res in zip(jobs, dc, strict=True):
        target = rows[job["row"]] if "row" in job else liver_rows[job["liver"]]
        target[f"dc_{job['mode']}"] = res

    lines = render(rows, liver_rows, plan_t, plan_mem)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:+.2f}"


def render(rows, liver_rows, plan_t, plan_mem) -> list[str]:  # type: ignore[no-untyped-def]
    ref = phantoms.REFERENCE_DOSE_GY
    lines = [
        "## Analytic phantoms",
        "",
        "Errors against the contour-stack truth: volume in %, doses in % of the 50 Gy reference. "
        "dc = dicompyler-core 0.5.6 default; dci = with interpolation (1/8 pixel, 2 segments between planes, "
        "structure extents).",
        "",
        "| case | rtqa ms | dc ms | dci ms | rtqa MB | dc MB | rtqa err vol/mean/D98/D95/D50/D2 | "
        "dc err vol/mean/D98/D95/D50/D2 | dci err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    speed_dc, speed_dci, worse = [], [], 0
    for r in rows:
        e_r = error(r["rtqa"], r["truth"], ref)
        e_d = error(r["dc_default"], r["truth"], ref)
        e_i = error(r["dc_interp"], r["truth"], ref) if "dc_interp" in r else None
        speed_dc.append(r["dc_default"]["time_s"] / r["rtqa"]["time_s"])
        if e_i:
            speed_dci.append(r["dc_interp"]["time_s"] / r["rtqa"]["time_s"])
        worse += sum(1 for m in METRICS if abs(e_r[m]) > abs(e_d[m]) + 0.1)
        lines.append(
            f"| {r['case']} | {1000 * r['rtqa']['time_s']:.1f} | {1000 * r['dc_default']['time_s']:.0f} | "
            f"{1000 * r['dc_interp']['time_s']:.0f} | "
            if e_i
            else f"| {r['case']} | {1000 * r['rtqa']['time_s']:.1f} | {1000 * r['dc_default']['time_s']:.0f} | - | "
        )
        lines[-1] += (
            f"{r['rtqa']['peak_mb']:.1f} | {r['dc_default']['peak_mb']:.1f} | "
            f"{' '.join(fmt(e_r[m]) for m in METRICS)} | {' '.join(fmt(e_d[m]) for m in METRICS)} | "
            f"{' '.join(fmt(e_i[m]) for m in METRICS) if e_i else '-'} |"
        )
    lines += [
        "",
        f"Median speed-up over dicompyler-core default: {statistics.median(speed_dc):.0f}x "
        f"(min {min(speed_dc):.0f}x); with interpolation: {statistics.median(speed_dci):.0f}x "
        f"(min {min(speed_dci):.0f}x).",
        f"Metrics where rtqa is further from the truth than dicompyler-core by more than 0.1 %: {worse} "
        f"of {len(rows) * len(METRICS)}.",
        "",
        "## The liver plan",
        "",
        f"All 17 ROIs plus Liver-GTV, dose preparation shared: median {1000 * plan_t:.0f} ms, "
        f"peak {plan_mem:.0f} MB (one core).",
        "",
        "| structure | rtqa ms | dc ms | dci ms | rtqa mean err % Rx | dc mean err | rtqa D95 err | dc D95 err |",
        "|---|---|---|---|---|---|---|---|",
    ]
    tot_r = tot_d = 0.0
    for r in liver_rows:
        t = r["truth"]
        tot_r += r["rtqa"]["time_s"]
        tot_d += r["dc_default"]["time_s"]
        if t:
            e_r, e_d = error(r["rtqa"], t, 50.0), error(r["dc_default"], t, 50.0)
            errs = f"{fmt(e_r['mean_gy'])} | {fmt(e_d['mean_gy'])} | {fmt(e_r['D95'])} | {fmt(e_d['D95'])}"
        else:
            errs = "- | - | - | -"
        dci = f"{1000 * r['dc_interp']['time_s']:.0f}" if "dc_interp" in r else "-"
        lines.append(
            f"| {r['structure']} | {1000 * r['rtqa']['time_s']:.1f} | "
            f"{1000 * r['dc_default']['time_s']:.0f} | {dci} | {errs} |"
        )
    lines += [
        "",
        f"Sum over the ROIs: rtqa {1000 * tot_r:.0f} ms, dicompyler-core default {1000 * tot_d:.0f} ms "
        f"({tot_d / tot_r:.1f}x).",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
