"""Instances received over the network (by :mod:`rtqa.node`): their identity, their
pseudonymised bytes, and the status answered to the sender.

The node writes the bytes it receives without decoding them; this module is where those bytes
meet pydicom, so that pydicom stays in the reading layer (DESIGN.md). Rewriting an instance is
needed for one purpose only: replacing the patient's identity by a pseudonym before anything
is stored.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from rtqa.io.common import excerpt

# what an instance must carry for the node to file it (spool folders) and pseudonymise it
_IDENTITY_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
]

# attributes that name the patient otherwise than PatientID/PatientName: a pseudonym beside
# them would identify nobody's plan less, so they are removed with the name and ID replaced
ALTERNATIVE_IDENTITY = ("OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName")


class ReceivedError(ValueError):
    """Received bytes that cannot be parsed as a DICOM instance (the sender gets a failure)."""


@dataclass(frozen=True)
class ReceivedIdentity:
    """Who and what a received instance is, as its own attributes say."""

    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    patient_id: str
    patient_name: str
    study_instance_uid: str


def _parse(data: bytes, *, header_only: bool) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*")
            return pydicom.dcmread(
                io.BytesIO(data),
                stop_before_pixels=header_only,
                specific_tags=list(_IDENTITY_TAGS) if header_only else None,
            )
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise ReceivedError(f"not readable as DICOM ({type(exc).__name__}: {excerpt(str(exc), 120)})") from exc


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()
    except Exception as exc:  # a malformed value: the instance cannot be filed
        raise ReceivedError(f"{keyword} cannot be decoded ({type(exc).__name__})") from exc


def read_received_identity(data: bytes) -> ReceivedIdentity:
    """The identity of an instance received as Part-10 bytes (preamble, file meta, data set).

    Raises
    ------
    ReceivedError
        The bytes are not a DICOM instance, or an identity attribute cannot be decoded.
    """
    ds = _parse(data, header_only=True)
    return ReceivedIdentity(
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        modality=_text(ds, "Modality").upper(),
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
    )


def pseudonymise_instance(data: bytes, pseudonym: str) -> bytes:
    """The instance with PatientID and PatientName replaced by ``pseudonym`` and the
    alternative identities (other IDs and names, birth name) removed; everything else,
    the file meta and the transfer syntax included, is written as it came.

    Raises
    ------
    ReceivedError
        The bytes cannot be parsed, or the rewritten instance cannot be encoded.
    """
    ds = _parse(data, header_only=False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*")
            ds.PatientID = pseudonym
            ds.PatientName = pseudonym
            for keyword in ALTERNATIVE_IDENTITY:
                if keyword in ds:
                    delattr(ds, keyword)
            out = io.BytesIO()
            pydicom.dcmwrite(out, ds)
    except Exception as exc:
        raise ReceivedError(f"cannot be rewritten with a pseudonym ({type(exc).__name__}: {exc})") from exc
    return out.getvalue()


def same_instance(a: bytes, b: bytes) -> bool:
    """Whether two encodings hold the same data set: the same attributes with the same values,
    whatever their transfer syntax or file meta (a resend that a sender negotiated in another
    syntax). Values are compared as their little-endian bytes where both encodings keep them so
    (no contour is decoded); bytes that cannot be parsed are the same only if they are equal."""
    if a == b:
        return True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*")
            return _same_dataset(_parse(a, header_only=False), _parse(b, header_only=False))
    except Exception:  # a value that cannot be decoded: not provably the same
        return False


def _same_dataset(a: Dataset, b: Dataset) -> bool:
    if list(a.keys()) != list(b.keys()):
        return False
    # raw values compare as bytes only when both are little endian (else they are decoded)
    little = all(getattr(d, "original_encoding", (None, False))[1] is True for d in (a, b))
    for tag in a.keys():
        ra, rb = a.get_item(tag), b.get_item(tag)
        if little and isinstance(ra, RawDataElement) and isinstance(rb, RawDataElement) and ra.value == rb.value:
            continue
        ea, eb = a[tag], b[tag]
        if ea.VR == "SQ" or eb.VR == "SQ":
            if ea.VR != eb.VR or len(ea.value) != len(eb.value):
                return False
            if not all(_same_dataset(x, y) for x, y in zip(ea.value, eb.value, strict=True)):
                return False
        elif ea.value != eb.value:
            return False
    return True


def status_dataset(status: int, comment: str) -> Any:
    """A DIMSE status with an Error Comment (at most 64 characters, as its VR LO allows), the
    answer a sender's log shows when an instance is refused."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds
