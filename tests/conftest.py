"""Shared fixtures: synthetic cases are generated once per test session into a temp folder.

``RTQA_FIXTURE_TREES=DIR`` reuses trees generated beforehand (``DIR/liver`` by
``python -m fixtures.generate DIR/liver --variants``, ``DIR/phantoms`` by ``--phantoms``):
the mutation run (tox -e mutation) starts pytest once per mutant and cannot afford to
regenerate them each time. Tests only read these trees; a test that changes a case copies it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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


@pytest.fixture(scope="session")
def liver_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every liver variant and the sequential boost, generated once (truth beside each case)."""
    if _PREBUILT:
        return Path(_PREBUILT) / "liver"
    out = tmp_path_factory.mktemp("liver")
    for spec in cases.liver_variants():
        cases.write_liver_case(str(out), spec)
    cases.write_sequential_boost(str(out))
    return out


@pytest.fixture(scope="session")
def phantom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _PREBUILT:
        return Path(_PREBUILT) / "phantoms"
    out = tmp_path_factory.mktemp("phantoms")
    cases.write_phantoms(str(out))
    return out


def case(tree: Path, name: str) -> str:
    path = os.path.join(tree, name)
    assert os.path.isdir(path), path
    return path
