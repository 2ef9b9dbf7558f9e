"""Whole-process benchmark of the command line (issue 10).

    python bench/bench_cli.py [--dicompyler-python PATH] [--baseline DIR] [--repeats 5] [--no-scaling]
                              [--readme FILE]

Times, as whole processes (interpreter start-up included) and alternating in one run, after
one warm-up run of each: ``rtqa --version``; ``rtqa check`` of the demo liver plan
(``fixtures/demo``) and of the large plan (``python -m fixtures.generate OUT --large``); and
dicompyler-core computing every ROI's DVH of the demo plan in its own interpreter
(``bench/dicompyler_plan.py``; skipped without ``--dicompyler-python``). Reports the median,
min and max wall time of ``--repeats`` rounds, the median CPU time (user + system) and the
peak resident memory of each process (``/usr/bin/time -f %M``, GNU time).

Also measures, in this process, the DVHs of every ROI of the demo plan plus the derived
``Liver-GTV`` (dose preparation included, reading excluded), and a scaling table: ``rtqa
check`` of the large plan at four dose-grid sizes (same anatomy, grid spacing 8, 4, 3 and
2 mm) and three structure-set sizes (points per contour), median of 3.

``--baseline DIR`` adds the same ``--version`` and demo-check runs of another source tree of
rtqa (``git archive COMMIT | tar -x -C DIR``), interleaved with these, for a before/after
comparison on an equally busy machine.

Issue 21 adds, measured in the same alternating rounds: the ratio of the demo check to
dicompyler-core's DVHs of the same plan (medians of wall and of CPU time), and a batch of
``--batch-plans`` copies of the demo patient (``fixtures/batch.py``) checked by one process with
``--workers 1`` and ``--workers 2``: seconds per plan per core = wall x workers / plans. The load
average (``os.getloadavg``) is printed at the start and at the end: on a shared machine the
ratios and CPU columns are the comparable figures, not the wall times.

The child processes run without ``PYTHONDONTWRITEBYTECODE``: an installed rtqa has its bytecode
compiled, so the warm-up run writes it for the source tree as an installation would.

With ``--readme`` the tables replace the block between the ``bench_cli`` markers of that
file (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fixtures import cases  # noqa: E402

DEMO = ROOT / "fixtures" / "demo"
START, END = "<!-- bench_cli:start -->", "<!-- bench_cli:end -->"
TIME, MARK = "/usr/bin/time", "RTQA_BENCH"  # GNU time (Debian package time)


@dataclass
class Runs:
    label: str
    args: list[str]
    target: str = ""
    cwd: Path = ROOT
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    codes: set[int] = field(default_factory=set)

    def once(self) -> None:
        # Peak memory comes from /usr/bin/time (GNU time), which forks the command itself: a
        # child forked from this process would report this process's own resident size as
        # its high-water mark (fork copies it) once the large plan has been generated here.
        timed = os.path.exists(TIME)
        args = [TIME, "-f", f"{MARK} %M %U %S", *self.args] if timed else self.args
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.cwd, text=True, env=env
        )
        _, err = proc.communicate()
        self.wall.append(time.perf_counter() - t0)
        line = next((ln for ln in reversed(err.splitlines()) if ln.startswith(MARK)), None) if timed else None
        if line is None:
            raise RuntimeError(f"{self.label}: no resource usage from {TIME}: {err[-500:]}")
        kb, user, system = line.split()[1:]
        self.rss_mib.append(int(kb) / 1024)
        self.cpu.append(float(user) + float(system))
        self.codes.add(proc.returncode)

    def row(self) -> str:
        w = self.wall
        return (
            f"| {self.label} | {statistics.median(w):.3f} | {min(w):.3f} | {max(w):.3f} | "
            f"{statistics.median(self.cpu):.3f} | {max(self.rss_mib):.0f} | {self.target} |"
        )


def alternate(runs: list[Runs], repeats: int) -> None:
    for r in runs:  # warm-up: file cache, bytecode
        r.once()
        r.wall.clear(), r.cpu.clear(), r.rss_mib.clear()
    for _ in range(repeats):
        for r in runs:
            r.once()


def clinical_csv(folder: Path, patient_id: str) -> Path:
    path = folder / f"{patient_id}.clinical.csv"
    path.write_text(f"patient_id,child_pugh,dose_algorithm\n{patient_id},A5,AAA\n")
    return path


def check_args(case: Path, clinical: Path) -> list[str]:
    return [sys.executable, "-m", "rtqa", "check", str(case), "--clinical", str(clinical), "--format", "json"]


def demo_batch(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` copies of the demo patient (new IDs and UIDs) and their clinical CSV."""
    from fixtures.batch import copy_case

    tree = root / "batch"
    rows = ["patient_id,child_pugh,dose_algorithm"]
    for i in range(n):
        copy_case(str(DEMO / "liver_clean"), str(tree / f"p{i:03d}"), f"B{i:03d}")
        rows.append(f"B{i:03d},A5,AAA")
    clinical = root / "batch.clinical.csv"
    clinical.write_text("\n".join(rows) + "\n")
    return tree, clinical


