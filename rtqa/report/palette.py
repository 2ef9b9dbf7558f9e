"""Colours for curves and contours: distinct for every structure on one picture.

Kelly's 22 colours of maximum contrast (K. L. Kelly, "Twenty-two colors for maximum contrast",
Color Engineering 3(6), 1965), without white and black, reordered so that the first ones are
the most different from one another and the pale ones, weak on a white plot, come last.
"""

from __future__ import annotations

from collections.abc import Sequence

PALETTE = (
    "#0067A5",  # strong blue
    "#BE0032",  # vivid red
    "#008856",  # vivid green
    "#F38400",  # vivid orange
    "#875692",  # strong purple
    "#882D17",  # strong reddish brown
    "#8DB600",  # vivid yellowish green
    "#E68FAC",  # strong purplish pink
    "#604E97",  # strong violet
    "#848482",  # medium grey
    "#2B3D26",  # dark olive green
    "#F6A600",  # vivid orange yellow
    "#B3446C",  # strong purplish red
    "#654522",  # deep yellowish brown
    "#E25822",  # vivid reddish orange
    "#A1CAF1",  # very light blue
    "#C2B280",  # greyish yellow
    "#F99379",  # strong yellowish pink
    "#DCD300",  # vivid greenish yellow
    "#F3C300",  # vivid yellow
)
# beyond the palette, curves repeat a colour with a dashed line
DASHES = ("", "6 3", "2 2")


def assign_colours(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A (colour, SVG dash pattern) for each name, in order: the first twenty get distinct
    colours and solid lines, the next ones repeat the colours with dashes."""
    return {
        name: (PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]) for i, name in enumerate(names)
    }
