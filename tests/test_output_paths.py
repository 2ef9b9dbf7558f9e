"""Where ``rtqa check --output`` may write (issue 9 and 12): never over an input file, never
through a symbolic link, not inside the input tree unless asked, nothing overwritten without
``--force``; several plans to one file name is a usage error (exit 2), never exit 70."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from rtqa.cli import cli
from tests.conftest import case


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture()
def tree(liver_tree, tmp_path) -> Path:
    """A private copy of two cases (so a wrong write cannot harm the shared fixtures)."""
    root = tmp_path / "in"
    for name in ("liver_clean", "liver_cord_overdose"):
        shutil.copytree(case(liver_tree, name), root / name, ignore=shutil.ignore_patterns("CT"))
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_html_of_several_plans_to_a_file_name_is_a_usage_error(tree, tmp_path):
    out = tmp_path / "report.html"
    result = run("check", str(tree), "--format", "html", "--output", str(out))
    assert result.exit_code == 2 and "report.html" in result.output and "folder" in result.output
    assert not out.exists()


def test_csv_to_a_file_name_is_a_usage_error(tree, tmp_path):
    result = run("check", str(tree), "--format", "csv", "--output", str(tmp_path / "plans.csv"))
    assert result.exit_code == 2 and "plans.csv and findings.csv" in result.output


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_one_file_format_to_a_folder_is_a_usage_error(tree, tmp_path, fmt):
    result = run("check", str(tree / "liver_clean"), "--format", fmt, "--output", f"{tmp_path}/")
    assert result.exit_code == 2 and "writes one file" in result.output


def test_several_plans_into_a_new_folder(tree, tmp_path):
    out = tmp_path / "audit"
    result = run("check", str(tree), "--format", "html", "--output", f"{out}/")
    assert result.exit_code == 1 | 4 | 8, result.output  # the cord deviation; no clinical CSV
    assert (out / "index.html").exists() and len(list(out.glob("0*.html"))) == 2


def test_existing_file_needs_force(tree, tmp_path):
    out = tmp_path / "report.json"
    out.write_text("keep me")
    one = str(tree / "liver_clean")
    result = run("check", one, "--format", "json", "--output", str(out))
    assert result.exit_code == 2 and "--force" in result.output and out.read_text() == "keep me"
    forced = run("check", one, "--format", "json", "--output", str(out), "--force")
    assert forced.exit_code != 2 and out.read_text().startswith("{")


def test_existing_report_in_a_folder_needs_force(tree, tmp_path):
    out = tmp_path / "csv"
    out.mkdir()
    (out / "plans.csv").write_text("keep me")
    result = run("check", str(tree), "--format", "csv", "--output", str(out))
    assert result.exit_code == 2 and "plans.csv" in result.output
    assert (out / "plans.csv").read_text() == "keep me" and not (out / "findings.csv").exists()


def test_missing_parent_folder_is_a_usage_error(tree, tmp_path):
    result = run("check", str(tree / "liver_clean"), "--output", str(tmp_path / "no" / "such" / "r.txt"))
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.parametrize("force", [False, True])
def test_never_writes_over_an_input_file(tree, force):
    before = snapshot(tree)
    plan = next(p for p in (tree / "liver_clean").iterdir() if p.name.startswith("RP"))
    args = ["check", str(tree / "liver_clean"), "--format", "html", "--output", str(plan)]
    result = run(*args, *(["--force"] if force else []))
    assert result.exit_code == 2 and "input" in result.output
    assert snapshot(tree) == before


def test_inside_the_input_tree_only_when_asked(tree):
    out = tree / "liver_clean" / "report.txt"
    refused = run("check", str(tree / "liver_clean"), "--output", str(out))
    assert refused.exit_code == 2 and "inside the input folder" in refused.output and not out.exists()
    asked = run("check", str(tree / "liver_clean"), "--output", str(out), "--force")
    assert asked.exit_code != 2 and out.exists()


def test_never_writes_through_a_symlink(tree, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "audit"
    out.mkdir()
    os.symlink(victim, out / "index.html")
    for extra in ([], ["--force"]):
        result = run("check", str(tree), "--format", "html", "--output", str(out), *extra)
        assert result.exit_code == 2 and "symbolic link" in result.output
    assert victim.read_text() == "precious"
    link = tmp_path / "link.json"
    os.symlink(victim, link)
    result = run("check", str(tree / "liver_clean"), "--format", "json", "--output", str(link), "--force")
    assert result.exit_code == 2 and victim.read_text() == "precious"