def batch_args(tree: Path, clinical: Path, workers: int, out: Path) -> list[str]:
    return [
        *check_args(tree, clinical),
        "--workers",
        str(workers),
        "--output",
        str(out / f"batch-w{workers}.json"),
        "--force",
    ]


def in_process_dvhs(repeats: int) -> tuple[float, float, float, float, int]:
    """Median, min and max seconds for every ROI's DVH plus Liver-GTV of the demo plan."""
    from rtqa.evaluation.casedvh import compute_case_dvhs
    from rtqa.io import read_dose, read_structure_set

    ss = read_structure_set(DEMO / "liver_clean" / "RS.dcm")
    dose = read_dose(DEMO / "liver_clean" / "RD_PLAN.dcm")

    def run() -> int:
        return len(compute_case_dvhs(ss, dose, derived=[("Liver-GTV", "Liver - (GTVp | GTVv | GTVn)")]))

    n = run()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), min(times), max(times), statistics.median(cpu), n


def ratios(check: Runs, before: Runs | None, dicompyler: Runs | None, batch: dict[int, Runs], plans: int) -> list[str]:
    """The figures of issue 21 from runs of one session: the check against dicompyler-core's
    DVHs of the same plan, and the batch's seconds per plan per core."""
    med = statistics.median
    rows = ["| figure | wall (medians) | CPU (medians) | target |", "|---|---|---|---|"]
    for label, r in (("", check), (", before", before)):
        if dicompyler is not None and r is not None:
            rows.append(
                f"| `rtqa check` demo{label} / dicompyler-core DVHs of the same plan | "
                f"{med(r.wall) / med(dicompyler.wall):.2f}x | {med(r.cpu) / med(dicompyler.cpu):.2f}x | ≤ 0.25x |"
            )
    for workers, r in sorted(batch.items()):
        rows.append(
            f"| batch, s per plan per core, `--workers {workers}` ({plans} plans) | "
            f"{med(r.wall) * workers / plans:.3f} | {med(r.cpu) / plans:.3f} (CPU per plan) | ≤ 0.3 s |"
        )
    return rows


