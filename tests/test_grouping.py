"""Discovery linking on hand-made headers (rtqa/discovery/grouping.py, pure group_headers).

Each case builds the DICOM references of the README's "QA office" section by hand: dose ->
plan -> structure set by UID, PatientID + FrameOfReferenceUID only when unambiguous, plans of
one course joined by their relationships or a MULTI_PLAN dose.
"""

from __future__ import annotations

import os

from rtqa.discovery.grouping import discover, group_headers, iter_files
from rtqa.model import FileHeader, Modality
from tests.conftest import case

SOP = "1.2.840.10008.5.1.4.1.1.481"


def h(path: str, modality: Modality | str, uid: str, patient: str = "P1", frame: str | None = "F1", **kw) -> FileHeader:
    return FileHeader(f"/d/{path}", modality, SOP, uid, patient, frame_of_reference_uid=frame, **kw)


SS = h("RS.dcm", Modality.RTSTRUCT, "ss")


def plan(name: str, uid: str, **kw) -> FileHeader:
    kw.setdefault("referenced_structure_set_uid", "ss")
    return h(name, Modality.RTPLAN, uid, **kw)


def dose(name: str, uid: str, *plans: str, kind: str = "PLAN", **kw) -> FileHeader:
    return h(name, Modality.RTDOSE, uid, referenced_plan_uids=plans, dose_summation_type=kind, **kw)


def with_plans(found):
    return [p for p in found.plan_sets if p.plans]


def test_references_link_dose_plan_and_structure_set():
    found = group_headers([dose("RD.dcm", "d1", "p1"), SS, plan("RP.dcm", "p1")])
    (ps,) = found.plan_sets
    assert [p.sop_instance_uid for p in ps.plans] == ["p1"] and ps.structure_set is SS
    assert [d.sop_instance_uid for d in ps.doses] == ["d1"]
    assert ps.problems == () and ps.inferred_links == () and found.unassigned == ()
    assert ps.patient_id == "P1"


def test_dose_with_a_broken_reference_is_linked_only_when_one_plan_fits():
    orphan = dose("RD.dcm", "d1", "gone")
    (ps,) = with_plans(group_headers([SS, plan("RP1.dcm", "p1"), orphan]))
    assert [d.sop_instance_uid for d in ps.doses] == ["d1"]
    (link,) = ps.inferred_links
    assert "RD.dcm linked to its plan by PatientID + FrameOfReferenceUID" in link and "gone" in link
    # two plans of one patient in one frame are one course: the dose is linked to the course
    (course,) = with_plans(group_headers([SS, plan("RP1.dcm", "p1"), plan("RP2.dcm", "p2"), orphan]))
    assert len(course.plans) == 2 and [d.sop_instance_uid for d in course.doses] == ["d1"]
    # two centres with the same PatientID in one frame are two courses: which one is meant is ambiguous
    centres = [plan("RP1.dcm", "p1", institution_name="A"), plan("RP2.dcm", "p2", institution_name="B")]
    two = group_headers([SS, *centres, orphan])
    assert all(p.doses == () for p in two.plan_sets)
    (u,) = two.unassigned
    assert u.path == "/d/RD.dcm" and "2 plans of patient 'P1' share its frame of reference (ambiguous)" in u.reason
    # another patient's plan, or a plan in another frame, is no candidate
    for other in (plan("RP2.dcm", "p2", patient="P2"), plan("RP2.dcm", "p2", frame="F2")):
        linked = [p for p in with_plans(group_headers([SS, plan("RP1.dcm", "p1"), other, orphan])) if p.doses]
        assert [p.plans[0].sop_instance_uid for p in linked] == ["p1"]
    # a dose without a frame of reference is never linked by it
    (u,) = group_headers([SS, plan("RP1.dcm", "p1"), dose("RD.dcm", "d1", "gone", frame=None)]).unassigned
    assert u.reason == "dose with no plan: its referenced plan gone is not in the input"


def test_dose_without_any_plan_reference_or_candidate_is_unassigned():
    (u,) = group_headers([SS, dose("RD.dcm", "d1")]).unassigned
    assert u.reason == "dose with no plan: it references no plan"


