"""Run every bomb input of issues 9 and 18 through ``rtqa check`` under an address-space limit
and print the time and peak memory of each.

Usage::

    python bench/stress_bombs.py [--limit-gb 4] [--timeout 120] [--rtqa-path DIR] [--only NAME]

Each bomb is the generated demo plan with one edit (tests/hostile_edits.py, and
tests/hostile_round2.py for issue 18's inputs at the sizes of its findings), run as
``python -m rtqa check CASE --format json`` in its own subprocess under ``ulimit -v``
(RLIMIT_AS). ``--rtqa-path`` puts another checkout first on PYTHONPATH, to measure it
(e.g. an export of main before issue 9). Issue 18's inputs run beside a second, clean patient
in the same folder: the column ``plans`` says how many plans the JSON report holds (2: the
batch went on). Not part of the test run: timings belong here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pydicom  # noqa: E402
from hostile_edits import (  # noqa: E402
    BOMB_EDITS,
    FILES,
    add_specials,
    demo_copy,
    edit,
    nest,
    reidentify,
    write_deflate_bomb,
)
from hostile_round2 import (  # noqa: E402
    beam_dose_edit,
    beam_doses,
    deflated_with_pad,
    mlc_control_points,
    rx_edit,
    squares_on_cord,
    stored_dvh_items,
    zeros_file,
)
from pydicom.dataset import Dataset  # noqa: E402


def _many_rois(case: Path, count: int = 20_000) -> None:
    """``count`` extra ROIs, each one small square contour on one plane."""
    path = case / FILES["structures"]
    ds = pydicom.dcmread(path)
    frame = ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
    for n in range(1000, 1000 + count):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, f"Extra_{n}", frame
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = 4
        contour.ContourData = [0, 0, 0, 5, 0, 0, 5, 5, 0, 0, 5, 0]
        item = Dataset()
        item.ReferencedROINumber = n
        item.ContourSequence = [contour]
        ds.ROIContourSequence.append(item)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = n, n, "ORGAN"
        ds.RTROIObservationsSequence.append(obs)
    ds.save_as(path)


def _pattern_protocol(case: Path) -> list[str]:
    """A protocol whose PTV pattern is ``(a|a)*b``, and an ROI named with 40 a's."""
    rules = case.parent / "rules"
    rules.mkdir()
    for name in ("nct03535259.yaml", "tg263_aliases.yaml"):
        shutil.copy(ROOT / "rules" / name, rules / name)
    text = (rules / "nct03535259.yaml").read_text(encoding="utf-8")
    old = r"patterns: ['PTV[ _]?\d{2,4}(Gy|cGy)?', 'PTV[ _]?[pvn]\d?']"
    (rules / "nct03535259.yaml").write_text(text.replace(old, "patterns: ['(a|a)*b']"), encoding="utf-8")

    def rename(ds: Dataset) -> None:
        ds.StructureSetROISequence[-1].ROIName = "a" * 40

    edit(case, "structures", rename)
    return ["--protocol", str(rules / "nct03535259.yaml")]


ROUND2: dict[str, Callable[[Path], object]] = {
    "deflated RS, pad byte after the stream": deflated_with_pad,
    "64 MiB file of zeros in the tree": lambda case: zeros_file(case, 64 * 1024**2),
    "2,000 rings on one cord plane": lambda case: squares_on_cord(case, 2_000, one_plane=True),
    "100,000 squares over the cord": lambda case: squares_on_cord(case, 100_000, one_plane=False),
    "400 stored DVHs naming Body": lambda case: stored_dvh_items(case, 400, "Body"),
    "14 BEAM doses of 25M voxels": lambda case: beam_doses(case, 14, shape=(100, 500, 500)),
    "20 BEAM doses of 25M voxels": lambda case: beam_doses(case, 20, shape=(100, 500, 500)),
    "42,000 MLC control points": lambda case: mlc_control_points(case, 42_000),
    "BeamDose 1e308": lambda case: beam_dose_edit(case, "1e308"),
    "TargetPrescriptionDose 1e-320": lambda case: rx_edit(case, "1e-320"),
}


