"""Shared helpers of the reading layer: opening files and reading attributes with context."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from rtqa.errors import InputError

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"


F = TypeVar("F", bound=Callable[..., Any])


def quiet_pydicom(func: F) -> F:
    """Silence pydicom's value-validation warnings (invalid UIDs and the like are common in
    clinical exports); problems that matter to rtqa become errors or report warnings."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*")
            return func(*args, **kwargs)

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
        When the file is DICOM but cannot be parsed (truncated, corrupt).
    """
    spath = os.fspath(path)
    tags = list(specific_tags) if specific_tags is not None else None
    try:
        ds = pydicom.dcmread(spath, stop_before_pixels=stop_before_pixels, specific_tags=tags, defer_size="256 KB")
        return ds, False
    except InvalidDicomError:
        pass
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise InputError(spath, f"not readable as DICOM ({type(exc).__name__}: {exc})") from exc
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


def require(ds: Dataset, keyword: str, path: str, expected: str) -> Any:
    """The value of a Type 1 attribute, or an InputError naming it and what was expected."""
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise InputError(path, f"cannot be decoded ({exc}); expected {expected}", attribute=attr_name(keyword)) from exc
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
    """A numeric attribute as float; a malformed value is an InputError, absence is None."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"{value!r} is not a number", attribute=attr_name(keyword)) from exc


def as_int(value: Any, path: str, keyword: str) -> int | None:
    """An integer attribute; accepts numbers exported as strings ("25", "25.0")."""
    f = as_float(value, path, keyword)
    if f is None:
        return None
    if f != int(f):
        raise InputError(path, f"{value!r} is not a whole number", attribute=attr_name(keyword))
    return int(f)


def uid_list(seq: Any, keyword: str = "ReferencedSOPInstanceUID") -> tuple[str, ...]:
    if not seq:
        return ()
    return tuple(str(item.get(keyword)) for item in seq if item.get(keyword))
