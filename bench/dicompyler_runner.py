"""Run dicompyler-core 0.5.6 on DVH jobs; executed by the reference interpreter (pydicom < 3).

Reads a JSON list of jobs on stdin: {"rs", "rd", "roi", "mode": "default"|"interp",
"repeats", optional "profile": false (no peak-memory run), optional "statistics": names such
as "D99" or "D0.03cc"}; writes a JSON list of results on stdout: median time, peak traced
memory and the metrics dicompyler-core reports. Kept free of rtqa imports: it runs in another environment.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import tracemalloc
import warnings

from dicompylercore import dvhcalc

warnings.simplefilter("ignore")


def _value(dvh, name):
    try:
        v = getattr(dvh, name)
    except Exception:
        return None
    v = getattr(v, "value", v)
    return None if v is None else float(v)


def _statistic(dvh, name):
    try:
        v = dvh.statistic(name)
    except Exception:
        return _value(dvh, name)
    v = getattr(v, "value", v)
    return None if v is None else float(v)


def run(job):
    kwargs = {}
    if job["mode"] == "interp":
        # dicompyler-core's documented interpolation options, at an eighth of the dose pixel
        kwargs = {
            "interpolation_resolution": job["pixel_mm"] / 8,
            "interpolation_segments_between_planes": 2,
            "use_structure_extents": True,
        }
    times = []
    dvh = None
    for _ in range(job.get("repeats", 3)):
        t0 = time.perf_counter()
        dvh = dvhcalc.get_dvh(job["rs"], job["rd"], job["roi"], **kwargs)
        times.append(time.perf_counter() - t0)
    peak = 0
    if job.get("profile", True):
        tracemalloc.start()  # one more run for the peak: tracemalloc slows the timed runs
        dvhcalc.get_dvh(job["rs"], job["rd"], job["roi"], **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    out = {
        "time_s": statistics.median(times),
        "peak_mb": peak / 2**20,
        "volume_cc": float(dvh.volume),
        "mean_gy": float(dvh.mean),
        "min_gy": float(dvh.min),
        "max_gy": float(dvh.max),
    }
    for name in job.get("statistics", ("D98", "D95", "D50", "D2", "D2cc")):
        out[name] = _statistic(dvh, name)
    return out


if __name__ == "__main__":
    jobs = json.load(sys.stdin)
    json.dump([run(j) for j in jobs], sys.stdout)
