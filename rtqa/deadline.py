"""The time budget of one plan: a deadline that ends a plan taking too long, never the batch.

Why a time budget
-----------------
Every input that makes rtqa slow is refused on its size where a size can be known beforehand
(rtqa/dvh/budget.py), and every quadratic step on contours is indexed. What is left is the input
nobody thought of; for it, each plan has a wall-clock budget, :data:`DEFAULT_SECONDS` (300 s)
unless ``rtqa check --max-seconds`` (or ``RTQA_MAX_SECONDS``, which the option sets so that worker
processes inherit it) says otherwise. A plan over budget becomes a not-evaluable report that says
so, and the batch goes on with the next plan.

How it stops a plan
-------------------
In the main thread of a process (``rtqa check`` alone or ``--workers N``: a process pool runs each
plan in a worker's main thread) a ``SIGALRM`` timer raises :class:`TimeBudgetExceeded` at the
next Python instruction, wherever the plan is. In other threads (a Dask worker's executor)
signals cannot be used: the long loops of the readers, the geometry and the DVH engine call
:func:`check_time` between steps instead. Neither interrupts one long call into compiled code
(one numpy operation, one shapely operation on a huge polygon, one zlib inflate): the plan stops
when that call returns. The size checks of the budget keep such calls short.

:class:`TimeBudgetExceeded` derives from ``BaseException``, as ``KeyboardInterrupt`` does, so that
no ``except Exception`` or ``except RtqaError`` on the way (a reader turning a parse error into an
input error, say) can swallow it or give it another name.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SECONDS_ENV = "RTQA_MAX_SECONDS"
DEFAULT_SECONDS = 300.0


class TimeBudgetExceeded(BaseException):
    """A plan ran past its time budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"not evaluated: checking this plan took more than {seconds:g} s, its time budget "
            f"(raise it with --max-seconds or {SECONDS_ENV}); the other plans are checked"
        )


def parse_seconds(text: str) -> float:
    """A time budget in seconds from text; 0 means no budget.

    Raises
    ------
    ValueError
        Not a finite number of seconds >= 0.

    Examples
    --------
    >>> parse_seconds("300"), parse_seconds("0.5")
    (300.0, 0.5)
    """
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: expected a number of seconds >= 0 (0: no time budget)")
    return value


def configured_seconds() -> float:
    """The budget in force: ``RTQA_MAX_SECONDS`` when set, else :data:`DEFAULT_SECONDS`
    (a malformed value is refused by the CLI option; here it falls back to the default)."""
    text = os.environ.get(SECONDS_ENV)
    if not text:
        return DEFAULT_SECONDS
    try:
        return parse_seconds(text)
    except ValueError:
        return DEFAULT_SECONDS


_local = threading.local()


def check_time() -> None:
    """Raise :class:`TimeBudgetExceeded` when the current plan's deadline has passed (no-op
    outside a budget). Long loops call it between steps.

    Raises
    ------
    TimeBudgetExceeded
        The deadline set by :func:`time_budget` has passed.
    """
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise TimeBudgetExceeded(_local.seconds)


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Run the body under a deadline of ``seconds`` (0: none); see the module docstring.

    Raises
    ------
    TimeBudgetExceeded
        From the body, when the deadline passes.
    """
    if seconds <= 0:
        yield
        return
    armed = threading.current_thread() is threading.main_thread()
    state = {"armed": False}
    installed = False
    previous = None

    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        # only while this budget runs: a late alarm reaching the handler after the body ended
        # does nothing
        if state["armed"] and getattr(_local, "deadline", None) is not None:
            raise TimeBudgetExceeded(seconds)

    # everything is armed inside the try: an alarm of a short budget can land as soon as the
    # timer is set (the handler runs at the next check for signals), and the deadline and the
    # handler must then be taken back all the same; left behind, the deadline of one plan
    # ended the next plan run without a budget (seen once under load with a 1 ms budget)
    try:
        _local.deadline, _local.seconds = time.monotonic() + seconds, seconds
        if armed:
            previous = signal.signal(signal.SIGALRM, on_alarm)
            installed = True
            state["armed"] = True
            signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        _local.deadline = None
        state["armed"] = False
        if installed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
