"""Keyed pseudonyms of patients: HMAC-SHA256 of the PatientID under the office's key.

The same PatientID gives the same pseudonym on every submission and on every node that holds
the same key; without the key a pseudonym cannot be computed nor reversed. The map back to the
patient is kept by the node that received the files (its state database in the spool) and is
shown only by ``rtqa pseudonym lookup``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from hashlib import sha256

from rtqa.errors import RtqaError

PREFIX = "RTQA-"
DIGITS = 20  # hex digits kept: 80 bits, no collision in any trial's lifetime
MIN_KEY_BYTES = 16
_DOMAIN = b"rtqa pseudonym of PatientID v1\x00"  # a key used elsewhere gives other values here


class PseudonymKeyError(RtqaError):
    """The key file cannot be used."""


def read_key(path: str) -> bytes:
    """The key in a key file (its bytes, surrounding white space removed).

    Raises
    ------
    PseudonymKeyError
        The file cannot be read, or holds fewer than 16 bytes.
    """
    try:
        with open(path, "rb") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise PseudonymKeyError(f"pseudonym key {path}: cannot be read ({exc.strerror})") from None
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"pseudonym key {path}: {len(key)} bytes; a key needs at least {MIN_KEY_BYTES} "
            "(make one with: rtqa pseudonym keygen FILE)"
        )
    return key


def write_new_key(path: str) -> None:
    """Write a new random key (64 hex digits), readable by its owner only; never overwrites.

    Raises
    ------
    PseudonymKeyError
        The file exists or cannot be created.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise PseudonymKeyError(f"pseudonym key {path}: cannot be created ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32) + "\n")


def pseudonym_of(key: bytes, patient_id: str) -> str:
    """The pseudonym of a PatientID under ``key``.

    Examples
    --------
    >>> pseudonym_of(b"0123456789abcdef", "HCC-001")
    'RTQA-CF5209F0B8DB74CE121C'
    >>> pseudonym_of(b"0123456789abcdef", "HCC-001") == pseudonym_of(b"0123456789abcdef", " HCC-001 ")
    True
    """
    digest = hmac.new(key, _DOMAIN + patient_id.strip().encode("utf-8"), sha256).hexdigest()
    return PREFIX + digest[:DIGITS].upper()
