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
