"""Issue 9, bounded time and memory: hostile submissions get a verdict, not a hang or a blow-up.

The bombs run ``rtqa`` in a subprocess under an address-space limit (4 GiB) and a time-out, so
that a regression fails the test instead of taking the machine down: before the fix, each of
them blocked forever or allocated 3-13 GB (figures in issue 9; bench/stress_bombs.py measures
them).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_edits import BOMB_EDITS, add_specials, demo_copy, edit, nest, write_deflate_bomb
from pydicom.dataset import Dataset

from rtqa.discovery.grouping import discover, walk_files
from rtqa.dvh.budget import (
    DEFAULT_BUDGET_BYTES,
    estimate_dvh_work,
    parse_size,
    require_dvh_budget,
)
from rtqa.errors import DoseGridError
from rtqa.io.common import excerpt

ADDRESS_LIMIT = 4 * 1024**3
TIME_LIMIT_S = 240  # far above a normal check of the demo plan (seconds), far below a hang


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))


def run_rtqa(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "rtqa", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            preexec_fn=_limit,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rtqa {' '.join(args)} did not finish within {TIME_LIMIT_S} s")


@pytest.mark.parametrize("name", sorted(BOMB_EDITS))
def test_bomb_doses_are_refused_naming_the_attribute_and_the_json_report_is_written(tmp_path, name):
    which, change, attribute = BOMB_EDITS[name]
    case = demo_copy(tmp_path / "case")
    edit(case, which, change)
    done = run_rtqa(["check", "case", "--format", "json"], tmp_path)
    assert done.returncode == 4 | 8, done.stderr  # not evaluable, so its eligibility is unknown
    report = json.loads(done.stdout)
    (plan,) = report["plans"]
    assert plan["grade"] == "not_evaluable"
    (error,) = plan["errors"]
    assert attribute in error["message"]
    assert "RD_PLAN.dcm" in error["message"]
    # a message quotes at most a short excerpt of any value (the UN vector held 11.6 MB)
    assert len(error["message"]) < 600


def test_a_budget_refusal_says_what_it_would_need_and_how_to_raise_it(tmp_path):
    which, change, _ = BOMB_EDITS["PixelSpacing 0.25 mm"]
    case = demo_copy(tmp_path / "case")
    edit(case, which, change)
    done = run_rtqa(["dvh", "case", "--format", "json"], tmp_path)
    assert done.returncode == 4, done.stderr
    (plan,) = json.loads(done.stdout)["plans"]
    assert "GiB" in plan["error"] and "--max-memory" in plan["error"] and "PixelSpacing" in plan["error"]


def test_fifos_device_links_and_link_loops_are_skipped_not_opened(tmp_path):
    case = demo_copy(tmp_path / "case")
    specials = add_specials(case)
    done = run_rtqa(["check", "case", "--format", "json"], tmp_path)
    assert done.returncode == 4 | 8, done.stderr  # no clinical CSV: child-pugh unknown, eligibility unknown
    report = json.loads(done.stdout)
    assert len(report["plans"]) == 1
    for path in specials:
        assert f"skipped case/{path.name}" in done.stderr


def test_discovery_lists_what_it_skipped_with_the_reason(tmp_path):
    case = demo_copy(tmp_path / "case")
    fifo, zero, dangling, loop = add_specials(case)
    found = discover([case])
    reasons = dict(found.skipped)
    assert "FIFO" in reasons[str(fifo)]
    assert "character device" in reasons[str(zero)]
    assert "leads nowhere" in reasons[str(dangling)]
    assert "not followed" in reasons[str(loop)]
    assert len(found.plan_sets) == 1


def test_a_tree_1500_folders_deep_is_walked(tmp_path):
    case = demo_copy(tmp_path / "case")
    root = nest(case, tmp_path / "deep", 1500)
    try:
        files, skipped = walk_files([root])
    finally:  # shutil.rmtree (and pytest's clean-up) recurse once per level
        subprocess.run(["rm", "-rf", str(root)], check=True)
    assert sorted(os.path.basename(f) for f in files) == ["RD_PLAN.dcm", "RP.dcm", "RS.dcm"]
    assert skipped == []


def test_a_deflated_file_that_inflates_beyond_the_budget_is_refused_without_inflating_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RTQA_MAX_MEMORY", "64M")  # a quarter, 16 MiB, may be inflated
    case = demo_copy(tmp_path / "case")
    bomb = write_deflate_bomb(case / "RD_bomb.dcm", 40_000_000)
    assert bomb.stat().st_size < 200_000
    found = discover([case])
    (unassigned,) = [u for u in found.unassigned if u.path == str(bomb)]
    assert "inflates to more than 16.0 MiB" in unassigned.reason
    assert "TransferSyntaxUID" in unassigned.reason


def test_the_lattice_estimate_follows_the_extent_and_spacing():
    # closed form: rows = floor(extent_y / dy) + 2, cols = floor(extent_x / dx) + 2, one lattice
    # per slab; sub-slabs per slab = ceil(thickness / frame step)
    work = estimate_dvh_work(
        extent_x_mm=300,
        extent_y_mm=200,
        slab_thicknesses_mm=[3.0] * 100,
        ring_y_travel_mm=0,
        ring_edges=0,
        dx_mm=0.25,
        dy_mm=0.25,
        line_spacing_mm=0.025,
        max_subslab_mm=3.0,
        max_dose_gy=60,
        bin_width_gy=0.01,
    )
    assert work.lattice_cells == 1202 * 802 * 100
    assert work.samples == work.lattice_cells
    assert work.bins == 6002
    assert work.limited_by.startswith("PixelSpacing")
    with pytest.raises(DoseGridError, match=r"RD\.dcm: PixelSpacing \(0028,0030\): the DVH of 'Body' would need"):
        require_dvh_budget(work, structure="Body", path="RD.dcm", budget_bytes=DEFAULT_BUDGET_BYTES)


def test_thin_frames_are_blamed_on_the_frame_offsets():
    work = estimate_dvh_work(
        extent_x_mm=100,
        extent_y_mm=100,
        slab_thicknesses_mm=[3.0] * 50,
        ring_y_travel_mm=0,
        ring_edges=0,
        dx_mm=3,
        dy_mm=3,
        line_spacing_mm=0.3,
        max_subslab_mm=1e-4,
        max_dose_gy=60,
        bin_width_gy=0.01,
    )
    assert work.samples == 35 * 35 * 50 * 30000
    assert work.limited_by.startswith("GridFrameOffsetVector")


@pytest.mark.parametrize(("text", "expected"), [("2G", 2 * 1024**3), ("512M", 512 * 1024**2), ("8GiB", 8 * 1024**3)])
def test_memory_sizes_parse_in_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0"])
def test_memory_sizes_that_are_not_sizes_are_refused(text):
    with pytest.raises(ValueError, match=r"size|positive"):
        parse_size(text)


def test_max_memory_is_refused_when_not_a_size(tmp_path):
    from click.testing import CliRunner

    from rtqa.cli import cli

    result = CliRunner().invoke(cli, ["check", str(tmp_path), "--max-memory", "lots"])
    assert result.exit_code == 2
    assert "'lots' is not a size" in result.output


def test_the_budget_comes_from_rtqa_max_memory(tmp_path, monkeypatch):
    from rtqa.dvh.budget import configured_budget_bytes

    monkeypatch.setenv("RTQA_MAX_MEMORY", "16G")
    assert configured_budget_bytes() == 16 * 1024**3


def test_excerpts_are_short_and_say_the_full_length():
    quoted = excerpt(b"\x07" * 11_600_000)
    assert len(quoted) < 120
    assert "46400003 characters" in quoted  # repr of the bytes: b'' and four characters per byte


def test_a_file_larger_than_a_quarter_of_the_budget_is_not_parsed_whole(tmp_path, monkeypatch):
    from rtqa.errors import InputError
    from rtqa.io import read_plan

    def pad(ds: Dataset) -> None:
        ds.add_new(0x7FE10010, "LO", "RTQA")
        ds.add_new(0x7FE11000, "OB", bytes(3 * 1024**2))

    case = demo_copy(tmp_path / "case")
    plan = edit(case, "plan", pad)
    monkeypatch.setenv("RTQA_MAX_MEMORY", "8M")  # a quarter: 2 MiB
    with pytest.raises(InputError, match=r"RP\.dcm: the file is 3\.0 MiB, more than 2\.0 MiB"):
        read_plan(plan)