def test_dose_referencing_plans_of_two_courses_is_unassigned():
    other_frame = plan("RP2.dcm", "p2", frame="F2")
    found = group_headers([SS, plan("RP1.dcm", "p1"), other_frame, dose("RD.dcm", "d1", "p1", "p2")])
    (u,) = found.unassigned
    assert u.reason == "dose references plans of different courses"
    assert len(with_plans(found)) == 2


def test_plans_of_one_course_form_a_composite():
    boost = plan("RP2.dcm", "p2", referenced_plan_uids=("p1",), referenced_plan_relationships=("PREDECESSOR",))
    found = group_headers([SS, plan("RP1.dcm", "p1"), boost, dose("RD1.dcm", "d1", "p1"), dose("RD2.dcm", "d2", "p2")])
    (ps,) = with_plans(found)
    assert [p.sop_instance_uid for p in ps.plans] == ["p1", "p2"]
    assert [d.sop_instance_uid for d in ps.doses] == ["d1", "d2"]
    # no relationship given counts as one course too; another relationship does not join
    loose = plan("RP2.dcm", "p2", referenced_plan_uids=("p1",), frame="F2")
    assert len(with_plans(group_headers([SS, plan("RP1.dcm", "p1"), loose]))) == 1
    other = plan(
        "RP2.dcm", "p2", referenced_plan_uids=("p1",), referenced_plan_relationships=("VERIFIED_PLAN",), frame="F2"
    )
    assert len(with_plans(group_headers([SS, plan("RP1.dcm", "p1"), other]))) == 2
    # a plan that verifies another (VERIFIED_PLAN) is a verification plan: not in the course, same frame or not
    verifying = plan("RP2.dcm", "p2", referenced_plan_uids=("p1",), referenced_plan_relationships=("VERIFIED_PLAN",))
    assert len(with_plans(group_headers([SS, plan("RP1.dcm", "p1"), verifying]))) == 2


def test_verification_plans_are_never_joined_to_a_course():
    verification = plan(
        "RV.dcm", "v1", plan_intent="verification", referenced_plan_uids=("p1",), referenced_plan_relationships=("",)
    )
    assert len(with_plans(group_headers([SS, plan("RP1.dcm", "p1"), verification]))) == 2
    treated_as_reference = plan(
        "RP2.dcm", "p2", referenced_plan_uids=("v1",), referenced_plan_relationships=("PREDECESSOR",)
    )
    v = plan("RV.dcm", "v1", plan_intent="VERIFICATION")
    assert len(with_plans(group_headers([SS, v, treated_as_reference]))) == 2


def test_a_multi_plan_dose_joins_its_plans():
    multi = dose("RD.dcm", "d1", "p1", "p2", "p3", kind="MULTI_PLAN")
    found = group_headers([SS, plan("RP1.dcm", "p1"), plan("RP2.dcm", "p2"), plan("RP3.dcm", "p3"), multi])
    (ps,) = with_plans(found)
    assert len(ps.plans) == 3 and [d.sop_instance_uid for d in ps.doses] == ["d1"]
    # an ordinary dose naming two plans (of two frames) does not join them
    pair = dose("RD.dcm", "d1", "p1", "p2")
    assert len(with_plans(group_headers([SS, plan("RP1.dcm", "p1"), plan("RP2.dcm", "p2", frame="F2"), pair]))) == 2


def test_duplicates_and_ion_plans_are_unassigned_with_the_reason():
    copy = h("copy/RP.dcm", Modality.RTPLAN, "p1", referenced_structure_set_uid="ss")
    ion = h("RI.dcm", Modality.RTIONPLAN, "i1")
    found = group_headers([copy, plan("RP.dcm", "p1"), SS, ion, h("CT1.dcm", "CT", "ct1")])
    reasons = {u.path: u.reason for u in found.unassigned}
    # the first file in path order is used: /d/RP.dcm sorts before /d/copy/RP.dcm
    assert reasons == {
        "/d/copy/RP.dcm": "duplicate SOPInstanceUID p1 (also in /d/RP.dcm): an identical copy; the first file is used",
        "/d/RI.dcm": "RT Ion Plan: rtqa checks photon plans only",
    }
    (ps,) = found.plan_sets
    assert ps.plans[0].path == "/d/RP.dcm"


