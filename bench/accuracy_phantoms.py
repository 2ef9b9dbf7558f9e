"""Worst DVH errors of rtqa against the closed-form contour-stack truth of the 144 phantoms.

    python bench/accuracy_phantoms.py

Volume in %, doses in Gy (the reference dose is 50 Gy). The tests assert the tolerances; this
prints the worst errors that the README and the notes quote.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import cases, phantoms
from rtqa.dvh.engine import compute_dvh
from rtqa.dvh.geometry import roi_stack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.io import read_dose, read_structure_set


def main() -> int:
    out = tempfile.mkdtemp(prefix="rtqa-accuracy-")
    worst: dict[str, tuple[float, str]] = {}
    for shape in cases.PHANTOM_SHAPES:
        for dose_kind in phantoms.DOSES:
            for spacing in cases.PHANTOM_SPACINGS:
                for grid in cases.PHANTOM_GRIDS:
                    folder = cases.write_phantom_case(out, shape, dose_kind, spacing, grid)
                    truth = json.loads(Path(folder + ".truth.json").read_text())["stack"]
                    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
                    dvh = compute_dvh(
                        roi_stack(ss.rois[0], ss.plane_positions_mm), read_dose(os.path.join(folder, "RD.dcm"))
                    )
                    errors = {
                        "volume %": 100 * (dvh.volume_cc - truth["volume_cc"]) / truth["volume_cc"],
                        "mean Gy": (dvh.mean_gy or 0) - truth["mean_gy"],
                        "min Gy": (dvh.min_gy or 0) - truth["min_gy"],
                        "max Gy": (dvh.max_gy or 0) - truth["max_gy"],
                        **{
                            f"D{p}% Gy": (evaluate_metric(dvh, f"D{p}%[Gy]") or 0) - truth[f"D{p}%"]
                            for p in (98, 95, 50, 2)
                        },
                    }
                    for k, v in errors.items():
                        if abs(v) > abs(worst.get(k, (0.0, ""))[0]):
                            worst[k] = (v, os.path.basename(folder))
    for k, (v, case) in worst.items():
        print(f"worst {k:<10} {v:+.3f}  ({case})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