def scaling(root: Path, repeats: int) -> list[str]:
    base = cases.LargeSpec()
    extent = (base.grid_shape[0] * base.grid_mm, base.grid_shape[1] * base.grid_mm, base.grid_shape[2] * base.grid_mm)
    rows = [
        "| what varies | dose grid (voxels) | structure set (MB) | median s | min s | max s | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    specs = []
    for g in (8.0, 4.0, 3.0, 2.0):
        shape = tuple(round(e / g) for e in extent)
        specs.append(("dose grid", replace(base, name=f"grid{g:g}", grid_mm=g, grid_shape=shape)))  # type: ignore[arg-type]
    for points in (100, 400, 1000):
        body = max(100, points // 2)
        specs.append(
            (
                "structure set",
                replace(
                    base,
                    name=f"ss{points}",
                    grid_mm=4.0,
                    grid_shape=(150, 125, 100),
                    ring_points=points,
                    body_points=body,
                ),
            )
        )
    for what, spec in specs:
        folder = Path(cases.write_large_case(str(root), spec))
        clinical = clinical_csv(root, spec.patient_id)
        r = Runs(spec.name, check_args(folder, clinical))
        alternate([r], repeats)
        nx, ny, nz = spec.grid_shape
        mb = (folder / "RS.dcm").stat().st_size / 1e6
        w = r.wall
        rows.append(
            f"| {what} | {nx} x {ny} x {nz} = {nx * ny * nz / 1e6:.2f} M ({spec.grid_mm:g} mm) | {mb:.1f} | "
            f"{statistics.median(w):.2f} | {min(w):.2f} | {max(w):.2f} | {statistics.median(r.cpu):.2f} | "
            f"{max(r.rss_mib):.0f} |"
        )
        print(rows[-1], flush=True)
        shutil.rmtree(folder)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicompyler-python", help="interpreter with dicompyler-core (bench/dicompyler_env.py)")
    parser.add_argument("--baseline", help="another rtqa source tree to time alongside (before/after)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling tables (several minutes)")
    parser.add_argument("--readme", help="write the tables into this file between the bench_cli markers")
    parser.add_argument("--no-large", action="store_true", help="skip the large plan's row (minutes on a busy machine)")
    parser.add_argument("--batch-plans", type=int, default=8, help="copies of the demo patient in the batch rows")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="rtqa-bench-cli-"))
    demo_clinical = DEMO / "clinical.csv"
    demo_check = Runs(
        "`rtqa check` demo liver plan (json)", check_args(DEMO / "liver_clean", demo_clinical), "≤ 0.5 s, ≤ 150 MiB"
    )
    runs = [Runs("`rtqa --version`", [sys.executable, "-m", "rtqa", "--version"], "≤ 0.15 s"), demo_check]
    # the HTML page of the demo (image views drawn with matplotlib): the report of a QA office
    html_args = [*check_args(DEMO / "liver_clean", demo_clinical)[:-1], "html", "--output", str(root / "demo.html")]
    html_args.append("--force")
    if not args.no_large:
        large = Path(cases.write_large_case(str(root)))
        runs.append(
            Runs("`rtqa check` large plan (json)", check_args(large, clinical_csv(root, "LARGE")), "(measured)")
        )
    before_check = None
    if args.baseline:
        base = Path(args.baseline).resolve()
        label = f"before ({base.name})"
        before_check = Runs(
            f"`rtqa check` demo liver plan (json), {label}", check_args(DEMO / "liver_clean", demo_clinical), "", base
        )
        runs[1:1] = [Runs(f"`rtqa --version`, {label}", [sys.executable, "-m", "rtqa", "--version"], "", base)]
        runs[3:3] = [before_check]
    runs.append(Runs("`rtqa check` demo liver plan (html, 9 image views)", html_args, "(measured)"))
    if args.baseline:
        runs.append(Runs(f"`rtqa check` demo liver plan (html, 9 image views), {label}", html_args, "", base))
    tree, batch_clinical = demo_batch(root, args.batch_plans)
    batch_runs = {
        w: Runs(
            f"`rtqa check` batch of {args.batch_plans} demo plans, `--workers {w}`",
            batch_args(tree, batch_clinical, w, root),
            "≤ 0.3 s per plan per core",
        )
        for w in (1, 2)
    }
    runs += list(batch_runs.values())
    dicompyler = None
    if args.dicompyler_python:
        rs, rd = DEMO / "liver_clean" / "RS.dcm", DEMO / "liver_clean" / "RD_PLAN.dcm"
        dicompyler = Runs(
            "dicompyler-core 0.5.6, every ROI of the demo plan",
            [args.dicompyler_python, str(ROOT / "bench" / "dicompyler_plan.py"), str(rs), str(rd)],
            "(reference)",
        )
        runs.append(dicompyler)
    alternate(runs, args.repeats)
    bad = [f"{r.label}: exit {sorted(r.codes)}" for r in runs if r.codes - {0}]
    table = [
        f"Whole processes, {args.repeats} rounds alternating after a warm-up; "
        f"{os.cpu_count()} cores; load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| command | median s | min s | max s | CPU s (median) | peak RSS MiB | target |",
        "|---|---|---|---|---|---|---|",
        *(r.row() for r in runs),
        "",
        *ratios(demo_check, before_check, dicompyler, batch_runs, args.batch_plans),
    ]
    med, lo, hi, cpu, n = in_process_dvhs(args.repeats)
    table += [
        "",
        f"In process: the DVHs of all {n} structures of the demo plan (every ROI incl. Body, and "
        f"Liver-GTV), dose preparation included: median {med:.3f} s (min {lo:.3f}, max {hi:.3f}), "
        f"CPU {cpu:.3f} s; "
        "target ≤ 0.15 s.",
    ]
    if bad:
        table += ["", "Exit codes other than 0: " + "; ".join(bad)]
    if not args.no_scaling:
        table += ["", "Scaling of `rtqa check` (median of 3 after a warm-up):", "", *scaling(root, 3)]
    text = "\n".join(table) + "\n"
    print(text)
    if args.readme:
        readme = Path(args.readme)
        old = readme.read_text(encoding="utf-8")
        if START in old and END in old:
            new = old[: old.index(START) + len(START)] + "\n" + text + old[old.index(END) :]
        else:
            new = old.rstrip("\n") + "\n\n" + START + "\n" + text + END + "\n"
        readme.write_text(new, encoding="utf-8")
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
