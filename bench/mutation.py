"""Mutation testing of the modules that decide verdicts and numbers, one module at a time.

    python bench/mutation.py [MODULE ...] [--children N] [--work DIR]

For each module, a scratch copy of the project (rtqa, tests, fixtures, rules) gets a
``[tool.mutmut]`` section that mutates only that module and selects only the fast in-process
tests that guard it; ``mutmut run`` then runs, per mutant, the selected tests that reach the
mutated function. Prints one line per module (killed, survived, timeouts, score) and leaves
each run's ``mutants/`` folder under ``--work`` for ``mutmut results`` / ``mutmut show``.

The tests need the synthetic trees: set ``RTQA_FIXTURE_TREES`` to a folder holding
``liver/`` and ``phantoms/`` (``tox -e mutation`` generates them), or the script generates them
under ``--work`` first. See bench/mutation.md for the scores and the surviving mutants.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B = "tests/test_behaviour.py::"
ACCURACY = "tests/test_dvh_accuracy.py::"
# one phantom per shape and dose, contour spacing and dose grid varied across them
PHANTOMS = [
    f"{ACCURACY}test_phantom_matches_contour_stack_truth[{shape}-{dose}-{spacing}-{grid}]"
    for i, (shape, dose) in enumerate(
        (s, d)
        for s in ("sphere20", "cylinder15", "cone20", "tube20", "sphere8", "sphere6")
        for d in ("uniform", "zgrad", "xgrad")
    )
    for spacing, grid in [((1.0, 2.0), (2.0, 3.0), (3.0, 2.0), (5.0, 3.0))[i % 4]]
]
DVH_TESTS = [
    "tests/test_metrics_geometry.py",
    "tests/test_engine_analytic.py",
    "tests/test_engine_paths.py::test_neighbourhood_equals_scipy_filters",
    f"{B}test_dose_at_volume_interpolates_between_bin_edges",
    f"{ACCURACY}test_dose_curved_between_dose_planes",
    f"{ACCURACY}test_uniform_dose_has_no_nearest_bin_plateau",
    f"{ACCURACY}test_end_cap_none_removes_half_a_slab_at_each_end",
    *PHANTOMS,
]
V = "tests/test_verdicts.py::"
E = "tests/test_evaluate.py::"
# whole evaluations of the fixture trees that reach the grading rules (fact branches, intervals, not
# applicable, resubmit), one per behaviour: each costs about a second, and a surviving mutant runs them all
EVALUATION = [
    f"{E}test_clean_cases_are_per_protocol_on_every_rule_and_complete[liver_clean]",
    f"{E}test_clean_cases_are_per_protocol_on_every_rule_and_complete[liver_sequential_boost]",
    f"{E}test_each_variant_yields_exactly_its_findings",
    f"{E}test_under_coverage_fails_target_rules_only",
    f"{E}test_dose_grid_short_of_the_liver",
    f"{E}test_structure_set_only_gives_eligibility",
    f"{E}test_child_pugh_c_is_ineligible_and_liver_rule_not_applicable",
    f"{V}test_unknown_child_pugh_with_mean_above_every_class_is_a_deviation",
    f"{V}test_unknown_child_pugh_where_classes_disagree_lists_the_possible_grades",
    f"{V}test_interval_straddling_a_limit_is_not_evaluable_with_the_interval",
    f"{V}test_sib_lower_dose_ptv_is_graded_on_itself_minus_the_boost",
]
CHECKS = "tests/test_eval_checks.py"
EVALUATE = "tests/test_eval_evaluate.py"
# the review of the DVHs the planning system stored, against rtqa's (percent labelled as Gy included)
STORED = [
    f"{V}test_stored_dvh_that_differs_is_reported",
    f"{V}test_stored_dvhs_consistent_exports_give_no_false_warning[percent-half_slab]",
]
MODULES: dict[str, list[str]] = {
    "rtqa/protocol/limits.py": ["tests/test_limits_boundaries.py"],
    "rtqa/evaluation/prescription.py": ["tests/test_prescription.py"],
    "rtqa/dvh/metrics.py": ["tests/test_metrics_geometry.py", f"{B}test_dose_at_volume_interpolates_between_bin_edges"],
    "rtqa/discovery/dose_selection.py": ["tests/test_dose_selection.py"],
    "rtqa/discovery/grouping.py": ["tests/test_grouping.py"],
    "rtqa/dvh/geometry.py": [*DVH_TESTS, "tests/test_geometry_edges.py"],
    "rtqa/dvh/engine.py": [
        *DVH_TESTS,
        "tests/test_hot_end.py",
        "tests/test_only_what_is_asked.py",
        "tests/test_exact_extremes.py",
        "tests/test_end_caps.py",
        "tests/test_engine_paths.py",
        "tests/test_properties.py",
    ],
    "rtqa/evaluation/grading.py": ["tests/test_eval_grading.py", *EVALUATION],
    "rtqa/evaluation/checks/constraints.py": [CHECKS, "tests/test_eval_constraints.py", *EVALUATION],
    "rtqa/evaluation/checks/fractionation.py": [CHECKS, *EVALUATION],
    "rtqa/evaluation/checks/eligibility.py": [CHECKS, *EVALUATION],
    "rtqa/evaluation/checks/technical.py": [
        CHECKS,
        "tests/test_eval_constraints.py",
        "tests/test_only_what_is_asked.py",
        EVALUATE,
        *EVALUATION,
    ],
    "rtqa/evaluation/context.py": [
        "tests/test_eval_context.py",
        # the name map, the institution and the frame link the context hands on
        "tests/test_identity.py",
        "tests/test_geometry_hidden.py",
        "tests/test_only_what_is_asked.py",
        "tests/test_hot_end.py",
        *EVALUATION,
    ],
    "rtqa/evaluation/evaluate.py": [EVALUATE, *STORED, "tests/test_hot_end.py", *EVALUATION],
}


def changed_functions(module: str, since: str) -> list[str]:
    """The functions and methods of ``module`` added or changed since the commit ``since`` (their
    syntax trees differ), as ``name`` or ``Class.name``."""

    def functions(source: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[node.name] = ast.dump(node)
            elif isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        out[f"{node.name}.{sub.name}"] = ast.dump(sub)
        return out

    shown = subprocess.run(["git", "show", f"{since}:{module}"], cwd=ROOT, capture_output=True, text=True)
    old = functions(shown.stdout) if shown.returncode == 0 else {}
    new = functions((ROOT / module).read_text(encoding="utf-8"))
    return [name for name, tree in new.items() if old.get(name) != tree]


def mutant_patterns(module: str, functions: list[str]) -> list[str]:
    """mutmut 3's names of the mutants of those functions (``pkg.mod.x_func__mutmut_N``, and
    ``pkg.mod.xǁClassǁmethod__mutmut_N`` for methods), as patterns for ``mutmut run``."""
    dotted = module.removesuffix(".py").replace("/", ".")
    out = []
    for name in functions:
        cls, _, func = name.rpartition(".")
        out.append(f"{dotted}.x\u01c1{cls}\u01c1{func}__mutmut_*" if cls else f"{dotted}.x_{func}__mutmut_*")
    return out


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _prepare(module: str, tests: list[str], work: Path) -> Path:
    scratch = work / Path(module).stem
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    for name in ("rtqa", "tests", "fixtures", "rules"):
        shutil.copytree(ROOT / name, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "\n", text, flags=re.S)
    text += (
        "\n[tool.mutmut]\n"
        'source_paths = ["rtqa/"]\n'
        f"only_mutate = {_toml_list([module])}\n"
        'also_copy = ["fixtures/", "rules/"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-n", "0"]\n'
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
    )
    (scratch / "pyproject.toml").write_text(text, encoding="utf-8")
    return scratch


def _trees(work: Path) -> str:
    given = os.environ.get("RTQA_FIXTURE_TREES")
    if given:
        return given
    out = work / "trees"
    for name, flag in (("liver", "--variants"), ("phantoms", "--phantoms")):
        if not (out / name).is_dir():
            subprocess.run([sys.executable, "-m", "fixtures.generate", str(out / name), flag], cwd=ROOT, check=True)
    return str(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="paths as in MODULES (default: all)")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--work", default=str(ROOT / ".tox" / "mutation-work"))
    parser.add_argument(
        "--changed-since",
        metavar="REV",
        help="mutate only the functions added or changed since this commit (a module's new code, when a "
        "whole-module run takes hours); the score is then that of those functions' mutants",
    )
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RTQA_FIXTURE_TREES": _trees(work)}
    mutmut = shutil.which("mutmut") or "mutmut"
    for module in args.modules or list(MODULES):
        patterns: list[str] = []
        if args.changed_since:
            functions = changed_functions(module, args.changed_since)
            if not functions:
                print(f"{module}: no function changed since {args.changed_since}", flush=True)
                continue
            patterns = mutant_patterns(module, functions)
            print(f"{module}: {len(functions)} functions changed since {args.changed_since}: {', '.join(functions)}")
        scratch = _prepare(module, MODULES[module], work)
        start = time.monotonic()
        run = subprocess.run(
            [mutmut, "run", "--max-children", str(args.children), *patterns],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
        )
        subprocess.run([mutmut, "export-cicd-stats"], cwd=scratch, env=env, capture_output=True, check=False)
        stats_file = scratch / "mutants" / "mutmut-cicd-stats.json"
        if run.returncode != 0 or not stats_file.exists():
            print(f"{module}: mutmut failed (exit {run.returncode})\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            continue
        stats = json.loads(stats_file.read_text())
        killed, survived = stats["killed"], stats["survived"]
        timeouts, suspicious, untested = stats["timeout"], stats["suspicious"], stats["no_tests"]
        total = killed + survived + timeouts + suspicious + untested
        score = 100 * (killed + timeouts) / total if total else float("nan")
        print(
            f"{module}: {total} mutants, {killed} killed, {timeouts} timeouts, {survived} survived, "
            f"{untested} untested, {suspicious} suspicious; score {score:.1f} % ({time.monotonic() - start:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
