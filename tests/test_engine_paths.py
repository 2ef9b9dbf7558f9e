"""The engine's fast paths against the straightforward ones: numpy neighbourhood bounds against
scipy.ndimage (an independent implementation), and slabs sampled in groups against all at once."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter, minimum_filter

import rtqa.dvh.engine as engine
from rtqa.dvh.engine import _neighbourhood, compute_dvh
from rtqa.dvh.geometry import roi_stack
from rtqa.io import read_dose, read_structure_set
from tests.conftest import case


@pytest.mark.parametrize("shape", [(1, 1, 2), (1, 2, 2), (2, 5, 3), (4, 1, 7), (6, 3, 2), (9, 8, 11)])
def test_neighbourhood_equals_scipy_filters(shape):
    rng = np.random.default_rng(sum(shape))
    d = rng.random(shape) * 60.0
    d[d < 10] = 0.0  # ties and plateaus, as in real dose grids
    assert np.array_equal(_neighbourhood(d, np.minimum), minimum_filter(d, size=(5, 3, 3), mode="nearest"))
    assert np.array_equal(_neighbourhood(d, np.maximum), maximum_filter(d, size=(5, 3, 3), mode="nearest"))


def test_slabs_sampled_in_groups_give_the_same_dvh(liver_tree, monkeypatch):
    folder = case(liver_tree, "liver_clean")
    ss = read_structure_set(f"{folder}/RS.dcm")
    dose = read_dose(f"{folder}/RD_PLAN.dcm")
    for name in ("Body", "Liver", "SpinalCord"):
        stack = roi_stack(ss.roi(name), ss.plane_positions_mm)
        whole = compute_dvh(stack, dose)
        monkeypatch.setattr(engine, "_CHUNK_CELLS", 1)  # one slab per group
        grouped = compute_dvh(stack, dose)
        monkeypatch.undo()
        # the same samples summed in another order: equal to rounding
        assert np.array_equal(grouped.dose_edges_gy, whole.dose_edges_gy)
        assert np.allclose(grouped.volume_ge_cc, whole.volume_ge_cc, rtol=0, atol=1e-9 * whole.volume_cc)
        assert grouped.volume_cc == pytest.approx(whole.volume_cc, rel=1e-12)
        assert grouped.mean_gy == pytest.approx(whole.mean_gy, rel=1e-12)
        assert (grouped.min_gy, grouped.max_gy) == (whole.min_gy, whole.max_gy)
