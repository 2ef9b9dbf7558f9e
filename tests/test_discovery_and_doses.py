"""Discovery of plan sets and the choice of dose, on generated patients."""

from __future__ import annotations

import filecmp
import os
import shutil

import numpy as np
import pytest

from fixtures import anatomy, cases
from rtqa.discovery.dose_selection import choose_dose
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.errors import DoseSelectionError, InputError
from rtqa.io import read_dose, read_dose_info, read_plan
from tests.conftest import case


def _one(tree, name):
    found = discover([case(tree, name)])
    with_plans = [p for p in found.plan_sets if p.plans]
    assert len(with_plans) == 1, found
    return found, with_plans[0]


def test_clean_case_is_one_plan_set_with_its_ct(liver_tree):
    found, ps = _one(liver_tree, "liver_clean")
    assert ps.problems == () and ps.inferred_links == ()
    assert found.unassigned == ()
    # the generator writes one CT slice per contour plane (fixtures/cases.py, write_ct_series over
    # the body's z range at the contour spacing): every one is given to the plan set, none ignored
    ct_slices = os.listdir(os.path.join(case(liver_tree, "liver_clean"), "CT"))
    assert len(ct_slices) == len(cases._plane_positions()) > 0
    assert len(ps.ct_images) == len(ct_slices) and "CT" not in found.ignored
    loaded = load_case(ps)
    assert loaded.dose_choice.source == "PLAN"
    assert loaded.prescriptions[0].total_gy == pytest.approx(50.0)
    assert loaded.prescriptions[0].per_fraction_gy == pytest.approx(2.0)


def test_beam_doses_sum_to_the_plan_dose(liver_tree):
    _, beams = _one(liver_tree, "liver_beam_doses")
    _, plan = _one(liver_tree, "liver_clean")
    summed = load_case(beams)
    single = load_case(plan)
    assert summed.dose_choice.source == "BEAM sum (7 files)"
    # each beam file is quantised on its own: agreement to well under 0.001 Gy
    np.testing.assert_allclose(summed.dose.dose_gy, single.dose.dose_gy, atol=1e-3)


def test_incomplete_beam_set_is_refused(liver_tree):
    _, ps = _one(liver_tree, "liver_beam_doses_incomplete")
    with pytest.raises(DoseSelectionError, match=r"treatment beam\(s\) \[7\].*have no dose"):
        load_case(ps)


def test_plan_and_beams_use_plan_and_cross_check(liver_tree):
    _, ps = _one(liver_tree, "liver_plan_and_beams")
    loaded = load_case(ps)
    assert loaded.dose_choice.source == "PLAN"
    assert len(loaded.dose_choice.crosscheck) == 7
    assert not any("BEAM doses differs" in w for w in loaded.warnings)