def test_structure_set_found_by_frame_only_when_unambiguous():
    lost = plan("RP.dcm", "p1", referenced_structure_set_uid="gone")
    (ps,) = with_plans(group_headers([lost, SS, dose("RD.dcm", "d1", "p1")]))
    assert ps.structure_set is SS and ps.problems == ()
    (link,) = ps.inferred_links
    assert link == "structure set RS.dcm linked by PatientID + FrameOfReferenceUID (the plan references gone)"
    second = h("RS2.dcm", Modality.RTSTRUCT, "ss2")
    (ps,) = with_plans(group_headers([lost, SS, second, dose("RD.dcm", "d1", "p1")]))
    assert ps.structure_set is None
    assert ps.problems == (
        "plan's structure set gone is absent and 2 structure sets of the patient share its frame of reference "
        "(ambiguous)",
    )
    elsewhere = h("RS.dcm", Modality.RTSTRUCT, "ss9", frame="F9")
    (ps,) = with_plans(group_headers([lost, elsewhere, dose("RD.dcm", "d1", "p1")]))
    assert ps.problems == ("plan RP.dcm references structure set gone, which is not in the input",)
    # the structure set nobody uses is listed on its own (structure-set-only eligibility)
    assert [p.structure_set.sop_instance_uid for p in group_headers([lost, elsewhere]).plan_sets if not p.plans] == [
        "ss9"
    ]


def test_plans_of_a_course_naming_different_structure_sets_are_reported():
    boost = plan("RP2.dcm", "p2", referenced_structure_set_uid="ss2", referenced_plan_uids=("p1",))
    second = h("RS2.dcm", Modality.RTSTRUCT, "ss2")
    (ps,) = with_plans(group_headers([plan("RP1.dcm", "p1"), boost, SS, second, dose("RD.dcm", "d", "p1")]))
    assert any("reference 2 different structure sets" in p for p in ps.problems)
    assert ps.structure_set is SS  # the first by UID


def test_missing_dose_and_frame_mismatch_are_problems():
    (ps,) = with_plans(group_headers([plan("RP.dcm", "p1"), SS]))
    assert ps.problems == ("no RT Dose file for this plan",)
    shifted = dose("RD.dcm", "d1", "p1", frame="F2")
    (ps,) = with_plans(group_headers([plan("RP.dcm", "p1"), SS, shifted]))
    assert ps.problems == ("FrameOfReferenceUID of dose RD.dcm (F2) differs from the structure set's (F1)",)


def test_plan_sets_are_sorted_by_patient():
    found = group_headers(
        [
            plan("b/RP.dcm", "pb", patient="B", referenced_structure_set_uid=None),
            plan("a/RP.dcm", "pa", patient="A", referenced_structure_set_uid=None),
        ]
    )
    assert [p.patient_id for p in found.plan_sets] == ["A", "B"]


def test_a_duplicate_does_not_hide_the_files_after_it():
    found = group_headers(
        [
            plan("A_plan.dcm", "p1"),
            plan("B_copy.dcm", "p1"),
            h("C_rs.dcm", Modality.RTSTRUCT, "ss"),
            dose("D_rd.dcm", "d1", "p1"),
        ]
    )
    (ps,) = found.plan_sets
    assert ps.structure_set is not None and [d.path for d in ps.doses] == ["/d/D_rd.dcm"]
    assert [u.path for u in found.unassigned] == ["/d/B_copy.dcm"]


def test_unassigned_doses_name_their_file_and_do_not_stop_the_others():
    two_courses = dose("A_rd.dcm", "d0", "p1", "p2")
    lost = dose("B_rd.dcm", "d1", "gone1", "gone2", frame="F9")
    found = group_headers(
        [SS, plan("RP1.dcm", "p1"), plan("RP2.dcm", "p2", frame="F2"), two_courses, lost, dose("C.dcm", "d2", "p1")]
    )
    assert {u.path: u.reason for u in found.unassigned} == {
        "/d/A_rd.dcm": "dose references plans of different courses",
        "/d/B_rd.dcm": "dose with no plan: its referenced plan gone1, gone2 is not in the input",
    }
    assert [d.path for p in found.plan_sets for d in p.doses] == ["/d/C.dcm"]


