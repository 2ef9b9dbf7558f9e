"""``rtqa dvh``: dose-volume statistics of every structure of every plan found."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import click

from rtqa.cli.app import (
    EXIT_NOT_EVALUABLE,
    EXIT_OK,
    FiniteFloatRange,
    _load_protocol,
    _run,
    cli,
    max_memory_option,
    max_seconds_option,
)
from rtqa.dvh.expression import EndCap
from rtqa.errors import RtqaError

if TYPE_CHECKING:
    from rtqa.case import PlanSet, Prescription
    from rtqa.discovery.planless import PlanlessCase
    from rtqa.model import DoseGrid
    from rtqa.protocol.loader import Protocol
    from rtqa.report.dvh_tables import DvhResult, Relative, StructureDVH

# The library is imported inside the command, not here: ``rtqa --help`` imports this module
# to list the command and must stay fast (issue 10).


def _derived(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, sep, expr = v.partition("=")
        if not sep or not name.strip() or not expr.strip():
            raise click.BadParameter(f"{v!r}: expected NAME=EXPRESSION, e.g. 'Liver-GTV=Liver - (GTVp | GTVv)'")
        out.append((name.strip(), expr.strip()))
    return out


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--protocol",
    "protocol_name",
    metavar="FILE|NAME",
    help="Name structures as this protocol does (aliases matched, derived structures such as Liver-GTV).",
)
@click.option("--structure", "structures", multiple=True, metavar="NAME", help="Only these ROIs (repeatable).")
@click.option(
    "--derived",
    multiple=True,
    callback=_derived,
    metavar="NAME=EXPR",
    help="A derived structure, e.g. 'Liver-GTV=Liver - (GTVp | GTVv | GTVn)' (repeatable).",
)
@click.option(
    "--end-cap",
    type=click.Choice([e.value for e in EndCap]),
    default=EndCap.HALF_SLAB.value,
    show_default=True,
    help="Slab convention at the first and last contour of each structure.",
)
@click.option(
    "--rx",
    type=FiniteFloatRange("a prescription dose in Gy > 0", min=0.0, min_open=True),
    metavar="GY",
    help="Prescription dose (Gy) the relative values (% of Rx) are given against: needed for a structure set and "
    "dose with no RT Plan; with a plan it replaces the plan's prescription.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@click.option(
    "--alpha-beta",
    "alpha_beta",
    type=FiniteFloatRange("an α/β in Gy > 0", min=0, min_open=True),
    metavar="GY",
    help="Add EQD2 statistics with this α/β (Gy): each voxel converted with its plan's fractions, a course's "
    "plans converted one by one and summed.",
)
@max_memory_option
@max_seconds_option
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def dvh(
    paths: tuple[str, ...],
    protocol_name: str | None,
    structures: tuple[str, ...],
    derived: list[tuple[str, str]],
    end_cap: str,
    rx: float | None,
    fmt: str,
    output: str | None,
    alpha_beta: float | None,
    debug: bool,
) -> None:
    """Dose-volume statistics of every structure of every plan found under PATHS.

    A structure set and a dose without an RT Plan are paired by patient and frame of reference
    (said in the output); give their prescription with --rx.
    """
    protocol = _load_protocol(protocol_name) if protocol_name else None
    _run(lambda: _dvh(paths, protocol, structures, derived, EndCap(end_cap), fmt, output, rx, alpha_beta), debug)


def _dvh(
    paths: tuple[str, ...],
    protocol: Protocol | None,
    structures: tuple[str, ...],
    derived: list[tuple[str, str]],
    end_cap: EndCap,
    fmt: str,
    output: str | None,
    rx: float | None = None,
    alpha_beta: float | None = None,
) -> int:
    from rtqa.deadline import TimeBudgetExceeded, configured_seconds, time_budget
    from rtqa.discovery.grouping import discover
    from rtqa.discovery.planless import pair_planless
    from rtqa.report.dvh_tables import DvhResult, render_csv, render_json, render_text

    if output:
        from rtqa.cli.check import _is_input
        from rtqa.discovery.grouping import iter_files

        if _is_input(output, tuple(os.path.realpath(f) for f in iter_files(paths))):
            raise click.UsageError(f"--output {output} is an input file; rtqa never writes over its inputs")
    found = discover(paths)
    pairs, unassigned = pair_planless(found)
    results = []
    not_evaluable = bool(unassigned)
    plan_sets = [p for p in found.plan_sets if p.plans]
    if not plan_sets and not pairs:
        click.echo(
            "rtqa: no plan found under "
            + ", ".join(paths)
            + " (nor a structure set and a dose of one frame of reference)",
            err=True,
        )
        not_evaluable = True
    for plan_set in plan_sets:
        try:
            with time_budget(configured_seconds()):
                result = _case_dvh(plan_set, protocol, structures, derived, end_cap, alpha_beta, rx)
        except TimeBudgetExceeded as exc:
            result = DvhResult(
                plan_set.patient_id, plan_set.plans[0].sop_instance_uid, plan_set.label, (), (), error=str(exc)
            )
        not_evaluable |= result.error is not None or any(s.dvh is None for s in result.structures)
        results.append(result)
    for pair in pairs:
        result = _planless_dvh(pair, protocol, structures, derived, end_cap, rx)
        not_evaluable |= result.error is not None or any(s.dvh is None for s in result.structures)
        results.append(result)
    renderer: Callable[[list[DvhResult]], str] = {"text": render_text, "json": render_json, "csv": render_csv}[fmt]
    text = renderer(results)
    if output:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)
    for u in unassigned:
        click.echo(f"rtqa: unassigned file {u.path}: {u.reason}", err=True)
    for path, reason in found.skipped:
        click.echo(f"rtqa: skipped {path}: {reason}", err=True)
    return EXIT_NOT_EVALUABLE if not_evaluable else EXIT_OK


def _case_dvh(
    plan_set: PlanSet,
    protocol: Protocol | None,
    structures: tuple[str, ...],
    derived: list[tuple[str, str]],
    end_cap: EndCap,
    alpha_beta: float | None = None,
    given_rx_gy: float | None = None,
) -> DvhResult:
    from rtqa.discovery.load import load_case
    from rtqa.dvh.radiobiology import Measure, compute_equivalent_dose
    from rtqa.evaluation.casedvh import compute_case_dvhs, compute_protocol_dvhs, review_stored_dvhs
    from rtqa.evaluation.radiobiology import dose_parts
    from rtqa.io import read_stored_dvhs
    from rtqa.report.dvh_tables import DvhResult

    plan_uid = plan_set.plans[0].sop_instance_uid
    label = plan_set.label
    if plan_set.problems:
        return DvhResult(plan_set.patient_id, plan_uid, label, (), (), error="; ".join(plan_set.problems))
    try:
        case = load_case(plan_set)
        assert case.structure_set is not None and case.dose is not None and case.dose_choice is not None
        facts = [("dose", case.dose_choice.source)]
        for plan, rx in zip(case.plans, case.prescriptions, strict=True):
            intent = " (VERIFICATION plan)" if plan.is_verification else ""
            if rx.total_gy is not None:
                per = f"{rx.per_fraction_gy:.2f} Gy x {rx.fractions}" if rx.per_fraction_gy else "fractions unknown"
                facts.append(
                    (
                        "prescription",
                        f"{plan.label}: {rx.total_gy:.2f} Gy ({per}) from "
                        f"{rx.source.value if rx.source else '?'}{intent}",
                    )
                )
        sx, sy, sz = case.dose.info.spacing_mm if case.dose.info else (0.0, 0.0, 0.0)
        facts.append(("dose grid", f"{sx:.2f} x {sy:.2f} x {sz:.2f} mm, max {case.dose.max_gy:.2f} Gy"))
        if protocol is not None:
            end_cap = protocol.end_cap
            facts.append(("protocol", f"{protocol.id} v{protocol.version} (structure names and derived structures)"))

        structure_set = case.structure_set

        def tables(dose: DoseGrid) -> list[StructureDVH]:
            if protocol is not None:
                return compute_protocol_dvhs(structure_set, dose, protocol, names=structures)
            return compute_case_dvhs(structure_set, dose, names=structures, derived=derived, end_cap=end_cap)

        dvhs = tables(case.dose)
        equivalent: list[tuple[str, tuple[StructureDVH, ...]]] = []
        if alpha_beta is not None:
            parts = dose_parts(case, case.prescriptions)
            if isinstance(parts, str):
                facts.append(("EQD2", f"not computed: {parts}"))
            else:
                eq = compute_equivalent_dose(parts, measure=Measure.EQD2, alpha_beta_gy=alpha_beta)
                facts.append(("EQD2", f"α/β {alpha_beta:g} Gy (given with --alpha-beta); {eq.statement}"))
                eq_label = f"EQD2, α/β {alpha_beta:g} Gy"
                ends = [(eq_label, eq.low)] if eq.exact else [
                    (f"{eq_label}, each voxel's dose per fraction at its lowest", eq.low),
                    (f"{eq_label}, each voxel's dose per fraction at its highest", eq.high),
                ]  # fmt: skip
                equivalent.extend((name, tuple(tables(grid))) for name, grid in ends)
        facts.append(("DVH settings", f"end cap {end_cap.value}, bins 0.01 Gy"))
        warnings = list(case.warnings) + [w for s in dvhs if s.dvh for w in s.dvh.warnings]
        if len(case.dose_choice.parts) == 1 and case.dose_choice.parts[0][0].has_dvh_sequence:
            stored = read_stored_dvhs(case.dose_choice.parts[0][0].path)
            rx_gy = max((p.total_gy for p in case.prescriptions if p.total_gy), default=None)
            warnings += review_stored_dvhs(
                case.structure_set,
                [] if protocol is not None else dvhs,  # protocol names are not ROI names: recompute per ROI
                stored,
                grid_max_gy=case.dose.max_gy,
                dose=case.dose,
                prescription_gy=rx_gy,
            )
        relative = _plan_relative(case.prescriptions, [p.label for p in case.plans], given_rx_gy)
        return DvhResult(
            plan_set.patient_id,
            plan_uid,
            label,
            tuple(facts),
            tuple(dvhs),
            tuple(warnings),
            equivalent=tuple(equivalent),
            relative=relative,
        )
    except RtqaError as exc:
        return DvhResult(plan_set.patient_id, plan_uid, label, (), (), error=str(exc))


def _plan_relative(prescriptions: Sequence[Prescription], labels: list[str], rx: float | None) -> Relative:
    """The prescription relative values are given against: ``--rx``, else the total of a single
    plan; a course of several plans has no one prescription of its summed dose (``--rx`` says it)."""
    from rtqa.report.dvh_tables import Relative

    planned = [p.total_gy for p in prescriptions]
    if rx is not None:
        known = [f"{lb} {t:.2f} Gy" for lb, t in zip(labels, planned, strict=True) if t is not None]
        return Relative(rx, "--rx" + (f" (the plan says {', '.join(known)})" if known else ""))
    if len(prescriptions) > 1:
        return Relative(None, f"a course of {len(prescriptions)} plans has no one prescription: give --rx GY")
    if planned and planned[0] is not None:
        return Relative(planned[0], f"the plan's prescription ({labels[0]})")
    return Relative(None, "the plan's prescription dose is unknown: give --rx GY")


def _planless_dvh(
    pair: PlanlessCase,
    protocol: Protocol | None,
    structures: tuple[str, ...],
    derived: list[tuple[str, str]],
    end_cap: EndCap,
    rx: float | None,
) -> DvhResult:
    """A structure set and a dose with no plan: their DVHs, the link said, the prescription from --rx."""
    from rtqa.evaluation.casedvh import compute_case_dvhs, compute_protocol_dvhs, review_stored_dvhs
    from rtqa.io import read_dose, read_stored_dvhs, read_structure_set
    from rtqa.report.dvh_tables import DvhResult, Relative

    label = "no plan (structure set and dose)"
    try:
        structure_set = read_structure_set(pair.structure_set.path)
        dose = read_dose(pair.dose.path)
        facts = [("dose", f"{pair.dose.path} (no RT Plan)"), ("link", pair.link)]
        facts.append(
            ("prescription", f"{rx:.2f} Gy from --rx" if rx else "none (no RT Plan): relative values need --rx")
        )
        sx, sy, sz = dose.info.spacing_mm if dose.info else (0.0, 0.0, 0.0)
        facts.append(("dose grid", f"{sx:.2f} x {sy:.2f} x {sz:.2f} mm, max {dose.max_gy:.2f} Gy"))
        if protocol is not None:
            end_cap = protocol.end_cap
            facts.append(("protocol", f"{protocol.id} v{protocol.version} (structure names and derived structures)"))
            dvhs = compute_protocol_dvhs(structure_set, dose, protocol, names=structures)
        else:
            dvhs = compute_case_dvhs(structure_set, dose, names=structures, derived=derived, end_cap=end_cap)
        facts.append(("DVH settings", f"end cap {end_cap.value}, bins 0.01 Gy"))
        warnings = list(structure_set.warnings) + [w for s in dvhs if s.dvh for w in s.dvh.warnings]
        if dose.info is not None and dose.info.has_dvh_sequence:
            warnings += review_stored_dvhs(
                structure_set,
                [] if protocol is not None else dvhs,
                read_stored_dvhs(pair.dose.path),
                grid_max_gy=dose.max_gy,
                dose=dose,
                prescription_gy=rx,
            )
        relative = Relative(rx, "--rx") if rx else Relative(None, "no prescription (no RT Plan): give --rx GY")
        return DvhResult(pair.patient_id, None, label, tuple(facts), tuple(dvhs), tuple(warnings), relative=relative)
    except RtqaError as exc:
        return DvhResult(pair.patient_id, None, label, (), (), error=str(exc))
