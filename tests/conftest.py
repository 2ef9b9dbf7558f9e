"""Shared fixtures: synthetic cases are generated once per test run into a temp folder (once for
all pytest-xdist workers of the run, which the default options start: see pyproject.toml).

``RTQA_FIXTURE_TREES=DIR`` reuses trees generated beforehand (``DIR/liver`` by
``python -m fixtures.generate DIR/liver --variants``, ``DIR/phantoms`` by ``--phantoms``):
the mutation run (tox -e mutation) starts pytest once per mutant and cannot afford to
regenerate them each time. Tests only read these trees; a test that changes a case copies it.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from hypothesis import settings

from fixtures import cases, nelms

# the throwaway PostgreSQL server and the ledger URLs of the ledger tests
pytest_plugins = ["tests.ledger_fixtures"]

# CI (CI=true) runs the property tests on a fixed, reproducible set of examples, so that a
# submission's CI result does not depend on the draw; developers' runs keep exploring new ones
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
_PREBUILT = os.environ.get("RTQA_FIXTURE_TREES")

# The slowest tests (over about 5 s each, or setting up a shared tree, on 2 idle cores;
# measured with --durations=40): marked ``slow``, so that a developer may leave them out while
# iterating (-m "not slow and not crosscheck and not browser"). The README's test command runs them.
SLOW_TESTS = (
    "tests/test_dvh_accuracy.py::test_liver_case_matches_generator_truth",
    "tests/test_ledger_office.py::test_office_flow",
    "tests/test_verdict_eligibility.py::test_child_pugh_c10_heads_the_text_report_as_ineligible",
    "tests/test_batch.py::test_html_index_summarises_per_institution",
    "tests/test_batch.py::test_a_dozen_patients_one_corrupt_file",
    "tests/test_batch.py::test_same_audit_on_a_local_dask_cluster",
    "tests/test_batch.py::test_run_batch_reports_progress_in_order",
    "tests/test_report_cells.py::test_the_html_index_counts_each_institution_by_verdict",
    "tests/test_report_cells.py::test_rules_that_do_not_apply_are_listed_in_csv_and_html",
    "tests/test_hostile_round2.py::test_a_plan_out_of_memory_is_its_own_report_and_the_batch_goes_on",
    "tests/test_verdicts.py::test_incomplete_plan_has_its_own_headline_and_column",
    "tests/test_output_paths.py::test_several_plans_into_a_new_folder",
    "tests/test_node.py::test_the_same_files_sent_twice_are_one_submission",
    "tests/test_node_refusals.py::test_four_associations_at_once",
    "tests/test_node_dcmtk.py::test_storescu_sends_the_demo_plan_and_the_ledger_holds_the_verdict_of_rtqa_check",
    "tests/test_node_dcmtk.py::test_sigterm_keeps_unchecked_files_for_the_next_start",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_xdist_auto_num_workers(config: pytest.Config):  # type: ignore[no-untyped-def]
    """``-n auto`` starts one worker more than xdist's count of cores (--maxprocesses still caps it).

    Part of the suite waits rather than computes: the throwaway PostgreSQL server, the DICOM node
    and storescu, the Dask cluster and process pools starting, a worker waiting for a part of a
    shared tree that another is writing. With one worker per core that time left a core idle: on
    2 idle cores the whole suite took 413 s with 2 workers and 346 s with 3, for the same CPU time
    (663 s and 671 s). ``PYTEST_XDIST_AUTO_NUM_WORKERS`` is still taken as given."""
    count: int = yield
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return count
    return count + 1


_last_module: list[object] = [None]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each test module starts with the heap the earlier ones left collected, then frozen.

    A worker's heap grows as the suite goes (every library imported, session fixtures, caches),
    and every plan rtqa checks ends with a full garbage collection (rtqa/discovery/batch.py,
    ``_guarded``), as do Python's own collections of the oldest generation: late in a run one
    took about 0.3 s, a plan's time again on a small one (50 plans of
    tests/test_batch_stream.py took 17 s in a full run, 2 s alone). ``gc.freeze`` leaves what
    is alive at a module's start out of later collections; what the module creates is
    collected as before. Freed at the end of the session (``pytest_sessionfinish``).
    """
    module = getattr(item, "module", None)
    if module is not _last_module[0]:
        _last_module[0] = module
        if os.environ.get("RTQA_TEST_NO_GC_FREEZE") != "1":
            gc.collect()
            gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    gc.unfreeze()