def test_relationships_shorter_than_the_references_still_join():
    boost = plan("RP2.dcm", "p2", referenced_plan_uids=("p1", "p9"), referenced_plan_relationships=("PREDECESSOR",))
    assert len(with_plans(group_headers([SS, plan("RP1.dcm", "p1"), boost]))) == 1


def test_absent_structure_sets_are_named_in_the_problem():
    nothing = plan("RP.dcm", "p1", referenced_structure_set_uid=None)
    (ps,) = group_headers([nothing, dose("RD.dcm", "d1", "p1")]).plan_sets
    assert ps.problems == ("plan RP.dcm references structure set none, which is not in the input",)
    a = plan("RP1.dcm", "p1", referenced_structure_set_uid="gone1")
    b = plan("RP2.dcm", "p2", referenced_structure_set_uid="gone2", referenced_plan_uids=("p1",))
    (ps,) = group_headers([a, b, dose("RD.dcm", "d1", "p1")]).plan_sets
    assert "plan RP1.dcm references structure set gone1, gone2, which is not in the input" in ps.problems


def test_discover_reads_a_folder_tree(liver_tree, tmp_path):
    import shutil

    tree = tmp_path / "upload"
    folder = tree / "a" / "case"
    shutil.copytree(case(liver_tree, "liver_truncated_dose"), folder)
    shutil.copy(folder / "RD_PLAN.dcm", folder / "RD_COPY.dcm")  # a second unreadable dose beside the plan
    (tree / "notes.txt").write_text("not DICOM\n")
    (tree / "a" / "thumbs.db").write_bytes(b"\0" * 200)
    ct = sorted(os.listdir(os.path.join(case(liver_tree, "liver_clean"), "CT")))[:3]
    for name in ct:
        shutil.copy(os.path.join(case(liver_tree, "liver_clean"), "CT", name), tree / name)
    # a plan and structure set without a dose, in a folder with nothing unreadable
    other = tree / "b"
    other.mkdir()
    for name in ("RP.dcm", "RS.dcm"):
        shutil.copy(os.path.join(case(liver_tree, "liver_clean"), name), other / name)
    found = discover([tree, tree / "notes.txt"])  # a file named twice is read once
    # the 3 CT slices belong to HCC-CLEAN's frame of reference: given to its plan set, not ignored
    assert found.ignored == {"not DICOM": 2}
    assert [u.path for u in found.unassigned] == [str(folder / "RD_COPY.dcm"), str(folder / "RD_PLAN.dcm")]
    # each reason without the path, which the listing prints beside it
    reason = found.unassigned[0].reason
    assert "truncated" in reason and not reason.startswith(str(tree))
    truncated = next(p for p in found.plan_sets if p.plans and p.patient_id != "HCC-CLEAN")
    assert truncated.problems == (
        f"no RT Dose file for this plan (unreadable beside it: RD_COPY.dcm: {reason}; RD_PLAN.dcm: {reason})",
    )
    assert truncated.structure_set is not None and truncated.doses == () and truncated.inferred_links == ()
    assert truncated.patient_id == truncated.plans[0].patient_id
    clean = next(p for p in found.plan_sets if p.patient_id == "HCC-CLEAN")
    assert clean.problems == ("no RT Dose file for this plan",)
    assert sorted(os.path.basename(h.path) for h in clean.ct_images) == ct
    assert iter_files([tree / "a", folder / "RS.dcm", tree / "missing"]) == sorted(
        str(p) for p in (tree / "a").rglob("*") if p.is_file()
    )


def test_only_the_missing_dose_problem_points_at_unreadable_files_beside_the_plan():
    from rtqa.case import UnassignedFile
    from rtqa.discovery.grouping import _explain_missing_doses

    lost = plan("RP.dcm", "p1", referenced_structure_set_uid=None)
    found = group_headers([lost])  # no dose, no structure set: two problems
    (ps,) = found.plan_sets
    assert len(ps.problems) == 2
    explained = _explain_missing_doses(found.plan_sets, [UnassignedFile("/d/RD.dcm", "file truncated")])
    assert set(explained[0].problems) == {
        "plan RP.dcm references structure set none, which is not in the input",
        "no RT Dose file for this plan (unreadable beside it: RD.dcm: file truncated)",
    }


