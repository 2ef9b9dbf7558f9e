"""Streaming batches: reports come back as plans finish, with a bounded number in flight."""

from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from rtqa.case import PlanSet
from rtqa.discovery.batch import iter_batch, run_batch
from rtqa.protocol.loader import load_protocol


def _broken(i: int) -> PlanSet:
    # a plan set discovery already found unusable: the worker reports it without reading files
    return PlanSet(patient_id=f"P{i:03d}", plans=(), structure_set=None, doses=(), problems=(f"problem {i}",))


class _CountingExecutor(Executor):
    """Runs each job when it is submitted and counts the submissions."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        fut: Future[Any] = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def test_every_plan_is_reported_once_at_its_position():
    protocol = load_protocol()
    plan_sets = [_broken(i) for i in range(23)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        streamed = dict(iter_batch(plan_sets, protocol, executor=pool, in_flight=4))
    assert sorted(streamed) == list(range(23))
    assert all(streamed[i].patient_id == f"P{i:03d}" for i in range(23))
    ordered = run_batch(plan_sets, protocol, executor=ThreadPoolExecutor(max_workers=2))
    assert [r.patient_id for r in ordered] == [f"P{i:03d}" for i in range(23)]
    assert [r.errors for r in ordered] == [streamed[i].errors for i in range(23)]


def test_plans_in_flight_stay_bounded():
    protocol = load_protocol()
    executor = _CountingExecutor()
    received = 0
    for _, _report in iter_batch((_broken(i) for i in range(50)), protocol, executor=executor, in_flight=5):
        # never more than five plans submitted beyond those already handed over
        assert executor.submitted <= received + 5
        received += 1
    assert received == executor.submitted == 50