def test_two_plan_doses_are_an_ambiguity(liver_tree, tmp_path):
    folder = tmp_path / "two"
    shutil.copytree(case(liver_tree, "liver_clean"), folder)
    import pydicom

    ds = pydicom.dcmread(folder / "RD_PLAN.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "RD_PLAN_COPY.dcm")
    plan = read_plan(folder / "RP.dcm")
    infos = (read_dose_info(folder / "RD_PLAN.dcm"), read_dose_info(folder / "RD_PLAN_COPY.dcm"))
    with pytest.raises(DoseSelectionError, match=r"2 PLAN doses for one plan.*never sums"):
        choose_dose((plan,), infos)


def test_sequential_boost_is_one_composite_with_its_multi_plan_dose(liver_tree):
    _, ps = _one(liver_tree, "liver_sequential_boost")
    assert ps.is_composite and len(ps.doses) == 3
    loaded = load_case(ps)
    assert loaded.dose_choice.source == "MULTI_PLAN"
    assert sum(rx.total_gy for rx in loaded.prescriptions) == pytest.approx(60.0)
    # without the MULTI_PLAN dose, the composite dose is the sum of each plan's dose
    infos = tuple(read_dose_info(h.path) for h in ps.doses if "SUM" not in h.path)
    choice = choose_dose(loaded.plans, infos)
    assert choice.source.startswith("sum of plans")
    parts = [read_dose(i.path) for i, _ in choice.parts]
    np.testing.assert_allclose(parts[0].dose_gy + parts[1].dose_gy, loaded.dose.dose_gy, atol=1e-3)


def test_session_dose_is_scaled_by_fractions(liver_tree):
    _, ps = _one(liver_tree, "liver_clean")
    plan = read_plan(ps.plans[0].path)
    info = read_dose_info(ps.doses[0].path)
    from dataclasses import replace

    from rtqa.model import DoseSummationType

    session = replace(info, summation_type=DoseSummationType.FRACTION_SESSION)
    choice = choose_dose((plan,), (session,))
    assert choice.parts[0][1] == 25.0 and "multiplied by 25" in choice.warnings[0]


def test_frame_of_reference_mismatch_is_reported(liver_tree):
    _, ps = _one(liver_tree, "liver_for_mismatch")
    assert any("FrameOfReferenceUID of dose RD_PLAN.dcm" in p and "differs" in p for p in ps.problems)
    with pytest.raises(InputError, match=r"FrameOfReferenceUID \(0020,0052\).*differs"):
        load_case(ps)


def test_truncated_dose_is_reported_with_its_reason(liver_tree):
    found = discover([case(liver_tree, "liver_truncated_dose")])
    (u,) = found.unassigned
    assert u.path.endswith("RD_PLAN.dcm") and "truncated" in u.reason and "PixelData" in u.reason
    ps = next(p for p in found.plan_sets if p.plans)
    (problem,) = ps.problems
    assert problem.startswith("no RT Dose file for this plan (unreadable beside it: RD_PLAN.dcm: PixelData")


def test_headerless_structure_set_is_found(liver_tree):
    _, ps = _one(liver_tree, "liver_headerless")
    assert ps.structure_set is not None and ps.structure_set.headerless
    # every organ of the anatomy (fixtures/anatomy.organs()) is written as one ROI
    names = sorted(r.name for r in load_case(ps, with_dose=False).structure_set.rois)
    assert names == sorted(o.name for o in anatomy.organs())


def test_verification_plan_is_recognised(liver_tree):
    _, ps = _one(liver_tree, "liver_verification")
    assert load_case(ps, with_dose=False).plans[0].is_verification


@pytest.mark.parametrize("orient", ["FFS", "HFP", "FFP", "DECUB_A"])
def test_other_orientations_give_the_same_dose(liver_tree, orient):
    ref = load_case(_one(liver_tree, "liver_clean")[1]).dose
    other = load_case(_one(liver_tree, f"liver_orient_{orient}")[1]).dose
    np.testing.assert_allclose(other.x_mm, ref.x_mm)
    np.testing.assert_allclose(other.z_mm, ref.z_mm)
    np.testing.assert_allclose(other.dose_gy, ref.dose_gy, atol=1e-6)


def test_inferred_links_when_references_are_broken(liver_tree, tmp_path):
    import pydicom

    folder = tmp_path / "anon"
    shutil.copytree(case(liver_tree, "liver_clean"), folder, ignore=shutil.ignore_patterns("CT"))
    for name, seq in (("RD_PLAN.dcm", "ReferencedRTPlanSequence"), ("RP.dcm", "ReferencedStructureSetSequence")):
        ds = pydicom.dcmread(folder / name)
        getattr(ds, seq)[0].ReferencedSOPInstanceUID = "1.2.3.999"
        ds.save_as(folder / name)
    found = discover([folder])
    (ps,) = found.plan_sets
    assert ps.problems == ()
    assert len(ps.inferred_links) == 2 and all("PatientID + FrameOfReferenceUID" in s for s in ps.inferred_links)


def test_duplicate_sop_instance_is_reported(liver_tree, tmp_path):
    shutil.copytree(case(liver_tree, "liver_clean"), tmp_path / "a", ignore=shutil.ignore_patterns("CT"))
    shutil.copytree(case(liver_tree, "liver_clean"), tmp_path / "b", ignore=shutil.ignore_patterns("CT"))
    found = discover([tmp_path])
    assert len([p for p in found.plan_sets if p.plans]) == 1
    assert len(found.unassigned) == 3 and all("duplicate SOPInstanceUID" in u.reason for u in found.unassigned)


def test_generation_is_deterministic(tmp_path):
    spec = cases.LiverSpec(name="det", patient_id="DET", with_ct=False)
    a = cases.write_liver_case(str(tmp_path / "a"), spec)
    b = cases.write_liver_case(str(tmp_path / "b"), spec)
    for name in sorted(os.listdir(a)):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    p = cases.write_phantom_case(str(tmp_path / "a"), "sphere8", "zgrad", 2.0, 2.0)
    q = cases.write_phantom_case(str(tmp_path / "b"), "sphere8", "zgrad", 2.0, 2.0)
    assert filecmp.cmp(os.path.join(p, "RS.dcm"), os.path.join(q, "RS.dcm"), shallow=False)
    assert not os.path.exists(os.path.join(p, "sphere8.truth.json")), "truth must live beside the case"


def test_fifty_patients_mixed_with_ct_and_junk_group_exactly(tmp_path):
    """50 phantom patients in three layouts, plus CT slices and junk files."""
    from fixtures.writer import Patient, write_ct_series

    expected = {}
    for i in range(50):
        shape = ("sphere8", "sphere6", "cone20")[i % 3]
        folder = cases.write_phantom_case(str(tmp_path / "stage"), shape, "zgrad", 2.0 + i % 4, 3.0, tag=f"_{i:02d}")
        pid = os.path.basename(folder).upper()[:64]
        layout = i % 3
        for name in os.listdir(folder):
            src = os.path.join(folder, name)
            if layout == 0:  # one folder per patient
                dst = tmp_path / "tree" / f"p{i:02d}" / name
            elif layout == 1:  # flat, files renamed by UID-like names
                dst = tmp_path / "tree" / "flat" / f"{i:02d}_{name.lower()}.bin"
            else:  # by modality
                dst = tmp_path / "tree" / name[:2] / f"{i:02d}.dcm"
            os.makedirs(dst.parent, exist_ok=True)
            shutil.copy(src, dst)
        expected[pid] = expected.get(pid, 0) + 1
        if i % 10 == 0:
            write_ct_series(str(tmp_path / "tree" / f"ct{i:02d}"), Patient.make(f"CT{i}"), [0.0, 3.0])
    (tmp_path / "tree" / "README.txt").write_text("submission notes\n")
    (tmp_path / "tree" / "flat" / "thumbs.db").write_bytes(os.urandom(3000))
    shutil.rmtree(tmp_path / "stage")
    found = discover([tmp_path / "tree"])
    plan_sets = [p for p in found.plan_sets if p.plans]
    assert len(plan_sets) == 50
    assert found.unassigned == ()
    # CT: a 2-slice series for i = 0, 10, 20, 30, 40; not DICOM: README.txt and thumbs.db
    assert found.ignored == {"CT": 5 * 2, "not DICOM": 2}
    for ps in plan_sets:
        assert ps.problems == () and ps.inferred_links == ()
        assert ps.structure_set.patient_id == ps.patient_id == ps.doses[0].patient_id
        assert len(ps.doses) == 1
