"""Shared helpers of the reading layer: opening files and reading attributes with context."""

from __future__ import annotations

import functools
import math
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from rtqa.dvh.budget import configured_budget_bytes
from rtqa.dvh.sizes import BUDGET_ENV, format_size
from rtqa.errors import InputError

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"


F = TypeVar("F", bound=Callable[..., Any])

EXCERPT_CHARS = 80
# pydicom parses an inflated data set in memory, as a dataset of Python objects several times
# its size: a quarter of the budget keeps the whole read within it
_INFLATE_SHARE = 4
_INFLATE_CHUNK = 1 << 20


def excerpt(value: object, limit: int = EXCERPT_CHARS, *, quote: bool = True) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said.

    Every reader error that quotes a value goes through here: a value of a hostile file can be
    megabytes long (a GridFrameOffsetVector stored as UN), and a message must stay readable.

    Examples
    --------
    >>> excerpt("abc")
    "'abc'"
    >>> excerpt("abc", quote=False)
    'abc'
    >>> excerpt("x" * 1000, limit=10)
    "'xxxxxxxx... (1002 characters)"
    """
    try:
        text = repr(value) if quote or not isinstance(value, str) else value
    except Exception as exc:  # a value whose repr itself fails is still quoted, by its type
        text = f"<{type(value).__name__}: repr failed ({type(exc).__name__})>"
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}... ({len(text)} characters)"


# what pydicom raises when it decodes a malformed value on access (an IS of "NaN", a DS of
# text, a sequence item cut short): the reading layer turns them into InputError
_DECODE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    UnicodeError,
    EOFError,
    struct.error,
    RecursionError,
    NotImplementedError,
)


def quiet_pydicom(func: F) -> F:
    """Silence pydicom's value-validation warnings (invalid UIDs and the like are common in
    clinical exports); problems that matter to rtqa become errors or report warnings.

    The wrapped reader takes the file's path first. pydicom decodes values lazily, so a
    malformed value raises a ValueError or the like wherever it is first touched; such an
    exception leaves the reader as an :class:`InputError` naming the file and quoting the
    cause, so that one broken file is an input error of its plan, never an internal error.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*")
            try:
                return func(*args, **kwargs)
            except InputError:
                raise
            except _DECODE_ERRORS as exc:
                path = os.fspath(args[0]) if args else None
                raise InputError(
                    path, f"a value cannot be decoded ({type(exc).__name__}: {excerpt(str(exc), 200)})"
                ) from exc

    return wrapper  # type: ignore[return-value]


class NotDicomError(InputError):
    """The file is not DICOM, even under a forced read (discovery ignores such files)."""


def open_dataset(
    path: str | os.PathLike[str],
    *,
    stop_before_pixels: bool = False,
    specific_tags: Iterable[int] | None = None,
) -> tuple[Dataset, bool]:
    """Read a DICOM file, falling back to a forced read for exports without a Part-10 header.

    Returns
    -------
    (dataset, headerless)
        ``headerless`` is true when the file lacked the preamble and "DICM" prefix.

    Raises
    ------
    NotDicomError
        When not even a forced read finds a DICOM data set (no SOP Class UID or Modality).
    InputError
        When the file is DICOM but cannot be parsed (truncated, corrupt), is not a regular
        file, or is deflated and would inflate beyond the memory budget.
    """
    spath = os.fspath(path)
    require_regular_file(spath)
    require_bounded_inflation(spath)
    require_readable_size(spath)
    require_stored_data_set(spath)
    tags = list(specific_tags) if specific_tags is not None else None
    try:
        ds = pydicom.dcmread(spath, stop_before_pixels=stop_before_pixels, specific_tags=tags, defer_size="256 KB")
        return ds, False
    except InvalidDicomError:
        pass
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise InputError(spath, f"not readable as DICOM ({type(exc).__name__}: {excerpt(str(exc), 200)})") from exc
    try:
        ds = pydicom.dcmread(
            spath,
            force=True,
            stop_before_pixels=stop_before_pixels,
            specific_tags=tags,
            defer_size="256 KB",
        )
        sop_class = ds.get("SOPClassUID")
        modality = ds.get("Modality")
    except Exception as exc:
        raise NotDicomError(spath, "not a DICOM file (a forced read failed too)") from exc
    if not sop_class and not modality:
        raise NotDicomError(spath, "not a DICOM file (no SOPClassUID or Modality after a forced read)")
    return ds, True


