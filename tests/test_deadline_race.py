"""The time budget leaves nothing behind, even when its alarm lands at once (rtqa.deadline).

Seen once in a full run under load: a plan with a 1 ms budget was stopped, as it should be, and
the next plan, run with no budget at all, was then reported over a 1 ms budget. Python runs a
signal handler at the next check for signals, which can come right after the timer is set: the
handler raised before the body's ``try`` was entered, so the plan's deadline was never taken
back and ``check_time`` of the next plan found it passed.
"""

from __future__ import annotations

import signal

import pytest

from rtqa.deadline import TimeBudgetExceeded, check_time, time_budget


def test_an_alarm_as_soon_as_the_timer_is_set_leaves_no_deadline_and_no_handler(monkeypatch):
    before = signal.getsignal(signal.SIGALRM)
    real = signal.setitimer

    def set_and_ring(which: int, seconds: float, *rest: float) -> tuple[float, float]:
        out = real(which, seconds, *rest)
        if seconds > 0:  # the handler, run at the first check for signals after arming
            signal.getsignal(signal.SIGALRM)(signal.SIGALRM, None)  # type: ignore[operator]
        return out

    monkeypatch.setattr(signal, "setitimer", set_and_ring)
    with pytest.raises(TimeBudgetExceeded), time_budget(0.001):
        pytest.fail("the body must not run: the budget ended as it was set")
    monkeypatch.setattr(signal, "setitimer", real)
    check_time()  # no budget any more: nothing to raise
    with time_budget(0):
        check_time()  # a plan run without a budget is not stopped by the last one's deadline
    assert signal.getsignal(signal.SIGALRM) is before


def test_a_late_alarm_reaching_the_handler_after_the_body_does_nothing():
    with time_budget(30):
        handler = signal.getsignal(signal.SIGALRM)
    assert callable(handler)
    handler(signal.SIGALRM, None)  # the body has ended: no TimeBudgetExceeded
    check_time()
