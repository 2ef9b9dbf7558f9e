"""Benchmark: plans per minute that ``rtqa listen`` receives, checks and records.

    python bench/bench_listen.py [--plans N] [--senders K] [--out FILE.md]

Writes N copies of the demo plan (fixtures/demo/liver_clean: RT Plan, RT Structure Set of
2.4 MB, RT Dose of 2.4 MB) under N patient IDs, starts ``rtqa listen`` as a process (SQLite
ledger, JSON and text reports, settle 0.5 s), and sends them with dcmtk's ``storescu`` (one
association per plan, K senders at once), or with pynetdicom's SCU when dcmtk is absent.
It reports the wall time until every plan is received (the last association released) and
until every plan is checked and recorded in the ledger, as plans per minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fixtures" / "demo" / "liver_clean"


def write_plans(root: Path, n: int) -> list[list[str]]:
    sets = []
    for i in range(n):
        folder = root / f"P{i:03d}"
        folder.mkdir(parents=True)
        for f in sorted(DEMO.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            ds.PatientID = f"BENCH-{i:03d}"
            ds.PatientName = f"BENCH^{i:03d}"
            ds.save_as(folder / f.name)
        sets.append(sorted(str(p) for p in folder.iterdir()))
    return sets


def dcmtk_storescu() -> str | None:
    for d in (*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"):
        path = shutil.which("storescu", path=d)
        if path and "dcmtk" in subprocess.run([path, "--version"], capture_output=True, text=True).stdout.lower():
            return path
    return None


def send_dcmtk(storescu: str, port: int, files: list[str]) -> None:
    subprocess.run([storescu, "-aet", "TPS", "-aec", "RTQA", "127.0.0.1", str(port), *files], check=True, timeout=300)


def send_pynetdicom(port: int, files: list[str]) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import RTDoseStorage, RTPlanStorage, RTStructureSetStorage

    ae = AE(ae_title="TPS")
    for cls in (RTPlanStorage, RTStructureSetStorage, RTDoseStorage):
        ae.add_requested_context(cls, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title="RTQA")
    for f in files:
        assoc.send_c_store(f)
    assoc.release()


def count(ledger: Path) -> int:
    try:
        with sqlite3.connect(ledger) as db:
            return int(db.execute("SELECT count(*) FROM submissions").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", type=int, default=12)
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = write_plans(root / "plans", args.plans)
        ledger = root / "ledger.db"
        log = root / "node.log"
        cmd = [
            sys.executable, "-m", "rtqa", "listen", "--port", "0", "--bind", "127.0.0.1", "--ae-title", "RTQA",
            "--spool", str(root / "spool"), "--ledger", str(ledger), "--output", str(root / "reports"),
            "--allow", "TPS=Bench", "--settle", "0.5",
        ]  # fmt: skip
        with open(log, "w") as fh:
            node = subprocess.Popen(cmd, stderr=fh, cwd=ROOT)
            try:
                port = None
                deadline = time.monotonic() + 60
                while port is None and time.monotonic() < deadline:
                    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text())
                    port = int(m.group(1)) if m else None
                    time.sleep(0.1)
                assert port is not None, log.read_text()
                storescu = dcmtk_storescu()
                client = "dcmtk storescu" if storescu else "pynetdicom"
                t0 = time.monotonic()
                with ThreadPoolExecutor(args.senders) as pool:
                    if storescu:
                        list(pool.map(lambda files: send_dcmtk(storescu, port, files), sets))
                    else:
                        list(pool.map(lambda files: send_pynetdicom(port, files), sets))
                received = time.monotonic() - t0
                while count(ledger) < args.plans and time.monotonic() - t0 < 1800:
                    time.sleep(0.1)
                recorded = time.monotonic() - t0
                assert count(ledger) == args.plans, log.read_text()
            finally:
                node.send_signal(signal.SIGTERM)
                node.wait(timeout=120)
    n = args.plans
    lines = [
        f"## rtqa listen: {n} plans (demo liver plan, 4.9 MB each) from {args.senders} senders ({client}), "
        f"{os.cpu_count()} CPUs",
        "",
        "| stage | wall time | plans per minute |",
        "|---|---|---|",
        f"| received (last association released) | {received:.1f} s | {60 * n / received:.0f} |",
        f"| received, checked and recorded in the ledger | {recorded:.1f} s | {60 * n / recorded:.0f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
