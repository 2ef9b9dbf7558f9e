"""Discovery: find every plan in any folder layout and group its files into plan sets.

Only headers are read (no pixel data, no contours). Files are linked through referenced
SOP Instance UIDs (dose -> plan -> structure set); when an anonymiser broke a reference, a
link by PatientID + FrameOfReferenceUID is allowed if it is unambiguous, and flagged as
inferred. Every problem is reported with the file and the reason; nothing here raises for
bad input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from rtqa.case import Course, Discovery, PlanSet, UnassignedFile
from rtqa.errors import InputError
from rtqa.io.common import NotDicomError, file_kind
from rtqa.io.header import read_header
from rtqa.model import FileHeader, Modality

# plan-to-plan relationships that make two plans one treatment course (a composite)
_COURSE_RELATIONSHIPS = {"PREDECESSOR", "SUCCESSOR", "CONCURRENT", "PREDECESSOR_ALT", "SUCCESSOR_ALT", ""}


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Every regular file under the given files and folders, sorted, without duplicates."""
    return walk_files(paths)[0]


def walk_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[tuple[str, str]]]:
    """The regular files under the given files and folders, and what was skipped, with why.

    The walk is iterative (a tree 1,500 folders deep is no deeper for it than a flat one),
    does not follow symbolic links to folders inside the tree (a link to ``/`` or to a parent
    would widen it without end) and visits every folder once by its device and inode.
    Symbolic links to files are followed. Only regular files are returned: a FIFO would block
    the reader forever and a link to ``/dev/zero`` never ends, so they, devices, sockets and
    dangling links are skipped.

    Returns
    -------
    (files, skipped)
        ``files`` sorted without duplicates; ``skipped`` as ``(path, reason)`` sorted by path.
    """
    found: set[str] = set()
    skipped: dict[str, str] = {}
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[str] = []
    for p in paths:
        sp = os.fspath(p)
        kind = _classify(sp)
        if kind == "dir":
            stack.append(sp)
        elif kind == "file":
            found.add(sp)
        else:
            skipped[sp] = kind
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            skipped[folder] = f"folder cannot be examined ({exc.strerror})"
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a bind mount loop, or a folder named twice on the command line
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped[folder] = f"folder cannot be listed ({exc.strerror})"
            continue
        for entry in entries:
            kind = _classify(entry.path)
            if kind == "dir" and entry.is_symlink():
                # a link to "/" or to a parent would widen the walk without end
                skipped[entry.path] = "symbolic link to a folder: not followed (name the folder itself to check it)"
            elif kind == "dir":
                stack.append(entry.path)
            elif kind == "file":
                found.add(entry.path)
            else:
                skipped[entry.path] = kind
    return sorted(found), sorted(skipped.items())


