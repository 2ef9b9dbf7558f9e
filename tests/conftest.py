"""Shared fixtures: synthetic cases are generated once per test run into a temp folder (once for
all pytest-xdist workers of the run, which the default options start: see pyproject.toml).

``RTQA_FIXTURE_TREES=DIR`` reuses trees generated beforehand (``DIR/liver`` by
``python -m fixtures.generate DIR/liver --variants``, ``DIR/phantoms`` by ``--phantoms``):
the mutation run (tox -e mutation) starts pytest once per mutant and cannot afford to
regenerate them each time. Tests only read these trees; a test that changes a case copies it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import settings

from fixtures import cases

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


def _shared_tree(tmp_path_factory: pytest.TempPathFactory, name: str, write: Callable[[str], None]) -> Path:
    """A tree written once per test run, shared by every pytest-xdist worker of that run.

    The workers of one run share the parent of their base temp folder; the first to take the
    lock writes the tree, the others wait for it and read it. A tree is complete only once its
    marker exists, so a writer that died leaves nothing another worker would trust.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / f"shared-{name}"
    done = root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            write(str(out))
            done.touch()
    return out


def _write_liver(out: str) -> None:
    for spec in cases.liver_variants():
        cases.write_liver_case(out, spec)
    cases.write_sequential_boost(out)


@pytest.fixture(scope="session")
def liver_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every liver variant and the sequential boost, generated once (truth beside each case)."""
    if _PREBUILT:
        return Path(_PREBUILT) / "liver"
    return _shared_tree(tmp_path_factory, "liver", _write_liver)


@pytest.fixture(scope="session")
def phantom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _PREBUILT:
        return Path(_PREBUILT) / "phantoms"
    return _shared_tree(tmp_path_factory, "phantoms", cases.write_phantoms)


def case(tree: Path, name: str) -> str:
    path = os.path.join(tree, name)
    assert os.path.isdir(path), path
    return path
