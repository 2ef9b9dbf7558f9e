"""The engine's numpy neighbourhood bounds against scipy.ndimage (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter, minimum_filter

from rtqa.dvh.engine import _neighbourhood


@pytest.mark.parametrize("shape", [(1, 1, 2), (1, 2, 2), (2, 5, 3), (4, 1, 7), (6, 3, 2), (9, 8, 11)])
def test_neighbourhood_equals_scipy_filters(shape):
    rng = np.random.default_rng(sum(shape))
    d = rng.random(shape) * 60.0
    d[d < 10] = 0.0  # ties and plateaus, as in real dose grids
    assert np.array_equal(_neighbourhood(d, np.minimum), minimum_filter(d, size=(5, 3, 3), mode="nearest"))
    assert np.array_equal(_neighbourhood(d, np.maximum), maximum_filter(d, size=(5, 3, 3), mode="nearest"))