def build(name: str, work: Path) -> tuple[Path, list[str]]:
    """The input folder of one bomb and extra arguments for ``rtqa check``."""
    if name in ROUND2:
        ROUND2[name](demo_copy(work / "batch" / "case"))
        reidentify(demo_copy(work / "batch" / "other"), "HCC-OTHER")
        return work / "batch", []
    case = demo_copy(work / "case")
    extra: list[str] = []
    if name in BOMB_EDITS:
        which, change, _ = BOMB_EDITS[name]
        edit(case, which, change)
        return case, extra
    if name == "FIFO, /dev/zero link, link loop":
        add_specials(case)
    elif name == "1,500 nested folders":
        return nest(case, work / "deep", 1500), extra
    elif name == "deflated 3 MB -> 3 GiB":
        (case / FILES["dose"]).unlink()
        write_deflate_bomb(case / "RD_PLAN.dcm", 3 * 1024**3)
    elif name == "20,000 ROIs":
        _many_rois(case)
    elif name == "pattern (a|a)*b, 40-character ROI":
        extra = _pattern_protocol(case)
    return case, extra


BOMBS = [
    *sorted(BOMB_EDITS),
    "FIFO, /dev/zero link, link loop",
    "1,500 nested folders",
    "deflated 3 MB -> 3 GiB",
    "20,000 ROIs",
    "pattern (a|a)*b, 40-character ROI",
    *ROUND2,
]


def run(
    case: Path, extra: list[str], *, limit_bytes: int, timeout_s: float, rtqa_path: str | None
) -> dict[str, object]:
    env = dict(os.environ)
    if rtqa_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (rtqa_path, env.get("PYTHONPATH")) if p)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    # output goes to files: a full pipe would stall the child while it is being timed
    out_file, err_file = case.parent / "stdout.json", case.parent / "stderr.txt"
    start = time.perf_counter()
    with open(out_file, "wb") as out_fh, open(err_file, "wb") as err_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtqa", "check", str(case), "--format", "json", *extra],
            cwd=case.parent,
            stdout=out_fh,
            stderr=err_fh,
            preexec_fn=limit,
            env=env,
        )
    timed_out = False
    deadline = start + timeout_s
    status = rusage = None
    while True:
        pid, status_, rusage_ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status, rusage = status_, rusage_
            break
        if time.perf_counter() > deadline:
            proc.send_signal(signal.SIGKILL)
            timed_out = True
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    err = err_file.read_bytes().decode("utf-8", "replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        report = json.loads(out_file.read_bytes())
        json_ok = True
        errors = [e["message"] for p in report.get("plans", []) for e in p.get("errors", [])]
        plans = len(report.get("plans", []))
    except ValueError:
        json_ok, errors, plans = False, [], 0
    first = (errors or [line for line in err.splitlines() if line.strip()] or [""])[0]
    return {
        "exit": "timeout" if timed_out else proc.returncode,
        "seconds": seconds,
        "peak_mib": rusage.ru_maxrss / 1024 if rusage else float("nan"),
        "json": json_ok,
        "plans": plans,
        "says": first[-160:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-gb", type=float, default=4.0, help="address-space limit (ulimit -v) in GiB")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is killed")
    ap.add_argument("--rtqa-path", help="a checkout to put first on PYTHONPATH (measure another version)")
    ap.add_argument("--only", action="append", help="run only bombs whose name contains this (repeatable)")
    args = ap.parse_args(argv)
    limit = int(args.limit_gb * 1024**3)
    chosen = [b for b in BOMBS if not args.only or any(o.lower() in b.lower() for o in args.only)]
    print(f"rtqa check under ulimit -v {args.limit_gb:g} GiB, killed after {args.timeout:g} s")
    print(f"{'bomb':38} {'exit':>7} {'time s':>7} {'peak MiB':>9} {'JSON':>5} {'plans':>5}  says")
    # each bomb is built in a fresh process: a child of this one would inherit its resident
    # memory in the peak the kernel reports (Linux keeps the high-water mark across exec), and
    # building 42,000 control points with pydicom takes gigabytes
    builder = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix="rtqa-bomb-") as tmp:
            case, extra = builder.submit(build, name, Path(tmp)).result()
            r = run(case, extra, limit_bytes=limit, timeout_s=args.timeout, rtqa_path=args.rtqa_path)
            # shutil.rmtree recurses once per level: 1,500 nested folders exceed Python's stack
            subprocess.run(["rm", "-rf", tmp], check=True)
            os.makedirs(tmp)
        print(
            f"{name:38} {r['exit']!s:>7} {r['seconds']:7.1f} {r['peak_mib']:9.0f} {'yes' if r['json'] else 'no':>5} "
            f"{r['plans']:>5}  "
            f"{r['says']}",
            flush=True,
        )
    builder.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
