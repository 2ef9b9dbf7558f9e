"""Image views of a plan, as data: a 2-D slice of dose (and CT) with contours and isodoses.

Pure data made by :mod:`rtqa.evaluation.views` and drawn by :mod:`rtqa.report.images`. Arrays
are in screen order: row 0 is the top of the picture, column 0 its left edge; ``h_mm`` and
``v_mm`` give the patient coordinate of every column and row along the axis the view shows
horizontally and vertically, and ``letters`` the patient direction at each edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# (left, right, top, bottom) patient directions of each plane in the radiological convention:
# the patient's left on the right of an axial or coronal image, anterior at the top of an axial
# image, the head at the top of coronal and sagittal images, anterior on the left of a sagittal one.
LETTERS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


@dataclass(frozen=True, eq=False)
class ContourTrace:
    """Where one structure cuts the plane of a view: a mask on the view's pixels."""

    name: str
    colour: str  # "#rrggbb"
    mask: BoolArray  # [row, column]


@dataclass(frozen=True, eq=False)
class SliceView:
    """One plane through one point of a plan."""

    subject: str  # the structure the view is about, e.g. "PTVp" or "Duodenum"
    reason: str  # "centre of the target" or "hottest point: DUODENUM_MAX deviation unacceptable"
    plane: str  # axial, coronal, sagittal
    point_mm: tuple[float, float, float]  # patient (x, y, z) the plane passes through
    h_mm: FloatArray  # patient coordinate of each column, screen order
    v_mm: FloatArray  # patient coordinate of each row, screen order
    pixel_mm: float  # square pixels
    dose_gy: FloatArray  # [row, column]; NaN outside the dose grid
    ct_hu: FloatArray | None  # [row, column] on the same pixels, or None without a CT
    contours: tuple[ContourTrace, ...]
    isodoses: tuple[tuple[str, float], ...]  # (label, dose in Gy)
    marker_px: tuple[float, float]  # (column, row) of ``point_mm``
    png: bytes | None = None  # the picture, when drawn where the view was made (a batch worker)

    @property
    def letters(self) -> tuple[str, str, str, str]:
        """Patient direction at the (left, right, top, bottom) edge of the picture."""
        return LETTERS[self.plane]
