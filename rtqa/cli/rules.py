"""``rtqa rules``: validate and show protocol files."""

from __future__ import annotations

import sys

import click

from rtqa.cli.app import EXIT_OK, EXIT_USAGE, _load_protocol, cli
from rtqa.errors import ProtocolError


@cli.group()
def rules() -> None:
    """Validate and show protocol files."""


@rules.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path())
def rules_validate(files: tuple[str, ...]) -> None:
    """Check protocol files; exit 2 if any is invalid."""
    from rtqa.protocol.loader import load_protocol

    bad = 0
    for f in files:
        try:
            p = load_protocol(f)
            click.echo(
                f"{f}: valid - {p.id} v{p.version}, {len(p.all_rules())} rules, "
                f"{sum(1 for r in p.all_rules() if r.unconfirmed)} unconfirmed"
            )
        except ProtocolError as exc:
            bad += 1
            click.echo(str(exc), err=True)
    sys.exit(EXIT_USAGE if bad else EXIT_OK)


@rules.command("show")
@click.argument("protocol_name", required=False, metavar="[FILE|NAME]")
def rules_show(protocol_name: str | None) -> None:
    """A readable table of every rule, limit, source and unconfirmed mark (†)."""
    p = _load_protocol(protocol_name)
    click.echo(f"{p.id} v{p.version}: {p.title}")
    click.echo(f"file {p.path} (sha256 {p.sha256[:12]}...); DVH end cap {p.end_cap.value}; † = unconfirmed")
    click.echo("")
    click.echo(
        f"{'rule':<22} {'kind':<12} {'structure':<12} {'metric/check':<22} {'per protocol':<16} "
        f"{'variation':<14} source"
    )
    for r in p.all_rules():
        what = r.metric.text if r.metric else (r.check or "")
        pp = r.per_protocol.text(r.unit) if r.per_protocol else (", ".join(r.allowed) if r.allowed else "-")
        va = r.variation.text(r.unit) if r.variation else "-"
        extra = ""
        if r.when:
            extra += " when " + "; ".join(f"{k} in {', '.join(v)}" for k, v in r.when.items())
        for fact, by_value in r.limits_by.items():
            groups: dict[tuple[str, str], list[str]] = {}
            for value, lim in by_value.items():
                key = (lim.per_protocol.text(r.unit), lim.variation.text(r.unit) if lim.variation else "-")
                groups.setdefault(key, []).append(value)
            extra += (
                " by "
                + fact
                + ": "
                + "; ".join(
                    f"{', '.join(vs)}: {pp} (var {va})" + (" †" if any(by_value[v].unconfirmed for v in vs) else "")
                    for (pp, va), vs in groups.items()
                )
            )
        if r.grades_by:
            extra += " grades: " + ", ".join(f"{k} {v}" for k, v in r.grades_by.items())
        dagger = " †" if r.unconfirmed else ""
        click.echo(
            f"{r.id:<22} {r.kind:<12} {(r.structure or ''):<12} {what:<22} {pp[:16]:<16} {va[:14]:<14} "
            f"{r.source}{dagger}{extra}"
        )
    click.echo("")
    click.echo("structures:")
    for s in p.structures.values():
        need = "required" if s.required else "optional"
        card = "many ROIs" if s.many else "one ROI"
        click.echo(
            f"  {s.name:<12} {s.role:<7} {need:<9} {card:<9} aliases: {', '.join(s.aliases[1:]) or '-'}"
            + (f"; patterns: {', '.join(s.patterns)}" if s.patterns else "")
        )
    for d in p.derived.values():
        click.echo(
            f"  {d.name:<12} derived: {d.expression}"
            + (" (an ROI of this name is used if present)" if d.prefer_roi else "")
        )
