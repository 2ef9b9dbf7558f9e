"""Validation of a protocol file: its YAML tree checked as a whole and built into the model.

Every problem is collected, not only the first, as ``file:line: [rule id] what is wrong and
what was expected``; the tree's mappings and lists carry their YAML line numbers
(:class:`LineMap`, :class:`LineList`, built by :mod:`rtqa.protocol.loader`). Structure-name
patterns are checked here too (:func:`pattern_problem`).
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from rtqa.dvh.expression import MAX_MARGIN_MM, EndCap, expression_names, looks_like_margin, parse_expression
from rtqa.dvh.metrics import Metric, parse_metric
from rtqa.errors import GeometryError, MetricSyntaxError
from rtqa.protocol.limits import Limit
from rtqa.protocol.model import (
    CHILD_PUGH,
    GRADE_NAMES,
    KNOWN_FACTS,
    TECHNICAL_CHECKS,
    AlphaBeta,
    DerivedSpec,
    DoseMeasure,
    LimitSet,
    LowerDoseRing,
    Protocol,
    Rule,
    StructureSpec,
    normalise_name,
)

# ------------------------------------------------------------------------------------------------
# YAML with line numbers (the loader builds them; the validator reads the lines)


class LineMap(dict[str, Any]):
    """A YAML mapping with its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class LineList(list[Any]):
    """A YAML sequence with its line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


# ------------------------------------------------------------------------------------------------
# The validator


class Validator:
    """Builds a :class:`~rtqa.protocol.model.Protocol` from a protocol file's YAML tree, collecting
    every problem in :attr:`errors` as ``file:line: [rule id] what is wrong and what was expected``.

    ``read_table`` reads the alias table a protocol names (``alias_table:``) and returns its YAML
    tree; it may raise :class:`OSError` or :class:`yaml.YAMLError`, reported as a problem.
    """

    def __init__(self, path: str, read_table: Callable[[str], Any]) -> None:
        self.path = path
        self.read_table = read_table
        self.errors: list[str] = []
        self.alpha_betas: dict[str, AlphaBeta] = {}

    def err(self, line: int, rule: str | None, message: str) -> None:
        where = f"{os.path.basename(self.path)}:{line}"
        self.errors.append(f"{where}: [{rule}] {message}" if rule else f"{where}: {message}")

    def keys(self, m: Any, allowed: set[str], required: set[str], rule: str | None, what: str) -> bool:
        if not isinstance(m, dict):
            self.err(getattr(m, "line", 0), rule, f"{what} must be a mapping")
            return False
        line = getattr(m, "line", 0)
        lines = getattr(m, "key_lines", {})
        for k in m:
            if k not in allowed:
                self.err(
                    lines.get(str(k), line),
                    rule,
                    f"unknown key {k!r} in {what}; expected one of {', '.join(sorted(allowed))}",
                )
        for k in sorted(required - set(m)):
            self.err(line, rule, f"{what} lacks {k!r}")
        return True

    def text(self, m: Mapping[str, Any], key: str, rule: str | None, default: str | None = None) -> str:
        value = m.get(key, default)
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.err(_line(m, key), rule, f"{key!r} must be text, got {type(value).__name__}")
            return ""
        return str(value)

    def flag(self, m: Mapping[str, Any], key: str, rule: str | None, default: bool = False) -> bool:
        value = m.get(key, default)
        if not isinstance(value, bool):
            self.err(_line(m, key), rule, f"{key!r} must be true or false, got {value!r}")
            return default
        return value

    def strings(self, m: Mapping[str, Any], key: str, rule: str | None) -> tuple[str, ...]:
        value = m.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.err(_line(m, key), rule, f"{key!r} must be a list of text")
            return ()
        return tuple(value)

    def limit(self, m: Mapping[str, Any], key: str, rule: str | None) -> Limit | None:
        if key not in m:
            return None
        try:
            limit = Limit.parse(str(m[key]))
        except ValueError as exc:
            self.err(_line(m, key), rule, str(exc)[:200])
            return None
        # "<= 1000...0" (400 digits) parses to infinity: no limit at all, and no JSON number
        if not all(math.isfinite(v) for v in (limit.value, limit.low, limit.high) if v is not None):
            self.err(_line(m, key), rule, f"{key} {_quote(m[key])}: the number is too large to be a limit")
            return None
        return limit

    # -- sections ---------------------------------------------------------------------------

    def protocol(self, data: Any, sha: str) -> Protocol | None:
        top = {
            "protocol",
            "alias_table",
            "dvh",
            "fractionation",
            "structures",
            "derived",
            "constraints",
            "eligibility",
            "technical",
            "alpha_beta",
        }
        if not self.keys(data, top, {"protocol", "structures", "fractionation"}, None, "the protocol file"):
            return None
        head = data.get("protocol") or LineMap()
        self.keys(head, {"id", "version", "title", "registry", "description"}, {"id", "version"}, None, "'protocol'")
        end_cap = EndCap.HALF_SLAB
        dvh = data.get("dvh") or LineMap()
        if self.keys(dvh, {"end_cap"}, set(), None, "'dvh'") and "end_cap" in dvh:
            try:
                end_cap = EndCap(dvh["end_cap"])
            except ValueError:
                self.err(_line(dvh, "end_cap"), None, f"end_cap {dvh['end_cap']!r}; expected half_slab, none or shape")
        aliases = self.alias_table(data)
        structures = self.structures(data.get("structures"), aliases)
        derived = self.derived(data.get("derived") or LineMap(), structures)
        names = set(structures) | set(derived)
        self.alpha_betas = self.alpha_beta(data, names)
        fractionation = self.fractionation(data.get("fractionation"))
        constraints = tuple(self.rule_list(data, "constraints", self.constraint, names, structures))
        eligibility = tuple(self.rule_list(data, "eligibility", self.eligibility, names, structures))
        technical = tuple(self.rule_list(data, "technical", self.technical, names, structures))
        ids: dict[str, int] = {}
        for r in fractionation + constraints + eligibility + technical:
            if r.id in ids:
                self.err(r.line, r.id, f"rule id used twice (also line {ids[r.id]})")
            ids[r.id] = r.line
        return Protocol(
            id=self.text(head, "id", None),
            version=self.text(head, "version", None),
            title=self.text(head, "title", None),
            path=self.path,
            sha256=sha,
            end_cap=end_cap,
            structures=structures,
            derived=derived,
            fractionation=fractionation,
            constraints=constraints,
            eligibility=eligibility,
            technical=technical,
            alpha_beta=self.alpha_betas,
        )

    def alpha_beta(self, data: Mapping[str, Any], names: set[str]) -> dict[str, AlphaBeta]:
        """``alpha_beta: {default: {value, source, unconfirmed}, <structure>: {...}}``."""
        m = data.get("alpha_beta")
        if m is None:
            return {}
        if not isinstance(m, dict) or not m:
            self.err(_line(data, "alpha_beta"), None, "'alpha_beta' must map structures (or 'default') to α/β values")
            return {}
        out: dict[str, AlphaBeta] = {}
        for name, spec in m.items():
            where = f"alpha_beta {name}"
            if name != "default" and name not in names:
                self.err(_line(m, name), where, f"{name!r} is not 'default' or a structure of the protocol")
                continue
            ab = self.alpha_beta_spec(spec, where, _line(m, name), {"value", "source", "unconfirmed"}, "value")
            if ab is not None:
                out[str(name)] = ab
        return out

    def alpha_beta_spec(self, spec: Any, rid: str, line: int, allowed: set[str], key: str) -> AlphaBeta | None:
        """An α/β with its source: a positive number of Gy, a non-empty source."""
        if not self.keys(spec, allowed, {key, "source"}, rid, f"the α/β of {rid}"):
            return None
        value = _number(spec.get(key))
        if value is None or value <= 0:
            self.err(_line(spec, key), rid, f"{key} {_quote(spec.get(key))}: expected a positive number of Gy")
            return None
        source = self.text(spec, "source", rid)
        if not source:
            self.err(_line(spec, "source") or line, rid, "an α/β needs a 'source'")
            return None
        return AlphaBeta(value, source, self.flag(spec, "unconfirmed", rid), getattr(spec, "line", line))

    def dose_measure(
        self, item: Mapping[str, Any], rid: str, structure: str | None, metric: Metric | None
    ) -> DoseMeasure | None:
        """A constraint's ``dose``: physical (absent or ``physical``), ``eqd2`` / ``bed`` with the
        protocol's α/β for the structure, or ``{eqd2: {alpha_beta: 3, source: "..."}}``."""
        if "dose" not in item:
            return None
        spec = item["dose"]
        line = _line(item, "dose")
        expected = "expected physical, eqd2, bed, or {eqd2: {alpha_beta: <Gy>, source: <text>}} (or bed)"
        measure: str | None = None
        ab: AlphaBeta | None = None
        if isinstance(spec, str):
            if spec == "physical":
                return None
            if spec not in ("eqd2", "bed"):
                self.err(line, rid, f"dose {_quote(spec)}; {expected}")
                return None
            measure = spec
            ab = self.alpha_betas.get(structure or "") or self.alpha_betas.get("default")
            if ab is None:
                self.err(
                    line,
                    rid,
                    f"dose {spec}: the protocol states no α/β for {structure!r} and no default "
                    "(add one under 'alpha_beta', or give {" + spec + ": {alpha_beta: ..., source: ...}})",
                )
                return None
        elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("eqd2", "bed"):
            ((measure, inner),) = spec.items()
            ab = self.alpha_beta_spec(inner, rid, line, {"alpha_beta", "source", "unconfirmed"}, "alpha_beta")
            if ab is None:
                return None
        else:
            self.err(line, rid, f"dose {_quote(spec)}; {expected}")
            return None
        if metric is not None and (metric.is_relative or metric.kind == "Volume"):
            self.err(
                line,
                rid,
                f"dose {measure}: metric {metric.text!r} is relative to the prescription or not a dose; a limit in "
                f"{str(measure).upper()} needs an absolute dose metric (e.g. Mean[Gy], D0.03cc[Gy], V20Gy[%])",
            )
            return None
        return DoseMeasure(str(measure), ab)

    def alias_table(self, data: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        name = data.get("alias_table")
        if name is None:
            return {}
        try:
            table = self.read_table(str(name))
        except (OSError, yaml.YAMLError) as exc:
            self.err(_line(data, "alias_table"), None, f"alias table {name!r} cannot be read ({exc})")
            return {}
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            self.err(_line(data, "alias_table"), None, f"alias table {name!r} must map names to lists of aliases")
            return {}
        return {str(k): tuple(str(a) for a in v) for k, v in table.items()}

    def structures(self, m: Any, table: dict[str, tuple[str, ...]]) -> dict[str, StructureSpec]:
        out: dict[str, StructureSpec] = {}
        if not isinstance(m, dict) or not m:
            self.err(getattr(m, "line", 0), None, "'structures' must be a non-empty mapping")
            return out
        seen: dict[str, str] = {}
        for name, spec in m.items():
            line = _line(m, name)
            if spec is None:
                spec = LineMap()
                spec.line, spec.key_lines = line, {}
            if not self.keys(
                spec,
                {"role", "aliases", "patterns", "required", "cardinality", "description"},
                {"role"},
                name,
                f"structure {name!r}",
            ):
                continue
            if looks_like_margin(str(name)):
                self.err(line, name, f"structure name {name!r} reads as a margin (e.g. 5mm) in expressions")
            role = self.text(spec, "role", name)
            if role not in ("target", "oar", "other"):
                self.err(_line(spec, "role"), name, f"role {role!r}; expected target, oar or other")
            cardinality = self.text(spec, "cardinality", name, "one")
            if cardinality not in ("one", "many"):
                self.err(_line(spec, "cardinality"), name, f"cardinality {cardinality!r}; expected one or many")
            own = self.strings(spec, "aliases", name)
            aliases = (name, *table.get(name, ()), *own)
            patterns = self.strings(spec, "patterns", name)
            for p in patterns:
                problem = pattern_problem(p)
                if problem:
                    self.err(_line(spec, "patterns"), name, f"pattern {_quote(p)} {problem}")
            for a in aliases:
                key = normalise_name(a)
                if key in seen and seen[key] != name:
                    self.err(
                        _line(spec, "aliases") or line,
                        name,
                        f"alias {a!r} also names structure {seen[key]!r}: conflicting aliases",
                    )
                seen[key] = name
            out[str(name)] = StructureSpec(
                str(name),
                role,
                tuple(dict.fromkeys(aliases)),
                patterns,
                self.flag(spec, "required", name, False),
                cardinality == "many",
                line,
                tuple(a for a in table.get(name, ()) if a not in own),
            )
        return out

    def derived(self, m: Any, structures: dict[str, StructureSpec]) -> dict[str, DerivedSpec]:
        out: dict[str, DerivedSpec] = {}
        if not isinstance(m, dict):
            self.err(getattr(m, "line", 0), None, "'derived' must be a mapping of name to expression")
            return out
        for name, spec in m.items():
            line = _line(m, name)
            aliases: tuple[str, ...] = ()
            if isinstance(spec, str):
                expression, prefer = spec, False
            elif self.keys(
                spec, {"expression", "use_roi_if_present", "aliases"}, {"expression"}, name, f"derived {name!r}"
            ):
                expression, prefer = self.text(spec, "expression", name), self.flag(spec, "use_roi_if_present", name)
                aliases = self.strings(spec, "aliases", name)
            else:
                continue
            try:
                parse_expression(expression)
            except GeometryError as exc:
                self.err(line, name, str(exc))
            if aliases and prefer:
                self.err(line, name, "give either use_roi_if_present or aliases (a site's composite ROI), not both")
            taken = {normalise_name(a): s.name for s in structures.values() for a in s.aliases}
            for a in (name, *aliases) if aliases else ():
                if normalise_name(a) in taken:
                    self.err(
                        _line(spec, "aliases"), name, f"alias {a!r} also names structure {taken[normalise_name(a)]!r}"
                    )
            for token in expression_names(expression):
                if token not in structures and token not in out:
                    self.err(line, name, f"expression {expression!r} names unknown structure {token!r}")
            if prefer and name not in structures:
                self.err(line, name, "use_roi_if_present needs a structure of the same name under 'structures'")
            out[str(name)] = DerivedSpec(
                str(name), expression, prefer, line, tuple(dict.fromkeys((str(name), *aliases))) if aliases else ()
            )
        return out

    def fractionation(self, m: Any) -> tuple[Rule, ...]:
        if not self.keys(
            m, {"dose_per_fraction", "total_dose"}, {"dose_per_fraction", "total_dose"}, None, "'fractionation'"
        ):
            return ()
        rules = []
        dpf = m.get("dose_per_fraction")
        rid = "FX_DOSE_PER_FRACTION"
        if dpf is not None and self.keys(
            dpf,
            {"value", "unit", "tolerance_pct", "source", "unconfirmed"},
            {"value", "source"},
            rid,
            "'dose_per_fraction'",
        ):
            value, tol = _number(dpf.get("value")), _number(dpf.get("tolerance_pct", 0))
            if value is None or value <= 0 or tol is None or tol < 0:
                self.err(dpf.line, rid, "value must be a positive number and tolerance_pct a number >= 0")
            else:
                lim = Limit("between", low=value * (1 - tol / 100), high=value * (1 + tol / 100))
                rules.append(
                    Rule(
                        rid,
                        "fractionation",
                        self.text(dpf, "source", rid),
                        self.flag(dpf, "unconfirmed", rid),
                        lim,
                        None,
                        "Gy",
                        line=dpf.line,
                        note=f"{value:g} Gy per fraction ± {tol:g} %",
                    )
                )
        total = m.get("total_dose")
        rid = "FX_TOTAL_DOSE"
        if total is not None and self.keys(
            total, {"range", "unit", "variation_pct", "source", "unconfirmed"}, {"range", "source"}, rid, "'total_dose'"
        ):
            rng = total.get("range")
            var = _number(total.get("variation_pct", 0))
            if (
                not isinstance(rng, list)
                or len(rng) != 2
                or any(_number(v) is None for v in rng)
                or float(rng[0]) > float(rng[1])
                or var is None
                or var < 0
            ):
                self.err(total.line, rid, "range must be [low, high] in Gy with low <= high; variation_pct >= 0")
            else:
                low, high = float(rng[0]), float(rng[1])
                rules.append(
                    Rule(
                        rid,
                        "fractionation",
                        self.text(total, "source", rid),
                        self.flag(total, "unconfirmed", rid),
                        Limit("between", low=low, high=high),
                        Limit("between", low=low * (1 - var / 100), high=high * (1 + var / 100)),
                        "Gy",
                        line=total.line,
                        note=f"{low:g}–{high:g} Gy, variation band {var:g} %",
                    )
                )
        return tuple(rules)

    def rule_list(
        self, data: Mapping[str, Any], key: str, build: Any, names: set[str], structures: dict[str, StructureSpec]
    ) -> list[Rule]:
        items = data.get(key) or LineList()
        if not isinstance(items, list):
            self.err(_line(data, key), None, f"'{key}' must be a list of rules")
            return []
        out = []
        for item in items:
            rid = str(item.get("id")) if isinstance(item, dict) and item.get("id") else None
            if rid is None:
                self.err(getattr(item, "line", getattr(items, "line", 0)), None, f"a rule of '{key}' has no id")
                continue
            rule = build(item, rid, names, structures)
            if rule is not None:
                out.append(rule)
        return out

    def _common(self, item: Mapping[str, Any], rid: str) -> tuple[str, bool]:
        source = self.text(item, "source", rid)
        if not source:
            self.err(getattr(item, "line", 0), rid, "every threshold needs a 'source'")
        return source, self.flag(item, "unconfirmed", rid)

    def _limits(self, item: Mapping[str, Any], rid: str) -> tuple[Limit | None, Limit | None]:
        pp = self.limit(item, "per_protocol", rid)
        va = self.limit(item, "variation_acceptable", rid)
        if pp is not None and va is not None and not va.looser_or_equal(pp):
            self.err(
                _line(item, "variation_acceptable"),
                rid,
                f"variation_acceptable {va.text()} is stricter than per_protocol {pp.text()} "
                "(it must allow at least what per_protocol allows, in the same direction)",
            )
        return pp, va

    def _facts(self, item: Mapping[str, Any], key: str, rid: str) -> dict[str, tuple[str, ...]]:
        m = item.get(key)
        if m is None:
            return {}
        if not isinstance(m, dict):
            self.err(_line(item, key), rid, f"{key!r} must map a clinical fact to its allowed values")
            return {}
        out = {}
        for fact, values in m.items():
            if fact not in KNOWN_FACTS:
                self.err(_line(item, key), rid, f"unknown clinical fact {fact!r}; expected {', '.join(KNOWN_FACTS)}")
            vals = values if isinstance(values, list) else [values]
            out[str(fact)] = tuple(str(v) for v in vals)
        return out

    def _limits_by(
        self, item: Mapping[str, Any], rid: str, source: str, unconfirmed: bool
    ) -> dict[str, dict[str, LimitSet]]:
        """``limits_by: {fact: {"A5, A6": {per_protocol: ..., variation_acceptable: ..., source, unconfirmed}}}``."""
        m = item.get("limits_by")
        if m is None:
            return {}
        line = _line(item, "limits_by")
        if not isinstance(m, dict) or len(m) != 1:
            self.err(line, rid, "'limits_by' must map one clinical fact to its values' limits")
            return {}
        ((fact, by_value),) = m.items()
        if fact not in KNOWN_FACTS:
            self.err(line, rid, f"unknown clinical fact {fact!r}; expected {', '.join(KNOWN_FACTS)}")
            return {}
        if not isinstance(by_value, dict) or not by_value:
            self.err(line, rid, f"limits_by {fact!r} must map values (e.g. 'A5, A6') to limits")
            return {}
        out: dict[str, LimitSet] = {}
        for key, spec in by_value.items():
            where = _line(by_value, key)
            if not self.keys(
                spec,
                {"per_protocol", "variation_acceptable", "source", "unconfirmed"},
                {"per_protocol"},
                rid,
                f"limits_by {fact} {key}",
            ):
                continue
            pp, va = self._limits(spec, rid)
            if pp is None:
                continue
            values = [v.strip() for v in str(key).split(",") if v.strip()]
            for v in values:
                if fact == "child_pugh" and v not in CHILD_PUGH:
                    self.err(where, rid, f"child_pugh {v!r}; expected one of {', '.join(CHILD_PUGH)}")
                if v in out:
                    self.err(where, rid, f"limits_by {fact}: value {v!r} given twice")
                out[v] = LimitSet(
                    pp, va, self.text(spec, "source", rid) or source, self.flag(spec, "unconfirmed", rid, unconfirmed)
                )
        return {str(fact): out}

    def _metric(self, item: Mapping[str, Any], rid: str) -> Metric | None:
        try:
            return parse_metric(self.text(item, "metric", rid))
        except MetricSyntaxError as exc:
            self.err(_line(item, "metric"), rid, str(exc))
            return None

    def _structure(self, item: Mapping[str, Any], key: str, rid: str, names: set[str]) -> str | None:
        name = self.text(item, key, rid)
        if name and name not in names:
            self.err(_line(item, key), rid, f"{key} {name!r} is not a structure or derived structure of the protocol")
        return name or None

    def constraint(self, item: Any, rid: str, names: set[str], structures: dict[str, StructureSpec]) -> Rule | None:
        allowed = {
            "id",
            "structure",
            "metric",
            "per_protocol",
            "variation_acceptable",
            "reference",
            "scope",
            "source",
            "unconfirmed",
            "when",
            "unconfirmed_when",
            "limits_by",
            "lower_dose_ring",
            "note",
            "dose",
        }
        required = {"id", "structure", "metric", "source"} | (set() if "limits_by" in item else {"per_protocol"})
        if not self.keys(item, allowed, required, rid, "a constraint"):
            return None
        source, unconfirmed = self._common(item, rid)
        structure = self._structure(item, "structure", rid, names)
        metric = self._metric(item, rid)
        pp, va = self._limits(item, rid)
        limits_by = self._limits_by(item, rid, source, unconfirmed)
        when = self._facts(item, "when", rid)
        if limits_by and (pp is not None or va is not None):
            self.err(item.line, rid, "give either per_protocol/variation_acceptable or limits_by, not both")
        if set(limits_by) & set(when):
            self.err(item.line, rid, "a fact in limits_by must not also be in 'when' (limits_by names its values)")
        reference = self.text(item, "reference", rid) or None
        targets = {n for n, s in structures.items() if s.role == "target"}
        if metric is not None and metric.is_relative and reference is None:
            self.err(item.line, rid, f"relative metric {metric.text!r} needs 'reference' (own, highest or a target)")
        if reference not in (None, "own", "highest") and reference not in targets:
            self.err(_line(item, "reference"), rid, f"reference {reference!r}; expected own, highest or a target")
        if reference == "own" and structure in structures and structures[structure].role != "target":
            self.err(_line(item, "reference"), rid, "reference 'own' needs a target structure")
        scope = self.text(item, "scope", rid, "each")
        if scope not in ("each", "union"):
            self.err(_line(item, "scope"), rid, f"scope {scope!r}; expected each or union")
        unit = metric.output_unit if metric else ""
        ring = self._lower_dose_ring(item, rid, structure, reference, scope, structures)
        return Rule(
            rid,
            "constraint",
            source,
            unconfirmed,
            pp,
            va,
            unit,
            structure,
            metric,
            reference,
            scope,
            when=when,
            unconfirmed_when=self._facts(item, "unconfirmed_when", rid),
            note=self.text(item, "note", rid),
            limits_by=limits_by,
            lower_dose_ring=ring,
            line=item.line,
            dose=self.dose_measure(item, rid, structure, metric),
        )

    def _lower_dose_ring(
        self,
        item: Mapping[str, Any],
        rid: str,
        structure: str | None,
        reference: str | None,
        scope: str,
        structures: dict[str, StructureSpec],
    ) -> LowerDoseRing | None:
        """``lower_dose_ring: {width_mm: 5, source: ..., unconfirmed: true}`` of a union hot-spot rule."""
        m = item.get("lower_dose_ring")
        if m is None:
            return None
        line = _line(item, "lower_dose_ring")
        if not self.keys(m, {"width_mm", "source", "unconfirmed"}, {"width_mm", "source"}, rid, "'lower_dose_ring'"):
            return None
        spec = structures.get(structure or "")
        if reference != "highest" or scope != "union" or spec is None or spec.role != "target" or not spec.many:
            self.err(
                line,
                rid,
                "'lower_dose_ring' applies to a rule graded against the highest prescription (reference: highest) "
                "on the union (scope: union) of a many-ROI target structure",
            )
        width = _number(m.get("width_mm"))
        if width is None or not 0 <= width <= MAX_MARGIN_MM:
            self.err(
                _line(m, "width_mm"),
                rid,
                f"lower_dose_ring width_mm {_quote(m.get('width_mm'))}; expected a number of mm from 0 to "
                f"{MAX_MARGIN_MM:g}",
            )
            return None
        source = self.text(m, "source", rid)
        if not source:
            self.err(m.line, rid, "'lower_dose_ring' needs a 'source' for its width")
        return LowerDoseRing(width, source, self.flag(m, "unconfirmed", rid))

    def eligibility(self, item: Any, rid: str, names: set[str], structures: dict[str, StructureSpec]) -> Rule | None:
        allowed = {"id", "structure", "metric", "require", "fact", "allowed", "source", "unconfirmed", "note"}
        if not self.keys(item, allowed, {"id", "source"}, rid, "an eligibility rule"):
            return None
        source, unconfirmed = self._common(item, rid)
        if "fact" in item:
            fact = self.text(item, "fact", rid)
            if fact not in KNOWN_FACTS:
                self.err(_line(item, "fact"), rid, f"unknown clinical fact {fact!r}; expected {', '.join(KNOWN_FACTS)}")
            values = self.strings(item, "allowed", rid)
            if not values:
                self.err(item.line, rid, "a fact-based eligibility rule needs a non-empty 'allowed' list")
            return Rule(
                rid,
                "eligibility",
                source,
                unconfirmed,
                check=fact,
                allowed=values,
                note=self.text(item, "note", rid),
                line=item.line,
            )
        for k in ("structure", "metric", "require"):
            if k not in item:
                self.err(item.line, rid, f"an eligibility rule needs 'fact' and 'allowed', or {k!r}")
                return None
        metric = self._metric(item, rid)
        if metric is not None and metric.is_relative:
            self.err(_line(item, "metric"), rid, "eligibility metrics must be absolute (a plan may not exist yet)")
        return Rule(
            rid,
            "eligibility",
            source,
            unconfirmed,
            self.limit(item, "require", rid),
            None,
            metric.output_unit if metric else "",
            self._structure(item, "structure", rid, names),
            metric,
            note=self.text(item, "note", rid),
            line=item.line,
        )

    def technical(self, item: Any, rid: str, names: set[str], structures: dict[str, StructureSpec]) -> Rule | None:
        allowed = {
            "id",
            "check",
            "per_protocol",
            "variation_acceptable",
            "allowed",
            "structure",
            "within",
            "source",
            "unconfirmed",
            "grades",
            "note",
        }
        if not self.keys(item, allowed, {"id", "check", "source"}, rid, "a technical check"):
            return None
        check = self.text(item, "check", rid)
        if check not in TECHNICAL_CHECKS:
            self.err(
                _line(item, "check"), rid, f"unknown check {check!r}; expected one of {', '.join(TECHNICAL_CHECKS)}"
            )
        source, unconfirmed = self._common(item, rid)
        pp, va = self._limits(item, rid)
        needs_limit = {"dose_grid_spacing", "prescription_agreement", "beam_energy", "gtv_outside_ptv"}
        if check in needs_limit and pp is None:
            self.err(item.line, rid, f"check {check!r} needs 'per_protocol'")
        if check in ("beam_radiation", "dose_algorithm", "dose_type") and not item.get("allowed"):
            self.err(item.line, rid, f"check {check!r} needs an 'allowed' list")
        grades_by: dict[str, str] = {}
        if check == "approval_status":
            grades = item.get("grades")
            if not isinstance(grades, dict) or not grades:
                self.err(
                    item.line, rid, "check 'approval_status' needs 'grades' (e.g. {UNAPPROVED: variation_acceptable})"
                )
            else:
                for status, g in grades.items():
                    if g not in GRADE_NAMES:
                        self.err(_line(grades, status), rid, f"grade {g!r}; expected one of {', '.join(GRADE_NAMES)}")
                    grades_by[str(status).upper()] = str(g)
        structure = self._structure(item, "structure", rid, names) if "structure" in item else None
        within = self._structure(item, "within", rid, names) if "within" in item else None
        if check == "gtv_outside_ptv" and (structure is None or within is None):
            self.err(item.line, rid, "check 'gtv_outside_ptv' needs 'structure' and 'within'")
        unit = {
            "dose_grid_spacing": "mm",
            "prescription_agreement": "%",
            "beam_energy": "MV",
            "gtv_outside_ptv": "cc",
        }.get(check, "")
        return Rule(
            rid,
            "technical",
            source,
            unconfirmed,
            pp,
            va,
            unit,
            structure,
            check=check,
            allowed=self.strings(item, "allowed", rid),
            within=within,
            note=self.text(item, "note", rid),
            grades_by=grades_by,
            line=item.line,
        )


def _line(m: Any, key: Any) -> int:
    return int(getattr(m, "key_lines", {}).get(str(key), getattr(m, "line", 0)))


def _number(v: Any) -> float | None:
    """A finite number, or None: booleans, text, NaN, infinities (YAML's ``.nan``, ``.inf``)
    and integers too large for a float (a 400-digit integer) are not numbers of a protocol."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _quote(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}... ({len(text)} characters)"


# ------------------------------------------------------------------------------------------------
# Safe structure-name patterns

PATTERN_MAX_CHARS = 200
PATTERN_MAX_CHOICES = 256
_UNBOUNDED_FROM = 17  # a repeat that may run more than 16 times counts as unbounded
_sre: Any = importlib.import_module("re._parser")  # the stdlib's own regex parser (no stubs)
_REFUSED = {
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group",
    "ASSERT": "a lookahead or lookbehind",
    "ASSERT_NOT": "a negative lookahead or lookbehind",
}


def pattern_problem(pattern: str) -> str | None:
    r"""Why a structure-name pattern is refused, or None when it is safe to match.

    Patterns are matched with Python's backtracking ``re`` against ROI names from submitted
    files, so a pattern such as ``(a|a)*b`` takes time exponential in the name's length (a
    40-character name hung ``rtqa check``). rtqa validates patterns when the protocol is
    loaded instead of matching with another engine: a protocol is written once by a
    physicist and reviewed, so refusing a risky form there, with its line, costs nothing,
    whereas a second regex engine (RE2, or ``regex`` with a timeout) would add a compiled
    dependency or a time-out verdict that is neither match nor no match.

    The accepted subset bounds the work of a full match to linear in the name's length:

    - no backreferences, conditionals or lookarounds;
    - a loop (a quantifier that may repeat more than once) contains no alternation and no
      other quantifier, so it can match a given text in one way only: ``(a|a)*``,
      ``(a+)+`` and ``(a?)*`` are refused;
    - at most one unbounded quantifier (``*``, ``+``, ``{n,}`` or more than 16 repeats): the
      backtracking engine then tries at most one split per position of the name;
    - at most 256 combinations of the bounded choices (alternatives, ``?``, ``{2,4}``) and
      at most 200 characters, so each split costs a bounded number of steps.

    The shipped patterns (``PTV[ _]?\d{2,4}(Gy|cGy)?`` and the like) are far inside it.

    Examples
    --------
    >>> pattern_problem(r"PTV[ _]?\d{2,4}(Gy|cGy)?") is None
    True
    >>> pattern_problem("(a|a)*b")
    'has alternation inside a repeated group (catastrophic backtracking)'
    """
    if len(pattern) > PATTERN_MAX_CHARS:
        return f"is {len(pattern)} characters long; at most {PATTERN_MAX_CHARS} are allowed"
    try:
        parsed = _sre.parse(pattern)
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"is not a regular expression ({exc})"
    unbounded = 0
    choices = 1

    def walk(items: Any, in_loop: bool) -> str | None:
        nonlocal unbounded, choices
        for op, av in items:
            name = str(op)
            if name in _REFUSED:
                return f"uses {_REFUSED[name]}, which rtqa does not allow in structure-name patterns"
            if name == "BRANCH":
                if in_loop:
                    return "has alternation inside a repeated group (catastrophic backtracking)"
                choices *= len(av[1])
                for alternative in av[1]:
                    problem = walk(alternative, in_loop)
                    if problem:
                        return problem
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, body = av
                if in_loop:
                    return "has a quantifier inside a repeated group (catastrophic backtracking)"
                if high >= _UNBOUNDED_FROM:
                    unbounded += 1
                else:
                    choices *= high - low + 1
                problem = walk(body, high > 1)
                if problem:
                    return problem
            elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
                problem = walk(av[-1], in_loop)
                if problem:
                    return problem
        return None

    problem = walk(parsed, False)
    if problem:
        return problem
    if unbounded > 1:
        return f"has {unbounded} unbounded quantifiers (*, +, {{n,}}); at most one is allowed"
    if choices > PATTERN_MAX_CHOICES:
        return f"has {choices} combinations of alternatives and bounded repeats; at most {PATTERN_MAX_CHOICES}"
    return None
