"""Benchmark: the ledger's cost per plan over ``rtqa check``, and ``rtqa stats`` at scale.

    python bench/bench_ledger.py [--submissions 1000] [--stats-submissions 10000] [--no-postgres]

Checks one synthetic liver patient once (the check itself is what ``rtqa check`` costs without a
ledger), then on SQLite and on a throwaway PostgreSQL cluster (initdb/pg_ctl, as in the tests):

* ingest: 1,000 submissions, each recorded in its own transaction as a ``rtqa check`` of one
  plan would record it (lock, idempotency look-up, version look-up, the submission row and its
  36 finding rows): median and 95th percentile per plan; plus the same 1,000 plans as one
  batch (one ``rtqa check`` of 1,000 plans), per plan;
* the fixed cost of one ``rtqa check --ledger`` run: importing the database layer (subprocess,
  best of 5) and opening the ledger with its schema check (median of 20);
* stats: a ledger of 10,000 submissions (8,000 patients, so 2,000 resubmissions; 5
  institutions; a CORD_MAX deviation on every 10th; 500 decisions), ``compute_stats`` median of
  5, and ``rtqa stats`` end to end (a new process, best of 3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtqa.ledger.db import open_ledger
from rtqa.ledger.record import record_result
from rtqa.ledger.review import add_decision
from rtqa.ledger.stats import compute_stats
from rtqa.protocol.limits import Grade
from rtqa.report.model import CheckResult
from tests.ledger_cases import check, make_patients


def one_plan(root: Path) -> tuple[CheckResult, float]:
    from fixtures import cases

    src = root / "src"
    cases.write_liver_case(str(src), cases.liver_variants()[0])
    tree, clinical = make_patients(src, root, [("B1", "liver_clean", "Centre 0")])
    t0 = time.perf_counter()
    result = check([tree], clinical)
    return result, time.perf_counter() - t0


def variant(result: CheckResult, i: int, patients: int) -> CheckResult:
    r = result.reports[0]
    findings = r.findings
    if i % 10 == 0:
        findings = tuple(
            replace(f, grade=Grade.DEVIATION_UNACCEPTABLE, value=55.0) if f.rule == "CORD_MAX" else f for f in findings
        )
    # a resubmission differs by its dose file: a new checksum
    inputs = tuple(replace(x, sha256=f"{i:064x}") if x.modality == "RTDOSE" else x for x in r.inputs)
    report = replace(
        r, patient_id=f"B{i % patients:05d}", institution=f"Centre {i % 5}", findings=findings, inputs=inputs
    )
    return replace(result, reports=(report,))


def ingest(url: str, result: CheckResult, n: int) -> dict[str, float]:
    ledger = open_ledger(url, create=True)
    times, cpu = [], []
    for i in range(n):
        one = variant(result, i, n)
        t0, c0 = time.perf_counter(), time.process_time()
        record_result(ledger, one)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    batch = replace(result, reports=tuple(variant(result, n + i, 10**9).reports[0] for i in range(n)))
    t0 = time.perf_counter()
    record_result(ledger, batch)
    batch_s = time.perf_counter() - t0
    opens = []
    for _ in range(20):
        t0 = time.perf_counter()
        open_ledger(url).dispose()
        opens.append(time.perf_counter() - t0)
    ledger.dispose()
    times.sort()
    return {
        "median_ms": 1000 * statistics.median(times),
        "cpu_median_ms": 1000 * statistics.median(cpu),
        "p95_ms": 1000 * times[int(0.95 * len(times))],
        "batch_per_plan_ms": 1000 * batch_s / n,
        "open_ms": 1000 * statistics.median(opens),
    }


def fill(url: str, result: CheckResult, n: int, patients: int) -> None:
    ledger = open_ledger(url, create=True)
    chunk = 1000
    for start in range(0, n, chunk):
        reports = tuple(variant(result, i, patients).reports[0] for i in range(start, min(n, start + chunk)))
        record_result(ledger, replace(result, reports=reports))
    for sid in range(1, n + 1, n // 500):
        add_decision(ledger, sid, action="accept_plan", reason="bench", reviewer="bench")
    ledger.dispose()


def stats_times(url: str) -> dict[str, float]:
    ledger = open_ledger(url)
    runs, cpu = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        s = compute_stats(ledger)
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ledger.dispose()
    cli = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rtqa", "stats", "--ledger", url], check=True, capture_output=True)
        cli.append(time.perf_counter() - t0)
    return {
        "compute_stats_ms": 1000 * statistics.median(runs),
        "cpu_ms": 1000 * statistics.median(cpu),
        "cli_s": min(cli),
        "plans": s.total.plans,
    }


def import_cost() -> float:
    def best(code: str) -> float:
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            runs.append(time.perf_counter() - t0)
        return min(runs)

    base = best("import rtqa.cli")
    return 1000 * (best("import rtqa.cli, rtqa.ledger.record, rtqa.ledger.db") - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--stats-submissions", type=int, default=10000)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result, check_s = one_plan(root)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"rtqa check of one plan without a ledger (in process): {check_s * 1000:.0f} ms")
        print(f"importing the database layer: {import_cost():.0f} ms per rtqa check run")
        urls = {"sqlite": f"sqlite:///{root / 'ingest.db'}"}
        stats_urls = {"sqlite": f"sqlite:///{root / 'stats.db'}"}
        server = None
        if not args.no_postgres:
            from tests.ledger_fixtures import PgServer

            server = PgServer()
            server.start()
            urls["postgresql"] = server.new_database()
            stats_urls["postgresql"] = server.new_database()
        try:
            for name, url in urls.items():
                r = ingest(url, result, args.submissions)
                print(
                    f"{name}: ingest {args.submissions} submissions, one per transaction: "
                    f"median {r['median_ms']:.2f} ms (rtqa's CPU {r['cpu_median_ms']:.2f} ms), "
                    f"p95 {r['p95_ms']:.2f} ms per plan; as one batch {r['batch_per_plan_ms']:.2f} ms per plan; "
                    f"opening the ledger {r['open_ms']:.1f} ms per run"
                )
            for name, url in stats_urls.items():
                t0 = time.perf_counter()
                fill(url, result, args.stats_submissions, int(args.stats_submissions * 0.8))
                filled = time.perf_counter() - t0
                s = stats_times(url)
                print(
                    f"{name}: stats over {args.stats_submissions} submissions ({s['plans']:.0f} plans; filled in "
                    f"{filled:.1f} s): compute_stats median {s['compute_stats_ms']:.0f} ms "
                    f"(rtqa's CPU {s['cpu_ms']:.0f} ms); "
                    "rtqa stats end to end "
                    f"{s['cli_s']:.2f} s"
                )
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