def test_a_reader_message_keeps_its_text_when_it_does_not_start_with_the_path():
    from rtqa.discovery.grouping import _strip_path

    assert _strip_path("/d/RD.dcm: truncated", "/d/RD.dcm") == "truncated"
    assert _strip_path("truncated at byte 10", "/d/RD.dcm") == "truncated at byte 10"


# -- CT series for the report's images -----------------------------------------------------------


def ct(name: str, series: str | None, patient: str = "P1", frame: str | None = "F1") -> FileHeader:
    return h(name, "CT", f"ct-{name}", patient=patient, frame=frame, series_instance_uid=series)


def ct_of_the_plan(*extra: FileHeader, ss: FileHeader = SS) -> list[str]:
    (ps,) = with_plans(group_headers([ss, plan("RP.dcm", "p1"), dose("RD.dcm", "d1", "p1"), *extra]))
    return [c.path for c in ps.ct_images]


def test_the_referenced_ct_series_is_attached_whatever_its_frame():
    ss = h("RS.dcm", Modality.RTSTRUCT, "ss", referenced_series_uids=("s2",))
    images = (ct("b.dcm", "s2", frame="F9"), ct("a.dcm", "s2", frame="F9"), ct("c.dcm", "s3"))
    assert ct_of_the_plan(*images, ss=ss) == ["/d/a.dcm", "/d/b.dcm"]  # sorted by path


def test_without_a_reference_only_the_one_series_of_the_patient_and_frame_is_attached():
    assert ct_of_the_plan(ct("a.dcm", "s1")) == ["/d/a.dcm"]
    # another patient's series, or another frame's, is no candidate
    assert ct_of_the_plan(ct("a.dcm", "s1", patient="P2")) == []
    assert ct_of_the_plan(ct("a.dcm", "s1", frame="F2")) == []
    assert ct_of_the_plan(ct("a.dcm", "s1", patient="P2"), ct("b.dcm", "s2")) == ["/d/b.dcm"]
    # two series of the patient in the frame: which one is meant cannot be told
    assert ct_of_the_plan(ct("a.dcm", "s1"), ct("b.dcm", "s2")) == []
    # slices without a SeriesInstanceUID cannot be grouped into a series
    assert ct_of_the_plan(ct("a.dcm", None)) == []
    # a structure set without a frame of reference matches no series by frame
    no_frame = h("RS.dcm", Modality.RTSTRUCT, "ss", frame=None)
    assert ct_of_the_plan(ct("a.dcm", "s1", frame=None), ss=no_frame) == []


# -- files that cannot be combined ---------------------------------------------------------------


def test_files_of_another_patient_are_named_and_never_combined():
    other_ss = h("RS.dcm", Modality.RTSTRUCT, "ss", patient="P2")
    (ps,) = with_plans(group_headers([other_ss, plan("RP.dcm", "p1"), dose("RD.dcm", "d1", "p1")]))
    assert "RS.dcm belongs to PatientID 'P2', the plan to 'P1': files of different patients are never combined" in (
        ps.problems
    )
    # the second plan of a course, of another patient
    boost = plan("RP2.dcm", "p2", patient="P2", referenced_plan_uids=("p1",))
    (ps,) = with_plans(group_headers([SS, plan("RP1.dcm", "p1"), boost, dose("RD.dcm", "d1", "p1")]))
    assert any(p.startswith("RP2.dcm belongs to PatientID 'P2'") for p in ps.problems)


def test_a_uid_shared_by_different_files_makes_the_plan_using_it_not_evaluable():
    conflicting = {"ss": ("/d/RS.dcm", "/d/RS_other.dcm")}
    twin = h("RS_other.dcm", Modality.RTSTRUCT, "ss")
    found = group_headers([SS, twin, plan("RP.dcm", "p1"), dose("RD.dcm", "d1", "p1")], conflicting=conflicting)
    (ps,) = with_plans(found)
    assert ps.problems == (
        "SOPInstanceUID ss is shared by files with different contents (/d/RS.dcm, /d/RS_other.dcm): "
        "rtqa cannot tell which one is meant",
    )
    (u,) = found.unassigned
    assert u.path == "/d/RS_other.dcm"
    assert u.reason.startswith("duplicate SOPInstanceUID ss (also in /d/RS.dcm): its contents differ")