def require_regular_file(path: str) -> None:
    """Refuse anything but a regular file: a FIFO or a link to ``/dev/zero`` would block or
    never end. The check follows symlinks (a link to a regular file is read).

    Raises
    ------
    InputError
        The path is a FIFO, device, socket or folder, or cannot be examined.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(path, f"cannot be examined ({exc.strerror})") from exc
    if not stat.S_ISREG(mode):
        raise InputError(path, f"is a {file_kind(mode)}, not a regular file: not opened")


def file_kind(mode: int) -> str:
    """``"FIFO"``, ``"character device"``... for the ``st_mode`` of a file that is not regular."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def require_bounded_inflation(path: str, budget_bytes: int | None = None) -> None:
    """Refuse a Deflated Explicit VR Little Endian file that inflates beyond a quarter of the
    memory budget, counting the inflated bytes in 1 MiB steps without keeping them.

    pydicom inflates a deflated data set whole in memory before parsing it: a 3 MB file can
    inflate to gigabytes. Files of other transfer syntaxes return at once.

    Raises
    ------
    InputError
        The inflated data set is larger than allowed, or the deflate stream is corrupt.
    """
    try:
        with open(path, "rb") as fh:
            preamble = fh.read(132)
            if len(preamble) < 132 or preamble[128:132] != b"DICM":
                return
            meta = pydicom.filereader._read_file_meta_info(fh)  # leaves fh at the data set
            if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                return
            limit = (configured_budget_bytes() if budget_bytes is None else budget_bytes) // _INFLATE_SHARE
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            total = 0
            pending = b""
            # bytes after the end of the stream (a pad byte) land in ``unused_data`` and are
            # never consumed: the loop ends at the end of the stream, not at the end of the file
            while not inflater.eof:
                chunk = pending or fh.read(_INFLATE_CHUNK)
                if not chunk:
                    break
                total += len(inflater.decompress(chunk, _INFLATE_CHUNK))
                pending = inflater.unconsumed_tail
                if total > limit:
                    raise InputError(
                        path,
                        f"the deflated data set inflates to more than {format_size(limit)}, a quarter of the "
                        f"memory budget (raise the budget with --max-memory or {BUDGET_ENV})",
                        attribute="TransferSyntaxUID (0002,0010)",
                    )
    except InputError:
        raise
    except zlib.error as exc:
        raise InputError(
            path, f"the deflate stream is corrupt ({exc})", attribute="TransferSyntaxUID (0002,0010)"
        ) from exc
    except Exception:  # not a readable Part-10 header: dcmread says what is wrong
        return


def require_stored_data_set(path: str) -> None:
    """Refuse, before pydicom parses anything, a file whose data set starts with a Command
    group (0000,xxxx) element: a stored DICOM object never holds one (PS3.10 7.1), and pydicom
    reads such elements one by one, eight bytes each, at about 1 MB/s (a 64 MiB file of zeros
    is 64 million such bytes). Only the first bytes are read.

    Raises
    ------
    NotDicomError
        A file without the "DICM" prefix whose first element is in group 0000 (zeros, say).
    InputError
        A Part-10 file whose data set starts with a group 0000 element.
    """
    try:
        with open(path, "rb") as fh:
            preamble = fh.read(132)
            part10 = len(preamble) == 132 and preamble[128:132] == b"DICM"
            if part10:
                pydicom.filereader._read_file_meta_info(fh)  # leaves fh at the data set
            else:
                fh.seek(0)
            start = fh.read(2)
    except Exception:  # not a readable Part-10 header: dcmread says what is wrong
        return
    if len(start) < 2 or start != b"\0\0":
        return
    if part10:
        raise InputError(
            path,
            "the data set starts with a Command group (0000,xxxx) element, which no stored "
            "DICOM object holds: not read",
        )
    raise NotDicomError(path, "not a DICOM file (it starts with a group 0000 tag: zeros, not a data set)")


def require_readable_size(path: str, budget_bytes: int | None = None) -> None:
    """Refuse a file that pydicom would parse whole into more memory than the budget allows.

    pydicom holds a parsed data set as Python objects several times the file's size, so a
    file may be at most a quarter of the budget (512 MiB by default: clinical structure sets
    are tens of megabytes). Pixel data is deferred and bounded separately (RT Dose grids).

    Raises
    ------
    InputError
        The file is larger than that.
    """
    limit = (configured_budget_bytes() if budget_bytes is None else budget_bytes) // _INFLATE_SHARE
    size = os.path.getsize(path)
    if size > limit:
        raise InputError(
            path,
            f"the file is {format_size(size)}, more than {format_size(limit)} (a quarter of the memory budget) "
            f"that rtqa reads whole (raise the budget with --max-memory or {BUDGET_ENV})",
        )


def require(ds: Dataset, keyword: str, path: str, expected: str) -> Any:
    """The value of a Type 1 attribute, or an InputError naming it and what was expected."""
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise InputError(
            path, f"cannot be decoded ({excerpt(str(exc))}); expected {expected}", attribute=attr_name(keyword)
        ) from exc
    if value is None or value == "":
        raise InputError(path, f"missing; expected {expected}", attribute=attr_name(keyword))
    return value


def attr_name(keyword: str) -> str:
    """``"DoseUnits (3004,0002)"`` for a keyword."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def text(ds: Dataset, keyword: str, default: str = "") -> str:
    value = ds.get(keyword)
    if value is None:
        return default
    return str(value).strip()


def as_float(value: Any, path: str, keyword: str) -> float | None:
    """A numeric attribute as float; a malformed, NaN or infinite value is an InputError,
    absence is None."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(path, f"{excerpt(value)} is not a number", attribute=attr_name(keyword)) from exc
    return require_finite(number, path, keyword)


def require_finite(number: float, path: str, keyword: str) -> float:
    """``number`` itself, or an InputError when it is NaN or infinite (DS allows neither).

    Raises
    ------
    InputError
        Naming the attribute and the value found.
    """
    if not math.isfinite(number):
        raise InputError(path, f"{number} is not a finite number", attribute=attr_name(keyword))
    return number


def as_int(value: Any, path: str, keyword: str) -> int | None:
    """An integer attribute; accepts numbers exported as strings ("25", "25.0").

    Raises
    ------
    InputError
        A value that is not a finite whole number.
    """
    f = as_float(value, path, keyword)
    if f is None:
        return None
    if f != int(f):
        raise InputError(path, f"{excerpt(value)} is not a whole number", attribute=attr_name(keyword))
    return int(f)


def uid_list(seq: Any, keyword: str = "ReferencedSOPInstanceUID") -> tuple[str, ...]:
    if not seq:
        return ()
    return tuple(str(item.get(keyword)) for item in seq if item.get(keyword))
