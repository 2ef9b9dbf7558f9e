"""Read a CT image series into one canonical volume of Hounsfield units, for the report's views.

The CT is never graded: it is the background of the HTML images. Only axial series with an
axis-aligned orientation are read (rows along +-x, columns along +-y: head or feet first,
supine or prone); anything else is refused with the attribute named, and the report draws the
dose alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from rtqa.errors import InputError
from rtqa.io.common import as_float, attr_name, open_dataset, quiet_pydicom, require
from rtqa.io.deferred import materialize
from rtqa.model import CtVolume

# a CT series beyond this many voxels is not worth a report picture (about 1 GB as float64)
MAX_CT_VOXELS = 128_000_000


@quiet_pydicom
def read_ct_series(paths: Sequence[str | os.PathLike[str]]) -> CtVolume:
    """Read CT slices (one file per slice) into ``hu[z, y, x]`` with increasing patient axes.

    Raises
    ------
    InputError
        A slice missing its geometry, an oblique or non-axial orientation, slices of
        different sizes or in-plane positions, two slices at one position, or a series too
        large; the message names the file and attribute.
    """
    if not paths:
        raise InputError("", "no CT slices given")
    slices = []
    first_geometry: tuple[int, int, float, float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    for p in paths:
        path = os.fspath(p)
        ds, _ = open_dataset(path)
        iop = tuple(_floats(require(ds, "ImageOrientationPatient", path, "six direction cosines"), path, "IOP", 6))
        row, col = np.array(iop[:3]), np.array(iop[3:])
        if not (abs(abs(row[0]) - 1) < 1e-3 and abs(abs(col[1]) - 1) < 1e-3):
            raise InputError(
                path,
                f"{list(iop)} is not an axial image with rows along x and columns along y",
                attribute=attr_name("ImageOrientationPatient"),
            )
        ipp = _floats(require(ds, "ImagePositionPatient", path, "three coordinates in mm"), path, "IPP", 3)
        spacing = _floats(require(ds, "PixelSpacing", path, "two positive spacings in mm"), path, "PixelSpacing", 2)
        if min(spacing) <= 0:
            raise InputError(path, f"{spacing} must be positive", attribute=attr_name("PixelSpacing"))
        rows, cols = int(require(ds, "Rows", path, "a count")), int(require(ds, "Columns", path, "a count"))
        geometry = (rows, cols, spacing[0], spacing[1], ipp[0], ipp[1])
        if first_geometry is None:
            first_geometry, orientation = geometry, iop
        elif not np.allclose(geometry, first_geometry, atol=1e-3) or not np.allclose(iop, orientation or iop):
            raise InputError(
                path,
                "size, spacing, orientation or in-plane position differs from the first slice of the series",
                attribute=attr_name("ImagePositionPatient"),
            )
        try:
            materialize()  # pydicom's pixel decoders, imported on first use (rtqa.io.deferred)
            pixels = ds.pixel_array.astype(np.float64)
        except Exception as exc:
            raise InputError(
                path, f"pixel data cannot be decoded ({type(exc).__name__})", attribute=attr_name("PixelData")
            ) from exc
        slope = as_float(ds.get("RescaleSlope", 1), path, "RescaleSlope") or 1.0
        intercept = as_float(ds.get("RescaleIntercept", 0), path, "RescaleIntercept") or 0.0
        slices.append((ipp[2], path, pixels * slope + intercept))
    assert first_geometry is not None and orientation is not None
    rows, cols, d_row, d_col, x0, y0 = first_geometry
    if rows * cols * len(slices) > MAX_CT_VOXELS:
        raise InputError(slices[0][1], f"{len(slices)} slices of {rows}x{cols} exceed {MAX_CT_VOXELS} voxels")
    slices.sort(key=lambda s: s[0])
    z = np.array([s[0] for s in slices])
    if z.size > 1 and np.any(np.diff(z) < 1e-3):
        i = int(np.argmin(np.diff(z)))
        raise InputError(
            slices[i + 1][1], f"two slices at z = {z[i]:g} mm", attribute=attr_name("ImagePositionPatient")
        )
    hu = np.stack([s[2] for s in slices])  # [z, row, column]
    # PixelSpacing is (between rows, between columns): columns step along the row direction
    row_dir, col_dir = orientation[0], orientation[4]
    x = np.asarray(x0 + row_dir * d_col * np.arange(cols), dtype=np.float64)
    y = np.asarray(y0 + col_dir * d_row * np.arange(rows), dtype=np.float64)
    if row_dir < 0:
        x, hu = x[::-1], hu[:, :, ::-1]
    if col_dir < 0:
        y, hu = y[::-1], hu[:, ::-1, :]
    return CtVolume(hu=np.ascontiguousarray(hu), x_mm=x, y_mm=y, z_mm=z, paths=tuple(s[1] for s in slices))


def _floats(value: object, path: str, what: str, n: int) -> list[float]:
    try:
        out = [float(v) for v in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"{value!r} is not {n} numbers", attribute=what) from exc
    if len(out) != n or not all(np.isfinite(out)):
        raise InputError(path, f"{value!r} is not {n} finite numbers", attribute=what)
    return out
