"""Draw the image views of a plan (:class:`SliceView`) as PNG pictures for the HTML page.

matplotlib (Agg backend, no display) is imported here only, and this module only when an HTML
report is asked for. Each picture shows the CT in an abdomen window (or, without a CT, the dose
as a colour wash with its colour bar), the contours, the isodose lines, a 5 cm scale bar, the
patient orientation letters at every edge and a legend; the point of the view is marked.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Any, cast

import numpy as np

from rtqa.report.views_model import SliceView

# abdomen window (W 400 / L 40 HU): soft tissue grey, fat dark, bone white
CT_WINDOW_HU = (40.0 - 200.0, 40.0 + 200.0)
SCALE_BAR_MM = 50.0
# isodose lines: dashed, in colours that are not in the contour palette's first entries
ISODOSE_STYLE = ("#00B0F0", "#FFC000", "#FF00FF", "#00E060", "#FF6040", "#B0B0FF")
DPI = 100
# the layout of a picture (inches): the margin around it, the band of the title above the image
MARGIN_IN = 0.06
TITLE_IN = 0.3


def render_view_png(view: SliceView, *, width_in: float = 3.6) -> bytes:
    """The picture of one view as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows, cols = view.dose_gy.shape
    aspect = rows / max(cols, 1)
    # laid out here rather than by matplotlib's constrained layout, which draws the figure twice:
    # the title's band above the picture, the legend below it at its measured height
    image_w = width_in - 2 * MARGIN_IN
    image_h = image_w * aspect
    fig = Figure(figsize=(width_in, image_h + TITLE_IN + 1.5), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_facecolor("black")
    handles: list[Any] = []
    if view.ct_hu is not None:
        ct = np.where(np.isfinite(view.ct_hu), view.ct_hu, -1000.0)
        ax.imshow(ct, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], interpolation="bilinear")
        background = "CT W400/L40"
    else:
        dose = np.ma.masked_invalid(view.dose_gy)
        ax.imshow(dose, cmap="gray", vmin=0.0, interpolation="bilinear")
        background = "dose (no CT), grey scale 0 Gy black"
    finite = view.dose_gy[np.isfinite(view.dose_gy)]
    dose_max = float(finite.max()) if finite.size else 0.0
    for i, (label, level) in enumerate(view.isodoses):
        colour = ISODOSE_STYLE[i % len(ISODOSE_STYLE)]
        if 0 < level < dose_max:
            _lines(ax, np.nan_to_num(view.dose_gy, nan=0.0), level, colour, 1.1, "--")
        handles.append(Line2D([], [], color=colour, lw=1.2, ls="--", label=_text(f"isodose {label}")))
    for trace in view.contours:
        _lines(ax, trace.mask.astype(float), 0.5, trace.colour, 1.4, "-")
        handles.append(Line2D([], [], color=trace.colour, lw=1.6, label=_text(trace.name)))
    mx, my = view.marker_px
    ax.plot([mx], [my], marker="+", color="#FF3030", markersize=14, mew=2)
    handles.append(Line2D([], [], color="#FF3030", marker="+", ls="", markersize=9, mew=2, label="point of the view"))
    _scale_bar(ax, view, rows, cols)
    left, right, top, bottom = view.letters
    style: dict[str, Any] = {"color": "#FFFF66", "fontsize": 11, "fontweight": "bold", "ha": "center", "va": "center"}
    ax.text(0.03, 0.5, left, transform=ax.transAxes, **style)
    ax.text(0.97, 0.5, right, transform=ax.transAxes, **style)
    ax.text(0.5, 0.96, top, transform=ax.transAxes, **style)
    ax.text(0.5, 0.04, bottom, transform=ax.transAxes, **style)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    x, y, z = view.point_mm
    ax.set_title(_text(f"{view.subject}: {view.plane} through ({x:.1f}, {y:.1f}, {z:.1f}) mm"), fontsize=8)
    legend = fig.legend(
        handles=handles,
        loc="upper center",
        ncol=3,
        fontsize=6,
        frameon=False,
        title=background,
        title_fontsize=6,
    )
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    legend_in = legend.get_window_extent(renderer).height / DPI + 2 * MARGIN_IN
    height_in = TITLE_IN + image_h + legend_in
    fig.set_size_inches(width_in, height_in)
    ax.set_position((MARGIN_IN / width_in, legend_in / height_in, image_w / width_in, image_h / height_in))
    legend.set_bbox_to_anchor((0.5, (legend_in - MARGIN_IN) / height_in), transform=fig.transFigure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _text(s: str) -> str:
    """A string drawn as it is: matplotlib reads text between two ``$`` as mathtext, and a
    protocol's structure named ``PTV_$\\frac{a$`` would fail to parse (the picture, and with it
    the plan's report, lost)."""
    return s.replace("$", r"\$")


def _lines(ax: Any, field: np.ndarray, level: float, colour: str, width: float, style: str) -> None:
    """The lines where ``field`` (indexed [row, column], drawn at pixel centres) crosses ``level``:
    contourpy's, the algorithm behind matplotlib's ``contour``, drawn as one line collection
    (without the colour-mapping machinery of a contour set, which costs more than the lines)."""
    from contourpy import LineType, contour_generator
    from matplotlib.collections import LineCollection

    lines = cast("list[np.ndarray]", contour_generator(z=field, line_type=LineType.Separate).lines(level))
    if lines:
        ax.add_collection(LineCollection(lines, colors=colour, linewidths=width, linestyles=style))


def _scale_bar(ax: Any, view: SliceView, rows: int, cols: int) -> None:
    length_px = SCALE_BAR_MM / view.pixel_mm
    x0 = cols - 0.06 * cols - length_px
    y0 = rows - 0.1 * rows
    ax.plot([x0, x0 + length_px], [y0, y0], color="white", lw=3, solid_capstyle="butt")
    ax.text(x0 + length_px / 2, y0 - 0.025 * rows, f"{SCALE_BAR_MM / 10:g} cm", color="white", fontsize=7, ha="center")


def with_picture(view: SliceView) -> SliceView:
    """The view with its picture drawn (batch workers draw in parallel; the page only embeds)."""
    return dataclasses.replace(view, png=render_view_png(view))


def view_data_uri(view: SliceView) -> str:
    """The picture of a view as a ``data:`` URI (embedded: the page needs no network)."""
    png = view.png if view.png is not None else render_view_png(view)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