def test_only_rt_files_sharing_a_uid_with_different_contents_conflict(tmp_path):
    from rtqa.discovery.grouping import _conflicting_uids

    def file(name: str, content: bytes, modality: Modality | str, uid: str) -> FileHeader:
        (tmp_path / name).write_bytes(content)
        return FileHeader(str(tmp_path / name), modality, SOP, uid, "P1")

    headers = [
        file("RD_b.dcm", b"hot", Modality.RTDOSE, "d1"),
        file("RD_a.dcm", b"clean", Modality.RTDOSE, "d1"),
        file("RP.dcm", b"plan", Modality.RTPLAN, "p1"),
        file("RP_copy.dcm", b"plan", Modality.RTPLAN, "p1"),  # an identical copy is harmless
        file("CT1.dcm", b"one", "CT", "c1"),  # images are not plan files
        file("CT2.dcm", b"two", "CT", "c1"),
        file("RS.dcm", b"ss", Modality.RTSTRUCT, "s1"),  # a UID used once
    ]
    assert _conflicting_uids(headers) == {"d1": (str(tmp_path / "RD_a.dcm"), str(tmp_path / "RD_b.dcm"))}


# -- the walk --------------------------------------------------------------------------------------


def test_the_walk_skips_what_is_not_a_regular_file_and_says_why(tmp_path):
    from rtqa.discovery.grouping import walk_files

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "RP.dcm").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "RS.dcm").write_bytes(b"x")
    os.mkfifo(tmp_path / "b" / "RD.dcm")
    (tmp_path / "b" / "to_a").symlink_to(tmp_path / "a")
    (tmp_path / "b" / "RP_link.dcm").symlink_to(tmp_path / "a" / "RP.dcm")  # links to files are followed
    os.mkfifo(tmp_path / "named.dcm")
    # folder b named first, a twice: a second visit of a must not end the walk before b
    files, skipped = walk_files([tmp_path / "b", tmp_path / "a", tmp_path / "a", tmp_path / "named.dcm"])
    assert files == sorted(str(tmp_path / p) for p in ("a/RP.dcm", "b/RS.dcm", "b/RP_link.dcm"))
    assert dict(skipped) == {
        str(tmp_path / "b" / "RD.dcm"): "FIFO, not a regular file: not opened",
        str(tmp_path / "b" / "to_a"): "symbolic link to a folder: not followed (name the folder itself to check it)",
        str(tmp_path / "named.dcm"): "FIFO, not a regular file: not opened",
    }


def test_discovery_counts_what_it_ignored_and_skipped(liver_tree, tmp_path):
    import shutil

    import pydicom

    folder = tmp_path / "upload"
    folder.mkdir()
    for name in ("RP.dcm", "RS.dcm", "RD_PLAN.dcm"):
        shutil.copy(os.path.join(case(liver_tree, "liver_clean"), name), folder / name)
    # a second dose under the same SOPInstanceUID with one value changed: a conflict
    ds = pydicom.dcmread(folder / "RD_PLAN.dcm")
    ds.DoseGridScaling = float(ds.DoseGridScaling) * 1.5
    ds.save_as(folder / "RD_HOT.dcm")
    # two registration objects (DICOM, not RT, not images of a plan set): ignored, counted by modality
    for n in (1, 2):
        reg = pydicom.dcmread(folder / "RS.dcm")
        reg.Modality = "REG"
        reg.SOPClassUID = reg.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.1"  # registration
        reg.SOPInstanceUID = f"1.2.3.{n}"
        reg.save_as(folder / f"REG{n}.dcm")
    os.mkfifo(folder / "pipe")
    (folder / "gone.dcm").symlink_to(folder / "no-such-file")
    found = discover([folder])
    assert found.ignored == {"REG": 2, "skipped (not a regular file)": 2}
    assert [p for p, _ in found.skipped] == [str(folder / "gone.dcm"), str(folder / "pipe")]
    (ps,) = with_plans(found)
    assert any("is shared by files with different contents" in p for p in ps.problems)
    assert [u.path for u in found.unassigned] == [str(folder / "RD_PLAN.dcm")]  # the later of the two by path