def _shared_tree_by_parts(
    tmp_path_factory: pytest.TempPathFactory, name: str, parts: list[tuple[str, Callable[[str], None]]]
) -> Path:
    """A tree written once per test run in independent parts, which the pytest-xdist workers that
    need it write together: each takes the parts no one has taken (a lock per part, tried
    without waiting), then waits for the parts others are writing. A part is complete only
    once its marker exists. (Written by one worker the liver tree took 30-55 s, while the other
    worker, needing it too, waited.)"""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / f"shared-{name}"
    out.mkdir(exist_ok=True)

    def write(i: int, part: str, writer: Callable[[str], None], wait: bool) -> bool:
        done = root / f"shared-{name}-{i}.done"
        if done.exists():
            return True
        lock = FileLock(str(root / f"shared-{name}-{i}.lock"))
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return False
        try:
            if not done.exists():
                writer(str(out))
                done.touch()
        finally:
            lock.release()
        return True

    # start at a different part in each worker, so that workers rarely meet
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "2"))
    start = (int(worker[2:]) if worker[2:].isdigit() else 0) % workers * len(parts) // workers
    order = [(i, *parts[i]) for i in [*range(start, len(parts)), *range(start)]]
    left = [(i, part, writer) for i, part, writer in order if not write(i, part, writer, wait=False)]
    for i, part, writer in left:
        write(i, part, writer, wait=True)
    return out


def _liver_parts() -> list[tuple[str, Callable[[str], None]]]:
    parts: list[tuple[str, Callable[[str], None]]] = [
        (spec.name, functools.partial(cases.write_liver_case, spec=spec)) for spec in cases.liver_variants()
    ]
    parts.append(("sequential_boost", cases.write_sequential_boost))
    return parts


@pytest.fixture(scope="session")
def liver_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every liver variant and the sequential boost, generated once (truth beside each case)."""
    if _PREBUILT:
        return Path(_PREBUILT) / "liver"
    return _shared_tree_by_parts(tmp_path_factory, "liver", _liver_parts())


@pytest.fixture(scope="session")
def phantom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _PREBUILT:
        return Path(_PREBUILT) / "phantoms"
    parts: list[tuple[str, Callable[[str], None]]] = [
        (
            cases.phantom_case_name(shape, dose, spacing, grid),
            functools.partial(_write_phantom, shape=shape, dose=dose, spacing=spacing, grid=grid),
        )
        for shape in cases.PHANTOM_SHAPES
        for dose in cases.phantoms.DOSES
        for spacing in cases.PHANTOM_SPACINGS
        for grid in cases.PHANTOM_GRIDS
    ]
    return _shared_tree_by_parts(tmp_path_factory, "phantoms", parts)


def _write_phantom(out: str, *, shape: str, dose: str, spacing: float, grid: float) -> None:
    cases.write_phantom_case(out, shape, dose, spacing, grid)


def case(tree: Path, name: str) -> str:
    path = os.path.join(tree, name)
    assert os.path.isdir(path), path
    return path


@pytest.fixture(scope="module")
def rsrd(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder with the Nelms-like sphere on 2 mm contours (RS) and a 2 mm grid of a linear
    dose along SI (RD), without a plan: the end-cap tests' structure set and dose."""
    folder = tmp_path_factory.mktemp("rsrd")
    nelms.write_structure(str(folder), "Sphere", 2.0)
    nelms.write_dose_grid(str(folder), "2", "SI")
    return str(folder)
