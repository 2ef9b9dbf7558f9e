"""Benchmark: discovery of a 1,000-file tree and a 100-plan audit with 1 and 2 workers.

    python bench/bench_batch.py [--out FILE.md]

Builds 100 copies of the synthetic liver patient in three centre folders, each with seven CT
slices (1,000 files), times ``discover`` (headers only; median of 3) and then ``rtqa check``
end to end with ``--workers 1`` and ``--workers 2`` (wall time, one run each), and a run on two
thirds of the tree to show that time grows linearly with the number of plans.
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
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import cases
from fixtures.batch import copy_case
from rtqa.discovery.grouping import discover


def build(root: Path, n: int = 100) -> tuple[Path, Path]:
    source = cases.write_liver_case(str(root / "src"), replace(cases.liver_variants()[0], name="src", with_ct=True))
    tree = root / "tree"
    rows = ["patient_id,child_pugh,dose_algorithm"]
    for i in range(n):
        target = tree / f"centre{i % 3}" / f"p{i:03d}"
        copy_case(source, str(target), f"M{i:03d}", institution=f"Centre {i % 3}")
        (target / "CT").mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(os.path.join(source, "CT")))[:7]:
            shutil.copy(os.path.join(source, "CT", name), target / "CT" / name)
        rows.append(f"M{i:03d},A5,AAA")
    clinical = root / "clinical.csv"
    clinical.write_text("\n".join(rows) + "\n")
    return tree, clinical


def wall(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=False, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the results (markdown) here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rtqa-batch-"))
    tree, clinical = build(root)
    files = sum(len(f) for _, _, f in os.walk(tree))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        found = discover([tree])
        times.append(time.perf_counter() - t0)
    check = [
        sys.executable,
        "-m",
        "rtqa",
        "check",
        "--clinical",
        str(clinical),
        "--format",
        "json",
        "--output",
        str(root / "out.json"),
    ]
    w1 = wall([*check, "--workers", "1", str(tree)])
    w2 = wall([*check, "--workers", "2", str(tree)])
    two_thirds = wall([*check, "--workers", "1", str(tree / "centre0"), str(tree / "centre1")])
    n_two_thirds = len(os.listdir(tree / "centre0")) + len(os.listdir(tree / "centre1"))
    lines = [
        f"discover: {files} files, {len([p for p in found.plan_sets if p.plans])} plans, "
        f"median {statistics.median(times):.2f} s",
        f"rtqa check, 100 plans, --workers 1: {w1:.1f} s ({w1 / 100:.2f} s per plan)",
        f"rtqa check, 100 plans, --workers 2: {w2:.1f} s ({w1 / w2:.2f}x)",
        f"rtqa check, {n_two_thirds} plans, --workers 1: {two_thirds:.1f} s "
        f"({two_thirds / n_two_thirds:.2f} s per plan)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
