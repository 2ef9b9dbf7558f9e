"""Stored DVHs (DVHSequence) decoded and compared; the end-cap convention they reveal."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rtqa.cli import cli
from rtqa.dvh.geometry import EndCap, roi_stack
from rtqa.dvh.stored import decode_stored_dvh, infer_end_cap
from rtqa.evaluation.casedvh import compute_case_dvhs, review_stored_dvhs
from rtqa.io import read_dose, read_stored_dvhs, read_structure_set
from rtqa.model import StoredDVH
from tests.conftest import case


def _item(roi: int, widths, volumes, *, kind="CUMULATIVE", units="CM3", scaling=1.0, mean=None, rois=None):
    item = Dataset()
    refs = []
    for n in rois or [roi]:
        r = Dataset()
        r.ReferencedROINumber = n
        r.DVHROIContributionType = "INCLUDED"
        refs.append(r)
    item.DVHReferencedROISequence = Sequence(refs)
    item.DVHType = kind
    item.DoseUnits = "GY"
    item.DoseType = "PHYSICAL"
    item.DVHDoseScaling = str(scaling)
    item.DVHVolumeUnits = units
    item.DVHNumberOfBins = len(volumes)
    item.DVHData = [f"{v:.6g}" for pair in zip(widths, volumes, strict=True) for v in pair]
    if mean is not None:
        item.DVHMeanDose = f"{mean:.6g}"
    return item


def test_cumulative_and_differential_decode_to_the_same_curve():
    # DVHData (PS3.3 C.8.8.4): bin widths D1, D2 and volumes V1, V2; a CUMULATIVE Vn is the volume
    # receiving at least the dose at the lower edge of bin n. 10 cc >= 0 Gy and 6 cc >= 1 Gy: 4 cc
    # have a dose in [0, 1) Gy and 6 cc in [1, 2) Gy. With each bin's volume at its centre (the
    # only unbiased reading of a bin; dicompyler-core's mean does the same):
    # (4 x 0.5 + 6 x 1.5) / 10 = 1.1 Gy. (The former 1.6 Gy put every bin's volume at its upper edge.)
    cum = StoredDVH((1,), "CUMULATIVE", "GY", "CM3", np.array([1.0, 1.0]), np.array([10.0, 6.0]), None, None, None)
    diff = StoredDVH((1,), "DIFFERENTIAL", "GY", "CM3", np.array([1.0, 1.0]), np.array([4.0, 6.0]), None, None, None)
    a, b = decode_stored_dvh(cum), decode_stored_dvh(diff)
    np.testing.assert_allclose(a.volume_ge, b.volume_ge)
    assert a.volume == 10.0 and a.mean_gy == pytest.approx(1.1) and b.mean_gy == pytest.approx(1.1)
    combined = StoredDVH((1, 2), "CUMULATIVE", "GY", "CM3", np.ones(2), np.ones(2), None, None, None)
    assert decode_stored_dvh(combined) is None


def test_mean_stored_in_percent_but_labelled_gy_is_caught():
    s = StoredDVH((1,), "CUMULATIVE", "GY", "CM3", np.ones(3), np.array([3.0, 2.0, 1.0]), None, 104.0, None)
    assert "probably percent" in decode_stored_dvh(s, grid_max_gy=52.0).problems[0]


def test_end_cap_inference():
    assert "none end-cap convention for 2 of 2" in infer_end_cap([(9.0, 10.0, 9.0), (18.1, 20.0, 18.0)])
    assert infer_end_cap([(10.0, 10.0, 10.0)]) is None


def test_stored_dvhs_in_a_dose_file_are_read_compared_and_reported(liver_tree, tmp_path):
    folder = tmp_path / "case"
    shutil.copytree(case(liver_tree, "liver_clean"), folder, ignore=shutil.ignore_patterns("CT"))
    ss = read_structure_set(folder / "RS.dcm")
    liver, kidney, gtvv = ss.roi("Liver"), ss.roi("Kidney_L"), ss.roi("GTVv")
    none_volume = roi_stack(liver, ss.plane_positions_mm, end_cap=EndCap.NONE).volume_cc
    gtvv_none = roi_stack(gtvv, ss.plane_positions_mm, end_cap=EndCap.NONE).volume_cc
    dose = read_dose(folder / "RD_PLAN.dcm")
    (kid,) = compute_case_dvhs(ss, dose, names=["Kidney_L"])
    # Liver and GTVv: volumes of the none convention (Liver with its mean as stated);
    # Kidney_L: rtqa's curve with 5 % more volume
    widths = np.full(600, 0.1)
    edges = np.arange(600) * 0.1
    kidney_curve = np.array([kid.dvh.volume_at_dose(d) for d in edges]) * 1.05
    ds = pydicom.dcmread(folder / "RD_PLAN.dcm")
    ds.DVHSequence = Sequence(
        [
            _item(liver.number, [10.0] * 3, [none_volume, none_volume * 0.5, none_volume * 0.1], mean=17.6),
            _item(kidney.number, widths / 0.01, kidney_curve, scaling=0.01),
            _item(gtvv.number, [60.0], [gtvv_none]),
            _item(1, [1.0], [5.0], rois=[1, 2]),
        ]
    )
    ds.save_as(folder / "RD_PLAN.dcm")
    stored = read_stored_dvhs(folder / "RD_PLAN.dcm")
    assert len(stored) == 4 and stored[1].bin_widths_gy[0] == pytest.approx(0.1)
    dvhs = compute_case_dvhs(ss, dose, names=["Liver", "Kidney_L"])
    warnings = review_stored_dvhs(ss, dvhs, stored, grid_max_gy=dose.max_gy)
    text = "\n".join(warnings)
    assert "stored DVH of 'Kidney_L': volume" in text and "+5.0%" in text
    assert "stored DVH of 'Liver'" not in text  # stated mean 17.6 Gy agrees with rtqa's 17.64 Gy
    assert "1 stored DVH(s) not compared" in text
    # Liver and GTVv vote none, Kidney_L (5 % above the half-slab volume) votes half_slab
    assert "stored DVH volumes follow the none end-cap convention for 2 of 3 ROIs" in text
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    result = CliRunner().invoke(cli, ["dvh", str(folder), "--structure", "Kidney_L"])
    assert "warning: stored DVH of 'Kidney_L'" in result.output
    # input files are never written to: every file of the case is byte for byte as before
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
