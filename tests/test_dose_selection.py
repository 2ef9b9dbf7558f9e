"""Which dose files make the dose of a plan (rtqa/discovery/dose_selection.py), rule by rule.

The plan is the clean liver case's (7 treatment beams numbered 1-7 in one fraction group of
25 fractions, and one setup beam); the doses are its PLAN dose header with the summation type,
plan and beam references changed per case, as DOMAIN.md section 3 and PS3.3 C.8.8.3 list them.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from rtqa.discovery.dose_selection import choose_dose
from rtqa.errors import DoseSelectionError
from rtqa.io import read_dose_info, read_plan
from rtqa.model import DoseSummationType as T
from tests.conftest import case


@pytest.fixture(scope="module")
def plan_and_dose(liver_tree):
    folder = case(liver_tree, "liver_clean")
    return read_plan(os.path.join(folder, "RP.dcm")), read_dose_info(os.path.join(folder, "RD_PLAN.dcm"))


def d(base, name: str, kind: T, beams: tuple[int, ...] = (), plans: tuple[str, ...] | None = None):
    return replace(
        base,
        path=f"/d/{name}",
        sop_instance_uid=name,
        summation_type=kind,
        referenced_beam_numbers=beams,
        referenced_plan_uids=base.referenced_plan_uids if plans is None else plans,
    )


def test_one_plan_dose_is_used(plan_and_dose):
    plan, rd = plan_and_dose
    assert [b.number for b in plan.treatment_beams] == [1, 2, 3, 4, 5, 6, 7]
    choice = choose_dose((plan,), (rd,))
    assert choice.parts == ((rd, 1.0),) and choice.source == "PLAN" and choice.crosscheck == ()
    assert choice.warnings == ()


def test_a_fraction_dose_of_a_single_group_plan_counts_as_the_plan_dose(plan_and_dose):
    plan, rd = plan_and_dose
    frac = d(rd, "F", T.FRACTION)
    choice = choose_dose((plan,), (frac,))
    assert choice.parts == ((frac, 1.0),) and choice.source == "FRACTION"
    # with two fraction groups a FRACTION dose is one group's: not the plan dose
    two = replace(plan, fraction_groups=(*plan.fraction_groups, replace(plan.fraction_groups[0], number=2)))
    with pytest.raises(DoseSelectionError, match=r"no usable dose.*FRACTION"):
        choose_dose((two,), (frac,))


def test_complete_beam_doses_are_summed(plan_and_dose):
    plan, rd = plan_and_dose
    beams = tuple(d(rd, f"B{n}", T.BEAM, (n,)) for n in range(1, 8))
    choice = choose_dose((plan,), beams)
    assert [w for _, w in choice.parts] == [1.0] * 7 and choice.source == "BEAM sum (7 files)"


@pytest.mark.parametrize(
    ("numbers", "match"),
    [
        (
            (1, 2, 3, 4, 5, 6),
            r"cover beams \[1, 2, 3, 4, 5, 6\] but treatment beam\(s\) \[7\] of plan HCC IMRT have no dose: the plan",
        ),
        ((1, 2, 3, 4, 5, 6, 6), r"BEAM doses repeat a beam \(\[1, 2, 3, 4, 5, 6, 6\]\)"),
    ],
)
def test_incomplete_or_repeated_beam_doses_are_refused(plan_and_dose, numbers, match):
    plan, rd = plan_and_dose
    beams = tuple(d(rd, f"B{i}", T.BEAM, (n,)) for i, n in enumerate(numbers))
    with pytest.raises(DoseSelectionError, match=match):
        choose_dose((plan,), beams)


def test_a_beam_dose_without_its_beam_number_is_refused(plan_and_dose):
    plan, rd = plan_and_dose
    beams = (*(d(rd, f"B{n}", T.BEAM, (n,)) for n in range(1, 7)), d(rd, "B?", T.BEAM))
    with pytest.raises(
        DoseSelectionError, match=r"^a BEAM dose does not say which beam it belongs to \(ReferencedBeamNumber absent\)$"
    ):
        choose_dose((plan,), beams)


def test_plan_and_beams_use_the_plan_and_cross_check_only_a_complete_set(plan_and_dose):
    plan, rd = plan_and_dose
    beams = tuple(d(rd, f"B{n}", T.BEAM, (n,)) for n in range(1, 8))
    choice = choose_dose((plan,), (rd, *beams))
    assert choice.parts == ((rd, 1.0),) and choice.source == "PLAN" and choice.crosscheck == beams
    partial = choose_dose((plan,), (rd, *beams[:-1]))
    assert partial.parts == ((rd, 1.0),) and partial.crosscheck == ()


def test_two_plan_doses_are_ambiguous_never_summed(plan_and_dose):
    plan, rd = plan_and_dose
    with pytest.raises(DoseSelectionError, match=r"2 PLAN doses for one plan \(A, B\): ambiguous"):
        choose_dose((plan,), (d(rd, "A", T.PLAN), d(rd, "B", T.PLAN)))


def test_doses_of_other_plans_are_not_used(plan_and_dose):
    plan, rd = plan_and_dose
    other = d(rd, "O", T.PLAN, plans=("someone else",))
    assert choose_dose((plan,), (other, rd)).parts == ((rd, 1.0),)
    # a dose that names no plan is taken as the plan's own
    unnamed = d(rd, "U", T.PLAN, plans=())
    assert choose_dose((plan,), (unnamed,)).parts == ((unnamed, 1.0),)
    with pytest.raises(DoseSelectionError, match="dose types found: none"):
        choose_dose((plan,), (other,))


def test_one_session_is_multiplied_by_the_number_of_fractions(plan_and_dose):
    plan, rd = plan_and_dose
    session = d(rd, "S", T.FRACTION_SESSION)
    choice = choose_dose((plan,), (session,))
    assert choice.parts == ((session, 25.0),) and choice.source == "FRACTION_SESSION x 25 fractions"
    assert choice.warnings == ("dose is one session (FRACTION_SESSION); multiplied by 25 fractions",)
    with pytest.raises(DoseSelectionError, match="2 FRACTION_SESSION doses"):
        choose_dose((plan,), (session, d(rd, "S2", T.FRACTION_SESSION)))
    beams = tuple(d(rd, f"S{n}", T.BEAM_SESSION, (n,)) for n in range(1, 8))
    choice = choose_dose((plan,), beams)
    assert [w for _, w in choice.parts] == [25.0] * 7 and choice.source == "BEAM_SESSION x 25 fractions"
    with pytest.raises(DoseSelectionError, match=r"treatment beam\(s\) \[7\]"):
        choose_dose((plan,), beams[:-1])
    no_fractions = replace(plan, fraction_groups=(replace(plan.fraction_groups[0], fractions_planned=None),))
    with pytest.raises(DoseSelectionError, match="needs the number of fractions"):
        choose_dose((no_fractions,), (session,))


def test_a_composite_uses_its_multi_plan_dose_or_sums_each_plan(plan_and_dose):
    plan, rd = plan_and_dose
    boost = replace(plan, sop_instance_uid="boost", label="boost")
    uids = (plan.sop_instance_uid, "boost")
    multi = d(rd, "M", T.MULTI_PLAN, plans=uids)
    own_boost = d(rd, "DB", T.PLAN, plans=("boost",))
    choice = choose_dose((plan, boost), (rd, own_boost, multi))
    assert choice.parts == ((multi, 1.0),) and choice.source == "MULTI_PLAN"
    with pytest.raises(DoseSelectionError, match="2 MULTI_PLAN doses"):
        choose_dose((plan, boost), (multi, d(rd, "M2", T.MULTI_PLAN, plans=uids)))
    summed = choose_dose((plan, boost), (rd, own_boost))
    assert summed.parts == ((rd, 1.0), (own_boost, 1.0)) and summed.source == "sum of plans (PLAN; PLAN)"
    # a MULTI_PLAN dose over only one of the plans is not the composite's
    partial = d(rd, "M1", T.MULTI_PLAN, plans=(plan.sop_instance_uid,))
    assert choose_dose((plan, boost), (rd, own_boost, partial)).parts == ((rd, 1.0), (own_boost, 1.0))
    with pytest.raises(DoseSelectionError, match=r"^no plan to choose a dose for$"):
        choose_dose((), (rd,))


def test_beams_are_those_of_the_fraction_group_that_are_treatment_beams(plan_and_dose):
    plan, rd = plan_and_dose
    fg = plan.fraction_groups[0]
    # the fraction group names beams 1-6 and the setup beam 8: beam 7 is not delivered, beam 8 has no dose
    group = replace(fg, beams=(*fg.beams[:6], replace(fg.beams[0], beam_number=8)))
    six = tuple(d(rd, f"B{n}", T.BEAM, (n,)) for n in range(1, 7))
    choice = choose_dose((replace(plan, fraction_groups=(group,)),), six)
    assert choice.source == "BEAM sum (6 files)"


def test_messages_name_the_plan_and_the_dose_types_found(plan_and_dose):
    plan, rd = plan_and_dose
    two = replace(plan, fraction_groups=(*plan.fraction_groups, replace(plan.fraction_groups[0], number=2)))
    found = (d(rd, "F", T.FRACTION), d(rd, "M", T.MULTI_PLAN))
    with pytest.raises(
        DoseSelectionError, match=r"^no usable dose for plan HCC IMRT: dose types found: FRACTION, MULTI_PLAN$"
    ):
        choose_dose((two,), found)
    session = d(rd, "S", T.FRACTION_SESSION)
    with pytest.raises(DoseSelectionError, match="needs the number of fractions"):
        choose_dose((replace(plan, fraction_groups=()),), (session,))


def test_a_composite_keeps_the_warnings_of_its_plans(plan_and_dose):
    plan, rd = plan_and_dose
    boost = replace(plan, sop_instance_uid="boost", label="boost")
    session = d(rd, "S", T.FRACTION_SESSION, plans=("boost",))
    choice = choose_dose((plan, boost), (rd, session))
    assert choice.parts == ((rd, 1.0), (session, 25.0))
    assert choice.warnings == ("dose is one session (FRACTION_SESSION); multiplied by 25 fractions",)
