"""Geometry at its edges: outlines drawn twice, degenerate rings, geometry collections.

Every expected area and volume is hand arithmetic on squares and triangles, written beside it.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtqa.dvh.geometry import coincident_rings


def square(half: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    return np.array([[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half], [cx - half, cy + half]])


def circle(r: float, n: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([r * np.cos(t), r * np.sin(t)])


@pytest.mark.parametrize(
    "twin",
    [
        square(10),  # copied as is
        square(10)[::-1],  # winding reversed
        np.roll(square(10), 1, axis=0),  # start point moved
        square(10, cx=0.2),  # band 2 x 0.2 x 20 mm2 over 80 mm of outline: 0.1 mm wide
    ],
    ids=["copy", "reversed", "start_moved", "shifted_0.2mm"],
)
def test_an_outline_drawn_twice_is_recognised_however_it_was_redrawn(twin):
    assert coincident_rings((square(10), twin))
    assert coincident_rings((square(3, cx=40), square(10), twin))  # an island beside does not hide it


@pytest.mark.parametrize(
    "rings",
    [
        (square(10),),  # one ring
        (square(10), square(5)),  # a hole of a quarter of the area
        (circle(50), circle(40)),  # a 10 mm wall: areas 64 % apart, band 2827 mm2 / 314 mm = 9 mm
        (square(10), square(10, cx=30)),  # two islands of equal area
        (square(10), square(10, cx=2)),  # overlapping by 80 %: band 2 x 2 x 20 = 80 mm2 / 80 mm = 1 mm
    ],
    ids=["single", "hole", "wall_10mm", "islands", "overlap_2mm"],
)
def test_holes_walls_and_islands_are_not_taken_for_a_redrawn_outline(rings):
    assert not coincident_rings(rings)
