"""Layer and result files: round trips, and one test per rejection rule through the CLI."""

import subprocess
import sys

import numpy as np
import pytest

from sluice.cli import main
from sluice.model.layerfile import (
    LayerFileError, Result, read_layer, read_result, write_layer, write_result)
from sluice.model.randlayer import make_layer


@pytest.fixture
def layer():
    return make_layer(c_in=8, c_out=4, size=(5, 7), partitions=2, residual=True, seed=11)


def _arrays(layer, tmp_path):
    path = tmp_path / "ok.layer.npz"
    write_layer(path, layer)
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _run_bad(tmp_path, capsys, arrays=None, raw=None):
    """Write a malformed file, run `sluice run-layer` on it, return the one stderr line."""
    bad = tmp_path / "bad.layer.npz"
    if raw is not None:
        bad.write_bytes(raw)
    else:
        np.savez(bad, **arrays)
    out = tmp_path / "out.result.npz"
    status = main(["run-layer", str(bad), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert str(bad) in err
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp"))
    return err


def test_layer_round_trip(layer, tmp_path):
    path = tmp_path / "a.layer.npz"
    write_layer(path, layer)
    back = read_layer(path)
    for name in ("x", "w", "bias", "thresh", "mult", "shift", "residual", "res_mult",
                 "res_shift", "y_ref", "gate_ref"):
        np.testing.assert_array_equal(getattr(back, name), getattr(layer, name))
        assert getattr(back, name).dtype == getattr(layer, name).dtype
    for name in ("kernel", "stride", "padding", "partitions", "base", "relu", "name"):
        assert getattr(back, name) == getattr(layer, name)


def test_dense_layer_round_trip(tmp_path):
    layer = make_layer(dense=True, seed=2)
    write_layer(tmp_path / "d.layer.npz", layer)
    back = read_layer(tmp_path / "d.layer.npz")
    assert back.thresh is None and back.residual is None and back.partitions == 1


def test_result_round_trip(tmp_path):
    r = Result(y=np.arange(-8, 16, dtype=np.int8).reshape(2, 3, 4),
               gate=(np.arange(24) % 2).astype(np.uint8).reshape(2, 3, 4),
               runner="icarus", cycles=12345, rows=8, cols=4,
               counters={"macs_issued": 99, "stall_cycles": 3})
    write_result(tmp_path / "r.result.npz", r)
    back = read_result(tmp_path / "r.result.npz")
    np.testing.assert_array_equal(back.y, r.y)
    np.testing.assert_array_equal(back.gate, r.gate)
    assert (back.runner, back.cycles, back.rows, back.cols) == ("icarus", 12345, 8, 4)
    assert back.counters == r.counters


def test_run_layer_reference_cli(layer, tmp_path, capsys):
    lpath, rpath = tmp_path / "l.layer.npz", tmp_path / "l.result.npz"
    write_layer(lpath, layer)
    assert main(["run-layer", str(lpath), "-o", str(rpath), "--sim", "reference"]) == 0
    assert "matches y_ref and gate_ref" in capsys.readouterr().out
    r = read_result(rpath)
    np.testing.assert_array_equal(r.y, layer.y_ref)
    np.testing.assert_array_equal(r.gate, layer.gate_ref)
    assert (r.runner, r.cycles, r.rows, r.cols) == ("reference", 0, 0, 0)
    # --dense: the same layer without thresholds, all gates on
    assert main(["run-layer", str(lpath), "-o", str(rpath), "--dense"]) == 0
    r = read_result(rpath)
    from sluice.model.reference import run_reference
    np.testing.assert_array_equal(r.y, run_reference(layer.replace(thresh=None))[0])
    assert r.gate.all()


def test_run_layer_reports_mismatch(layer, tmp_path, capsys):
    wrong = layer.y_ref.copy()
    wrong[0, 0, 0] ^= 1
    lpath = tmp_path / "l.layer.npz"
    write_layer(lpath, layer.replace(y_ref=wrong))
    assert main(["run-layer", str(lpath), "-o", str(tmp_path / "o.result.npz")]) == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_console_script_exit_status(tmp_path):
    """The installed `sluice` program itself: exit 2 and one line for a bad file."""
    bad = tmp_path / "junk.layer.npz"
    bad.write_text("not a zip")
    proc = subprocess.run([sys.executable, "-m", "sluice.cli", "run-layer", str(bad), "-o",
                           str(tmp_path / "o.result.npz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


# --- one test per rejection rule -------------------------------------------------------------

def test_reject_wrong_format_tag(layer, tmp_path, capsys):
    a = _arrays(layer, tmp_path)
    a["format"] = np.asarray("sluice.layer/2")
    assert "'format'" in _run_bad(tmp_path, capsys, a)


@pytest.mark.parametrize("field", ["format", "x", "w", "bias", "mult", "shift", "kernel",
                                   "stride", "padding", "partitions", "base", "relu", "name"])
def test_reject_missing_field(layer, tmp_path, capsys, field):
    a = _arrays(layer, tmp_path)
    del a[field]
    err = _run_bad(tmp_path, capsys, a)
    assert f"'{field}'" in err and "missing" in err


def test_reject_partial_residual(layer, tmp_path, capsys):
    a = _arrays(layer, tmp_path)
    del a["res_shift"]
    assert "'res_shift'" in _run_bad(tmp_path, capsys, a)


@pytest.mark.parametrize("field,dtype", [("x", np.int16), ("w", np.float32), ("bias", np.int64),
                                         ("thresh", np.float64), ("mult", np.uint32),
                                         ("gate_ref", np.int8), ("kernel", np.float64),
                                         ("relu", np.int64)])
def test_reject_wrong_dtype(layer, tmp_path, capsys, field, dtype):
    a = _arrays(layer, tmp_path)
    a[field] = a[field].astype(dtype)
    err = _run_bad(tmp_path, capsys, a)
    assert f"'{field}'" in err and "dtype" in err


@pytest.mark.parametrize("field,shape", [("x", (8, 5)), ("w", (4, 6, 3, 3)),
                                         ("w", (4, 8, 3, 1)), ("bias", (5,)), ("thresh", (4, 1)),
                                         ("residual", (4, 5, 6)), ("y_ref", (4, 5, 8)),
                                         ("kernel", (1,))])
def test_reject_shape_mismatch(layer, tmp_path, capsys, field, shape):
    a = _arrays(layer, tmp_path)
    a[field] = np.resize(a[field], shape)
    assert f"'{field}'" in _run_bad(tmp_path, capsys, a)


def test_reject_kernel_larger_than_map(layer, tmp_path, capsys):
    a = _arrays(layer, tmp_path)
    a["padding"] = np.asarray(0)
    a["x"] = a["x"][:, :2, :2]
    assert "'x'" in _run_bad(tmp_path, capsys, a)


@pytest.mark.parametrize("p", [3, 8, 0])
def test_reject_partitions_not_dividing(layer, tmp_path, capsys, p):
    a = _arrays(layer, tmp_path)
    a["partitions"] = np.asarray(p)
    assert "'partitions'" in _run_bad(tmp_path, capsys, a)


def test_reject_overflow_risk(tmp_path, capsys):
    # 127 * 128 * C_in * 49 > 2^31 - 1 once C_in >= 2696; a 2700-channel 7x7 layer on a 1x1 map
    layer = make_layer(c_in=8, c_out=4, size=(7, 7), kernel=7, padding=0, seed=1)
    a = _arrays(layer, tmp_path)
    a["x"] = np.zeros((2700, 7, 7), np.int8)
    a["w"] = np.zeros((4, 2700, 7, 7), np.int8)
    a["name"] = np.asarray("layer4.1.conv2")
    err = _run_bad(tmp_path, capsys, a)
    assert "overflow" in err and "layer4.1.conv2" in err


def test_reject_overflow_from_bias(layer, tmp_path, capsys):
    a = _arrays(layer, tmp_path)
    a["bias"] = np.full(4, 2**31 - 100, np.int32)
    assert "overflow" in _run_bad(tmp_path, capsys, a)


@pytest.mark.parametrize("field,value", [("w", -128), ("shift", 63), ("shift", -1),
                                         ("mult", -5), ("res_shift", 70), ("gate_ref", 2)])
def test_reject_values_out_of_range(layer, tmp_path, capsys, field, value):
    a = _arrays(layer, tmp_path)
    a[field] = a[field].copy()
    a[field].flat[0] = value
    assert f"'{field}'" in _run_bad(tmp_path, capsys, a)


def test_reject_unknown_base_mode(layer, tmp_path, capsys):
    a = _arrays(layer, tmp_path)
    a["base"] = np.asarray("middle")
    assert "'base'" in _run_bad(tmp_path, capsys, a)


def test_reject_truncated_file(layer, tmp_path, capsys):
    good = tmp_path / "good.layer.npz"
    write_layer(good, layer)
    err = _run_bad(tmp_path, capsys, raw=good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated or corrupt" in err


@pytest.mark.parametrize("raw", [b'{"format": "sluice-export"}\n', b"x", b"\x93NUMPY\x01\x00"])
def test_reject_a_file_that_is_not_an_npz_archive(tmp_path, capsys, raw):
    # a JSON manifest, a stray byte, a bare .npy header: named as not an archive at all
    err = _run_bad(tmp_path, capsys, raw=raw)
    assert "not an .npz archive" in err and "Traceback" not in err


def test_reject_corrupt_file(layer, tmp_path, capsys):
    good = tmp_path / "good.layer.npz"
    write_layer(good, layer)
    raw = bytearray(good.read_bytes())
    raw[200:260] = b"\xff" * 60  # inside the first member's data
    err = _run_bad(tmp_path, capsys, raw=bytes(raw))
    assert str(tmp_path / "bad.layer.npz") in err


def test_reject_missing_file(tmp_path, capsys):
    assert main(["run-layer", str(tmp_path / "nope.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_reject_wrong_result_format(tmp_path):
    r = Result(y=np.zeros((1, 1, 1), np.int8), gate=np.ones((1, 1, 1), np.uint8), runner="x")
    write_result(tmp_path / "r.result.npz", r)
    with np.load(tmp_path / "r.result.npz") as npz:
        a = {k: npz[k] for k in npz.files}
    a["format"] = np.asarray("sluice.layer/1")
    np.savez(tmp_path / "bad.result.npz", **a)
    with pytest.raises(LayerFileError, match="'format'"):
        read_result(tmp_path / "bad.result.npz")


def test_writer_refuses_invalid_layer_and_leaves_nothing(layer, tmp_path):
    with pytest.raises(LayerFileError, match="'partitions'"):
        write_layer(tmp_path / "x.layer.npz", layer.replace(partitions=3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,needle", [
    (["--partitions", "3"], "--partitions"),
    (["--base", "middle"], "--base"),
    (["--gate-rate", "1.5"], "--gate-rate"),
    (["--size", "2", "--padding", "0"], "--size"),
    (["--extreme-sums", "--cin", "15"], "--cin: 15 must be even"),
])
def test_make_layer_bad_parameters(tmp_path, capsys, argv, needle):
    out = tmp_path / "m.layer.npz"
    assert main(["make-layer", "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_make_layer_extreme_sums(tmp_path, capsys):
    """`make-layer --extreme-sums --cin N`: sums at +-N * 16,256 (weights at +-127 against
    activations of -128), checked by `run-layer` against the file's own reference."""
    out = tmp_path / "x.layer.npz"
    assert main(["make-layer", "-o", str(out), "--extreme-sums", "--cin", "32"]) == 0
    layer = read_layer(out)
    assert layer.c_in == 32 and layer.kernel == 1 and layer.thresh is not None
    acc = (layer.w[:2, :, 0, 0].astype(np.int64) * layer.x[:, 0, 0].astype(np.int64)).sum(1)
    assert acc.tolist() == [32 * 16256, -32 * 16256]
    assert main(["run-layer", str(out), "-o", str(tmp_path / "x.result.npz")]) == 0
    capsys.readouterr()
