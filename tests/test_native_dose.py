"""RT Dose pixel data read without pydicom's decoders (issue 21).

rtqa decodes natively stored, little-endian dose integers itself and imports pydicom's pixel
decoders only for anything else (rtqa.io.deferred). What must hold: the same integers as
pydicom's ``pixel_array`` for every layout taken natively; every other layout (fewer bits
stored, big endian, padded or short data) goes to pydicom and reads or fails as before; and a
check of a plan whose dose is native never imports the decoders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from fixtures.writer import Patient, quantized, write_dose
from rtqa.errors import DoseGridError
from rtqa.io import read_dose
from rtqa.io.dose import _native_pixels

ROOT = Path(__file__).resolve().parents[1]


def _dose_file(tmp_path: Path, *, frames: int = 3) -> tuple[Path, np.ndarray]:
    """A small RT Dose (4 x 5 pixels, ``frames`` planes) with a dose that varies on every axis."""
    x, y, z = np.arange(5) * 2.0, np.arange(4) * 2.0 - 3.0, np.arange(frames) * 2.5 + 10.0
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    dose = 1.0 + 0.3 * xx + 0.2 * yy + 0.1 * (zz - 10.0)
    path = tmp_path / "RD.dcm"
    write_dose(str(path), Patient.make("NATIVE"), sop_uid="1.2.3.4", dose_gy=dose, x_mm=x, y_mm=y, z_mm=z,
               plan_uids=())  # fmt: skip
    return path, dose


def _relayout(path: Path, bits: int, signed: bool, *, stored: int | None = None) -> np.ndarray:
    """Store the dose of ``path`` as ``bits``-bit integers (signed or not), in place; returns
    the integers written (pydicom reads them back, rtqa must agree)."""
    ds = pydicom.dcmread(path)
    values = np.frombuffer(ds.PixelData, dtype="<u4").astype(np.float64)
    top = (2 ** (bits - 1) - 1) if signed else (2**bits - 1)
    if stored is not None:
        top = 2 ** (stored - 1) - 1 if signed else 2**stored - 1
    ints = np.round(values / values.max() * top)
    if signed:
        ints -= np.round(top / 3)  # some negative values: the sign must survive
    ints = ints.astype(f"<{'i' if signed else 'u'}{bits // 8}")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored or bits, (stored or bits) - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = ints.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ints


@pytest.mark.parametrize(("bits", "signed"), [(16, False), (16, True), (32, False), (32, True)])
@pytest.mark.parametrize("frames", [1, 3])
def test_native_layouts_give_pydicoms_integers(tmp_path, bits, signed, frames):
    path, _ = _dose_file(tmp_path, frames=frames)
    written = _relayout(path, bits, signed)
    ds = pydicom.dcmread(path)
    native = _native_pixels(ds)
    assert native is not None
    reference = ds.pixel_array  # pydicom's own decoding
    assert native.dtype == reference.dtype
    assert np.array_equal(native.reshape(reference.shape), reference)
    assert np.array_equal(native, written)
    if signed:
        assert native.min() < 0


def test_read_dose_gives_the_written_dose(tmp_path):
    path, dose = _dose_file(tmp_path)
    grid = read_dose(path)
    assert np.array_equal(grid.dose_gy, quantized(dose))


def test_implicit_vr_little_endian_is_native_too(tmp_path):
    path, _ = _dose_file(tmp_path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True, implicit_vr=True, little_endian=True)
    ds = pydicom.dcmread(path)
    native = _native_pixels(ds)
    assert native is not None and np.array_equal(native.reshape(ds.pixel_array.shape), ds.pixel_array)


def test_fewer_bits_stored_go_to_pydicom(tmp_path):
    # 12 of 16 bits stored: pydicom's rules for the unused high bits apply, not rtqa's reading
    path, _ = _dose_file(tmp_path)
    _relayout(path, 16, False, stored=12)
    ds = pydicom.dcmread(path)
    assert _native_pixels(ds) is None
    grid = read_dose(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert np.array_equal(grid.dose_gy.reshape(-1), expected.reshape(-1))


def test_big_endian_goes_to_pydicom_and_reads_the_same_dose(tmp_path):
    path, dose = _dose_file(tmp_path)
    ds = pydicom.dcmread(path)
    values = np.frombuffer(ds.PixelData, dtype="<u4")
    ds.PixelData = values.astype(">u4").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    assert _native_pixels(pydicom.dcmread(path)) is None
    assert np.array_equal(read_dose(path).dose_gy, quantized(dose))


@pytest.mark.parametrize("change", [-4, 4])
def test_pixel_data_of_the_wrong_length_is_not_taken_natively(tmp_path, change):
    path, _ = _dose_file(tmp_path)
    ds = pydicom.dcmread(path)
    raw = ds.PixelData
    ds.PixelData = raw[:change] if change < 0 else raw + b"\0" * change
    ds.save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(path)
    assert _native_pixels(ds) is None
    if change < 0:  # short: an error naming the pixel data, as before
        with pytest.raises(DoseGridError, match="PixelData"):
            read_dose(path)


def _probe(code: str, *, eager: bool = False) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "RTQA_EAGER_PYDICOM"}
    if eager:
        env["RTQA_EAGER_PYDICOM"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120, env=env
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_CHECK = (
    "import json, sys\n"
    "from rtqa.cli import main\n"
    "sys.argv = ['rtqa', 'check', {case!r}, '--format', 'json', '--output', {out!r}]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "from rtqa.io.deferred import deferred_now\n"
    "real = [m for m in ('pydicom.pixels.decoders.base', 'pydicom.data', 'PIL') if m in sys.modules]\n"
    "print(json.dumps({{'deferred': list(deferred_now()), 'real': real}}))\n"
)


def test_a_check_of_a_native_dose_never_imports_pydicoms_decoders(tmp_path):
    case = ROOT / "fixtures" / "demo" / "liver_clean"
    out = _probe(_CHECK.format(case=str(case), out=str(tmp_path / "r.json")))
    assert out["real"] == []
    assert "pydicom.pixels" in out["deferred"]  # type: ignore[operator]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["plans"][0]["findings"], "the check ran"
    # and switched off, pydicom is imported whole, with the same report
    eager = _probe(_CHECK.format(case=str(case), out=str(tmp_path / "e.json")), eager=True)
    assert eager["deferred"] == [] and "pydicom.pixels.decoders.base" in eager["real"]  # type: ignore[operator]
    again = json.loads((tmp_path / "e.json").read_text())
    assert [f["value"] for f in again["plans"][0]["findings"]] == [f["value"] for f in report["plans"][0]["findings"]]


def test_stand_ins_forward_to_pydicom_once_used():
    # pydicom's own pixel API through the stand-ins: the legacy handler list and pixel_array
    code = (
        "import json, sys\n"
        "import rtqa.io\n"
        "import pydicom, pydicom.config\n"
        "from rtqa.io.deferred import deferred_now\n"
        "before = list(deferred_now())\n"
        "from pydicom.examples import get_path\n"
        "ds = pydicom.dcmread(str(pydicom.examples.get_path('rt_dose')))\n"
        "arr = ds.pixel_array\n"
        "names = [h.HANDLER_NAME for h in pydicom.config.pixel_data_handlers]\n"
        "from pydicom.pixels.common import PhotometricInterpretation\n"
        "print(json.dumps({'before': before, 'after': list(deferred_now()), 'shape': list(arr.shape),\n"
        "  'names': names, 'pi': str(PhotometricInterpretation.MONOCHROME2)}))\n"
    )
    out = _probe(code)
    assert "pydicom.pixels" in out["before"]  # type: ignore[operator]
    assert out["after"] == []
    assert out["shape"] == [15, 10, 10]
    assert "Numpy" in out["names"]  # type: ignore[operator]
    assert out["pi"] == "MONOCHROME2"
