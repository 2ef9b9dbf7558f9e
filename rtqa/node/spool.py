"""The spool: where received files are kept, as ``SPOOL/institution/patient/study/``.

Each association writes into a staging folder of its own (``SPOOL/.rtqa/incoming``); only a
released association's files move into place, so a transfer cut short is never checked (its
files are kept apart in ``SPOOL/.rtqa/aborted``). Nothing is ever overwritten: a file arrives
in place by an exclusive link, an identical copy of a held instance is dropped, and an instance
whose SOP Instance UID is already held with other contents (not merely another transfer syntax)
is kept apart in
``SPOOL/.rtqa/conflicts`` and reported.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field

from rtqa.io.received import ReceivedIdentity, same_instance

NODE_DIR = ".rtqa"  # the node's own files; no institution folder can take this name
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_COMPONENT = 64


def safe_component(text: str, *, empty: str) -> str:
    """A folder or file name for ``text``: letters, digits, ``._-`` only, never hidden, never
    ``..``; when anything had to change, a short hash of the original keeps two names that map
    to the same characters apart ("A/B" and "A_B").

    Examples
    --------
    >>> safe_component("HCC-001", empty="x")
    'HCC-001'
    >>> safe_component("", empty="no-study")
    'no-study'
    >>> safe_component("../etc", empty="x")
    'etc-f7f9121f'
    """
    if not text:
        return empty
    cleaned = _SAFE.sub("_", text).strip("._") or empty
    if cleaned == text and len(text) <= _MAX_COMPONENT:
        return text
    tag = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[: _MAX_COMPONENT - 9]}-{tag}"


@dataclass(frozen=True)
class Staged:
    temp_path: str
    relative: tuple[str, str, str, str]  # institution, patient, study, file name
    sop_instance_uid: str
    sha256: str


@dataclass
class Committed:
    """What a released association left in the spool."""

    new: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # patient dir -> new files
    held: int = 0  # identical copies of instances already in the spool
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, where it was kept)


class Spool:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        for sub in ("incoming", "aborted", "conflicts"):
            os.makedirs(os.path.join(self.root, NODE_DIR, sub), exist_ok=True)

    def staging(self, name: str, institution: str) -> Staging:
        return Staging(self, name, institution)


class Staging:
    """The files of one association, until it is released (commit) or cut short (set aside)."""

    def __init__(self, spool: Spool, name: str, institution: str) -> None:
        self.spool = spool
        self.institution = institution
        self.folder = os.path.join(spool.root, NODE_DIR, "incoming", name)
        os.makedirs(self.folder)
        self.staged: list[Staged] = []

    def add(self, data: bytes, ident: ReceivedIdentity) -> None:
        """Write one received instance (already pseudonymised when asked) to the staging folder."""
        temp = os.path.join(self.folder, f"{len(self.staged):06d}.dcm")
        with open(temp, "xb") as fh:
            fh.write(data)
        rel = (
            safe_component(self.institution, empty="no-institution"),
            safe_component(ident.patient_id, empty="no-patient-id"),
            safe_component(ident.study_instance_uid, empty="no-study"),
            safe_component(ident.modality, empty="XX")
            + "_"
            + safe_component(ident.sop_instance_uid, empty="no-uid")
            + ".dcm",
        )
        self.staged.append(Staged(temp, rel, ident.sop_instance_uid, hashlib.sha256(data).hexdigest()))

    def commit(self) -> Committed:
        """Move every staged file into place; never overwrites (see the module's docstring)."""
        out = Committed()
        for s in self.staged:
            final = os.path.join(self.spool.root, *s.relative)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if _place(s.temp_path, final):
                out.new[os.path.dirname(os.path.dirname(final))].append(final)
            elif _sha256(final) == s.sha256 or _same_contents(final, s.temp_path):
                out.held += 1
            else:
                inst, patient, study, name = s.relative
                stem = name.removesuffix(".dcm")
                apart = os.path.join(
                    self.spool.root, NODE_DIR, "conflicts", inst, patient, study, f"{stem}.{s.sha256[:16]}.dcm"
                )
                os.makedirs(os.path.dirname(apart), exist_ok=True)
                _place(s.temp_path, apart)  # an identical conflicting copy already kept apart is enough
                out.conflicts.append((s.sop_instance_uid, apart))
            os.unlink(s.temp_path)
        os.rmdir(self.folder)
        return out

    def set_aside(self) -> str | None:
        """Keep a cut-short association's files apart (never checked); the folder, or None if
        nothing had arrived."""
        if not self.staged:
            shutil.rmtree(self.folder, ignore_errors=True)
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = os.path.join(self.spool.root, NODE_DIR, "aborted", f"{stamp}-{os.path.basename(self.folder)}")
        os.replace(self.folder, dest)
        return dest


def _place(src: str, dest: str) -> bool:
    """Link ``src`` at ``dest`` unless ``dest`` exists (atomic: two associations bringing the
    same instance cannot both place it); False if it existed."""
    try:
        os.link(src, dest)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    try:  # a file system without hard links: an exclusive create
        with open(src, "rb") as fin, open(dest, "xb") as fout:
            shutil.copyfileobj(fin, fout)
        return True
    except FileExistsError:
        return False


def _same_contents(a: str, b: str) -> bool:
    """The same data set in other bytes (another transfer syntax): an identical copy, not a conflict."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return same_instance(fa.read(), fb.read())


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
