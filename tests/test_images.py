"""The pictures of the HTML report's image views (rtqa/report/images.py), read back as pixels:
the legend fits under the picture whatever the number of structures, and the contour and isodose
lines are drawn where the masks and the dose put them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from rtqa.report.images import MARGIN_IN, render_view_png
from rtqa.report.views_model import ContourTrace, SliceView

GREEN = "#00FF00"  # not in the isodose palette nor used by the page's letters and marker


def _view(n_contours: int, *, dose_max: float = 60.0) -> SliceView:
    rows, cols = 80, 120
    yy, xx = np.mgrid[0:rows, 0:cols]
    square = (yy >= 20) & (yy < 40) & (xx >= 30) & (xx < 70)
    traces = [ContourTrace("Box", GREEN, square)] + [
        ContourTrace(f"Organ_{i}", "#8080FF", np.zeros((rows, cols), dtype=bool)) for i in range(n_contours - 1)
    ]
    dose = np.full((rows, cols), dose_max * 0.2)
    dose[50:70, 60:100] = dose_max
    return SliceView(
        subject="Box",
        reason="test",
        plane="axial",
        point_mm=(0.0, 0.0, 0.0),
        h_mm=np.arange(cols, dtype=float),
        v_mm=np.arange(rows, dtype=float),
        pixel_mm=2.0,
        dose_gy=dose,
        ct_hu=None,
        contours=tuple(traces),
        isodoses=(("95 % (47.5 Gy)", 47.5),),
        marker_px=(10.0, 10.0),
    )


def _pixels(view: SliceView) -> np.ndarray:
    rgb: np.ndarray = imread(io.BytesIO(render_view_png(view)), format="png")[..., :3]
    return rgb


def _colour(rgb: np.ndarray, hex_colour: str) -> np.ndarray:
    want = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    found: np.ndarray = np.all(np.abs(rgb - want) < 0.02, axis=-1)
    return found


@pytest.mark.parametrize("n_contours", [1, 8, 20])
def test_the_legend_fits_below_the_picture_whatever_its_length(n_contours):
    rgb = _pixels(_view(n_contours))
    # nothing reaches the bottom edge (a legend taller than its band is cut there: the first
    # layout tried cut its last row so), and the last row is close above the picture's margin
    assert np.all(rgb[-2:] > 0.99), "the legend is cut at the bottom edge"
    margin_px = round(MARGIN_IN * 100)  # DPI 100
    assert np.any(rgb[-margin_px - 12 : -2] < 0.5)


def test_contour_and_isodose_lines_are_drawn_where_the_mask_and_the_dose_put_them():
    rgb = _pixels(_view(3))
    legend_top = rgb.shape[0] - 100  # a legend of five entries takes less than its last inch
    green = _colour(rgb[:legend_top], GREEN)  # the box's outline, not the legend's sample line
    ys, xs = np.nonzero(green)
    assert ys.size > 50
    # the box is 40 columns by 20 rows of the 120 x 80 image: its outline keeps that shape
    assert (xs.max() - xs.min()) / (ys.max() - ys.min()) == pytest.approx(2.0, rel=0.1)
    # the isodose line: drawn only where the dose reaches its level, and beside the hot block
    cyan = _colour(rgb, "#00B0F0")
    assert np.any(cyan[:legend_top])
    none = _colour(_pixels(_view(3, dose_max=40.0)), "#00B0F0")  # 47.5 Gy is above every dose
    assert not np.any(none[:legend_top])


def test_structure_names_with_dollar_signs_are_drawn_as_text():
    """matplotlib parses text between two $ as mathtext: a structure name with them (the
    protocol's names and isodose labels are drawn, not the ROIs') failed to parse, and the picture
    raised out of the batch worker: the plan's report became an internal error. Names are drawn
    as they are."""
    import dataclasses

    view = _view(1)
    odd = ContourTrace(r"PTV_$\frac{a$_50", GREEN, view.contours[0].mask)
    view = dataclasses.replace(view, contours=(odd,), subject=r"PTV_$\foo$")
    assert np.any(_colour(_pixels(view), GREEN))