def _classify(path: str) -> str:
    """``"file"``, ``"dir"``, or why the path is skipped (symlinks followed, once)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if os.path.islink(path):
            return f"symbolic link that leads nowhere ({exc.strerror}): not followed"
        return f"cannot be examined ({exc.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return f"{file_kind(mode)}, not a regular file: not opened"


def discover(paths: Sequence[str | os.PathLike[str]]) -> Discovery:
    """Read the header of every file under ``paths`` and group the RT files into plan sets.

    Files that are not regular (FIFOs, devices, dangling or looping links) are never opened;
    they are listed in ``Discovery.skipped``.
    """
    headers: list[FileHeader] = []
    unassigned: list[UnassignedFile] = []
    ignored: dict[str, int] = defaultdict(int)
    files, skipped = walk_files(paths)
    for path in files:
        try:
            headers.append(read_header(path))
        except NotDicomError:
            ignored["not DICOM"] += 1
        except InputError as exc:
            unassigned.append(UnassignedFile(path, _strip_path(str(exc), path)))
    result = group_headers(headers, conflicting=_conflicting_uids(headers))
    plan_sets = _explain_missing_doses(result.plan_sets, unassigned)
    attached = {h.path for ps in plan_sets for h in ps.ct_images}
    for h in headers:
        if h.modality not in (Modality.RTPLAN, Modality.RTSTRUCT, Modality.RTDOSE, Modality.RTIONPLAN):
            if h.path not in attached:
                ignored[str(h.modality)] += 1
    if skipped:
        ignored["skipped (not a regular file)"] += len(skipped)
    return Discovery(
        plan_sets=plan_sets,
        unassigned=tuple(sorted(unassigned + list(result.unassigned), key=lambda u: u.path)),
        ignored=dict(sorted(ignored.items())),
        skipped=tuple(skipped),
    )


def _conflicting_uids(headers: Sequence[FileHeader]) -> dict[str, tuple[str, ...]]:
    """SOPInstanceUIDs that several RT files share with different contents (a hot and a clean
    dose under one UID, say): which one is meant cannot be told, so the plan is not evaluable.
    Identical copies are harmless and are not listed."""
    rt = (Modality.RTPLAN, Modality.RTSTRUCT, Modality.RTDOSE)
    by_uid: dict[str, list[str]] = defaultdict(list)
    for h in headers:
        if h.modality in rt:
            by_uid[h.sop_instance_uid].append(h.path)
    out = {}
    for uid, paths in by_uid.items():
        if len(paths) > 1 and len({file_sha256(p) for p in paths}) > 1:
            out[uid] = tuple(sorted(paths))
    return out


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (reports name inputs by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


NO_DOSE = "no RT Dose file for this plan"
NO_PLAN = "dose with no plan"  # the reason of an unassigned dose starts so (rtqa dvh pairs it without a plan)


def _explain_missing_doses(found: tuple[PlanSet, ...], unreadable: list[UnassignedFile]) -> tuple[PlanSet, ...]:
    """Point a plan without a dose at unreadable files beside it (a truncated dose, say)."""
    by_folder: dict[str, list[UnassignedFile]] = defaultdict(list)
    for u in unreadable:
        by_folder[os.path.dirname(u.path)].append(u)
    plan_sets = []
    for ps in found:
        if NO_DOSE in ps.problems:
            near = [u for h in ps.plans for u in by_folder.get(os.path.dirname(h.path), [])]
            if near:
                listed = "; ".join(f"{os.path.basename(u.path)}: {u.reason}" for u in near)
                problems = tuple(p + f" (unreadable beside it: {listed})" if p == NO_DOSE else p for p in ps.problems)
                ps = dataclasses.replace(ps, problems=problems)
        plan_sets.append(ps)
    return tuple(plan_sets)


def _strip_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def group_headers(
    headers: Sequence[FileHeader], *, conflicting: Mapping[str, tuple[str, ...]] | None = None
) -> Discovery:
    """Group file headers into plan sets (pure: no file access).

    ``conflicting`` maps SOPInstanceUIDs shared by files of different contents to those files:
    a plan set that uses such a UID is not evaluable. Files of one plan set must share one
    PatientID: files of other patients are never combined into a plan.
    """
    conflicting = conflicting or {}
    unassigned: list[UnassignedFile] = []
    by_uid: dict[str, FileHeader] = {}
    for h in sorted(headers, key=lambda h: h.path):
        if h.modality not in (Modality.RTPLAN, Modality.RTSTRUCT, Modality.RTDOSE, Modality.RTIONPLAN):
            continue
        if h.sop_instance_uid in by_uid:
            other = by_uid[h.sop_instance_uid].path
            why = (
                "its contents differ: which file is meant cannot be told, the plan using it is not evaluable"
                if h.sop_instance_uid in conflicting
                else "an identical copy; the first file is used"
            )
            unassigned.append(
                UnassignedFile(h.path, f"duplicate SOPInstanceUID {h.sop_instance_uid} (also in {other}): {why}")
            )
            continue
        if h.modality == Modality.RTIONPLAN:
            unassigned.append(UnassignedFile(h.path, "RT Ion Plan: rtqa checks photon plans only"))
            continue
        by_uid[h.sop_instance_uid] = h

    plans = {u: h for u, h in by_uid.items() if h.modality == Modality.RTPLAN}
    structure_sets = {u: h for u, h in by_uid.items() if h.modality == Modality.RTSTRUCT}
    doses = [h for h in by_uid.values() if h.modality == Modality.RTDOSE]

    # 1. composites: plans of one course, linked by plan references or a MULTI_PLAN dose
    parent = {u: u for u in plans}

    def find(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    def join(a: str, b: str) -> bool:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
        return ra != rb

    notes: list[tuple[str, str]] = []  # (plan UID, how it joined its course)
    for u, h in plans.items():
        for ref, rel in zip(
            h.referenced_plan_uids, h.referenced_plan_relationships or ("",) * len(h.referenced_plan_uids), strict=False
        ):
            if (
                ref in plans
                and rel.upper() in _COURSE_RELATIONSHIPS
                and not _is_verification(h)
                and not _is_verification(plans[ref])
            ):
                join(u, ref)
                notes.append((u, f"{_name(h)} references {_name(plans[ref])} ({rel.upper() or 'no relationship'})"))
    for d in doses:
        if (d.dose_summation_type or "") == "MULTI_PLAN":
            refs = [r for r in d.referenced_plan_uids if r in plans]
            for a, b in itertools.pairwise(refs):
                join(a, b)
            if len(refs) > 1:
                named = ", ".join(_name(plans[r]) for r in refs)
                notes.append((refs[0], f"MULTI_PLAN dose {os.path.basename(d.path)} sums {named}"))
    notes.extend(_join_unlinked(plans, join))
    groups: dict[str, list[str]] = defaultdict(list)
    for u in sorted(plans):
        groups[find(u)].append(u)
    for members in groups.values():
        # a course's plans in delivery order as far as the files tell: a plan that references
        # another plan of the course after it, then by file path (deterministic, not by UID)
        inside = set(members)
        members.sort(key=lambda u: (any(r in inside for r in plans[u].referenced_plan_uids), plans[u].path))
    course_notes: dict[str, list[str]] = defaultdict(list)
    for u, note in notes:
        if note not in course_notes[find(u)]:
            course_notes[find(u)].append(note)

    # 2. doses to groups
    group_of = {u: find(u) for u in plans}
    group_doses: dict[str, list[FileHeader]] = defaultdict(list)
    inferred: dict[str, list[str]] = defaultdict(list)
    for d in sorted(doses, key=lambda h: h.path):
        targets = {group_of[r] for r in d.referenced_plan_uids if r in group_of}
        if len(targets) == 1:
            group_doses[targets.pop()].append(d)
            continue
        if len(targets) > 1:
            unassigned.append(UnassignedFile(d.path, "dose references plans of different courses"))
            continue
        candidates = sorted(
            {
                group_of[u]
                for u, p in plans.items()
                if p.patient_id == d.patient_id
                and d.frame_of_reference_uid
                and p.frame_of_reference_uid == d.frame_of_reference_uid
            }
        )
        missing = ", ".join(d.referenced_plan_uids)
        # what the dose says of its plan: a plan that is not in the input, or no plan at all
        absent = f"its referenced plan {missing} is not in the input" if missing else "it references no plan"
        if len(candidates) == 1:
            group_doses[candidates[0]].append(d)
            inferred[candidates[0]].append(
                f"dose {os.path.basename(d.path)} linked to its plan by PatientID + FrameOfReferenceUID ({absent})"
            )
        elif candidates:
            unassigned.append(
                UnassignedFile(
                    d.path,
                    f"{NO_PLAN}: {absent}, and {len(candidates)} plans of patient "
                    f"{d.patient_id!r} share its frame of reference (ambiguous)",
                )
            )
        else:
            unassigned.append(UnassignedFile(d.path, f"{NO_PLAN}: {absent}"))

    # 3. structure sets to groups
    used_ss: set[str] = set()
    plan_sets: list[PlanSet] = []
    for root, members in groups.items():
        heads = [plans[u] for u in members]
        problems: list[str] = []
        links = list(inferred.get(root, []))
        ss_uids = {h.referenced_structure_set_uid for h in heads if h.referenced_structure_set_uid}
        ss: FileHeader | None = None
        present = [u for u in sorted(ss_uids) if u in structure_sets]
        if len(ss_uids) > 1:
            problems.append(
                f"the plans of this course ({', '.join(_name(h) for h in heads)}) reference {len(ss_uids)} different "
                "structure sets: the course's composite dose is graded on one set of contours"
            )
        if present:
            ss = structure_sets[present[0]]
        else:
            first = heads[0]
            ss_candidates = sorted(
                (
                    cand
                    for cand in structure_sets.values()
                    if cand.patient_id == first.patient_id
                    and first.frame_of_reference_uid
                    and cand.frame_of_reference_uid == first.frame_of_reference_uid
                ),
                key=lambda cand: cand.path,
            )
            wanted = ", ".join(sorted(ss_uids)) or "none"
            if len(ss_candidates) == 1:
                ss = ss_candidates[0]
                links.append(
                    f"structure set {os.path.basename(ss.path)} linked by PatientID + FrameOfReferenceUID "
                    f"(the plan references {wanted})"
                )
            elif ss_candidates:
                problems.append(
                    f"plan's structure set {wanted} is absent and {len(ss_candidates)} structure sets of the "
                    "patient share its frame of reference (ambiguous)"
                )
            else:
                problems.append(
                    f"plan {os.path.basename(first.path)} references structure set {wanted}, which is not in the input"
                )
        if ss is not None:
            used_ss.add(ss.sop_instance_uid)
        dose_list = sorted(group_doses.get(root, []), key=lambda h: h.path)
        if not dose_list:
            problems.append(NO_DOSE)
        pid = heads[0].patient_id
        for other in (*heads[1:], *((ss,) if ss is not None else ()), *dose_list):
            if other.patient_id != pid:
                problems.append(
                    f"{os.path.basename(other.path)} belongs to PatientID {other.patient_id!r}, the plan to {pid!r}: "
                    "files of different patients are never combined"
                )
        for h in (*heads, *((ss,) if ss is not None else ()), *dose_list):
            if h.sop_instance_uid in conflicting:
                problems.append(
                    f"SOPInstanceUID {h.sop_instance_uid} is shared by files with different contents "
                    f"({', '.join(conflicting[h.sop_instance_uid])}): rtqa cannot tell which one is meant"
                )
        if ss is not None:
            for d in dose_list:
                if (
                    d.frame_of_reference_uid
                    and ss.frame_of_reference_uid
                    and d.frame_of_reference_uid != ss.frame_of_reference_uid
                ):
                    problems.append(
                        f"FrameOfReferenceUID of dose {os.path.basename(d.path)} ({d.frame_of_reference_uid}) differs "
                        f"from the structure set's ({ss.frame_of_reference_uid})"
                    )
        course = Course(
            institution=next((h.institution_name for h in heads if h.institution_name), None) or "",
            patient_id=pid,
            frame_of_reference_uid=heads[0].frame_of_reference_uid,
            plan_uids=tuple(h.sop_instance_uid for h in heads),
            links=tuple(course_notes.get(root, ())),
        )
        plan_sets.append(
            PlanSet(
                patient_id=heads[0].patient_id,
                plans=tuple(heads),
                structure_set=ss,
                doses=tuple(dose_list),
                inferred_links=tuple(links),
                problems=tuple(problems),
                course=course,
            )
        )
    for u, s in sorted(structure_sets.items(), key=lambda kv: kv[1].path):
        if u not in used_ss:
            plan_sets.append(PlanSet(patient_id=s.patient_id, plans=(), structure_set=s, doses=()))
    plan_sets.sort(key=lambda p: (p.patient_id, p.label, p.files))
    series = _ct_series(headers)
    plan_sets = [dataclasses.replace(p, ct_images=_ct_of(p, series)) for p in plan_sets]
    return Discovery(plan_sets=tuple(plan_sets), unassigned=tuple(unassigned))


def _ct_series(headers: Sequence[FileHeader]) -> dict[str, tuple[FileHeader, ...]]:
    """CT images by SeriesInstanceUID (slices without one are left out: they cannot be grouped)."""
    series: dict[str, list[FileHeader]] = defaultdict(list)
    for h in headers:
        if h.modality == "CT" and h.series_instance_uid:
            series[h.series_instance_uid].append(h)
    return {uid: tuple(sorted(hs, key=lambda h: h.path)) for uid, hs in series.items()}


def _ct_of(plan_set: PlanSet, series: dict[str, tuple[FileHeader, ...]]) -> tuple[FileHeader, ...]:
    """The CT series a plan set's contours were drawn on, for the report's images.

    The series the structure set references, else the one series of the same patient and frame
    of reference; several candidates and no reference: none (the images show the dose alone).
    """
    ss = plan_set.structure_set
    if ss is None:
        return ()
    referenced = [series[u] for u in ss.referenced_series_uids if u in series]
    if referenced:
        return referenced[0]
    candidates = [
        hs
        for hs in series.values()
        if hs[0].patient_id == ss.patient_id
        and ss.frame_of_reference_uid
        and hs[0].frame_of_reference_uid == ss.frame_of_reference_uid
    ]
    return candidates[0] if len(candidates) == 1 else ()


def _join_unlinked(plans: Mapping[str, FileHeader], join: Callable[[str, str], bool]) -> list[tuple[str, str]]:
    """Join the treatment plans of one patient in one frame of reference into one course,
    linked or not (a boost exported as a second, unlinked plan).

    A patient is an institution + PatientID: plans whose InstitutionName differ (both present)
    are never joined; a plan without one joins the patient's plans of the one institution
    present. Plans without a FrameOfReferenceUID cannot be shown to share the frame and stay
    apart; verification plans (PlanIntent VERIFICATION, or a plan that references another as
    VERIFIED_PLAN) stay apart. Plans that reference each other as ALTERNATIVE
    (alternatives for one treatment, not both delivered) are never joined by this rule.
    """
    by_frame: dict[tuple[str, str], list[str]] = defaultdict(list)
    for u, h in sorted(plans.items()):
        # VERIFIED_PLAN is used only by a verification plan (PS3.3 C.8.8.9), whatever its PlanIntent
        verifies = any(rel.upper() == "VERIFIED_PLAN" for rel in h.referenced_plan_relationships)
        if h.frame_of_reference_uid and not _is_verification(h) and not verifies:
            by_frame[(h.patient_id, h.frame_of_reference_uid)].append(u)
    alternatives = {
        frozenset((u, ref))
        for u, h in plans.items()
        for ref, rel in zip(h.referenced_plan_uids, h.referenced_plan_relationships, strict=False)
        if rel.upper() == "ALTERNATIVE"
    }
    notes: list[tuple[str, str]] = []
    for members in by_frame.values():
        institutions = {(plans[u].institution_name or "").strip() for u in members} - {""}
        parts: dict[str, list[str]] = defaultdict(list)
        for u in members:
            own = (plans[u].institution_name or "").strip()
            parts[own or (next(iter(institutions)) if len(institutions) == 1 else "")].append(u)
        for part in parts.values():
            if any(frozenset((a, b)) in alternatives for a, b in itertools.combinations(part, 2)):
                continue
            joined = [join(a, b) for a, b in itertools.pairwise(part)]
            if any(joined):
                named = ", ".join(_name(plans[u]) for u in part)
                unlinked = "treatment plans of one patient in one frame of reference, not linked by a plan reference"
                notes.append((part[0], f"{named}: {unlinked}"))
    return notes


def _name(h: FileHeader) -> str:
    return repr(h.plan_label) if h.plan_label else os.path.basename(h.path)


def _is_verification(h: FileHeader) -> bool:
    return (h.plan_intent or "").upper() == "VERIFICATION"
