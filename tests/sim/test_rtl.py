"""cocotb regression: the generated Verilog against the integer reference, bit for bit.

Each test batches many layers into one simulator process (cocotb's start-up costs about a
second); the layers run back to back through the real AXI4-Lite and AXI4-Stream ports.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sluice.hw.params import HwParams
from sluice.model.layerfile import read_result, write_layer
from sluice.model.randlayer import extreme_sums_layer, make_layer
from sluice.model.reference import run_reference, work_figures
from sluice.sim.runner import RtlSim, simulator_missing

pytestmark = pytest.mark.skipif(simulator_missing("icarus") is not None,
                                reason=str(simulator_missing("icarus")))

SIM = os.environ.get("SLUICE_SIM", "icarus")


def random_cases(seed: int, n: int, rows: int, cols: int):
    """Layers across every option; channel counts and maps not multiples of the array."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        k = int(rng.choice([1, 3, 5, 7]))
        p = int(rng.choice([1, 2, 4]))
        pad = int(rng.integers(0, min(3, k // 2 + 1) + 1)) if k > 1 else int(rng.integers(0, 2))
        stride = int(rng.choice([1, 2]))
        c_in = p * int(rng.integers(1, 4))
        c_out = p * int(rng.integers(1, max(2, (cols + 2) // p + 1)))
        h = max(1, k - 2 * pad) + int(rng.integers(0, 5))
        w = max(1, k - 2 * pad) + int(rng.integers(0, 6))
        gate_rate = float(rng.choice([0.0, 0.1, 0.3, 0.6, 1.0]))
        cases.append(dict(c_in=c_in, c_out=c_out, size=(h, w), kernel=k, stride=stride,
                          padding=pad, partitions=p, base=str(rng.choice(["group", "first"])),
                          gate_rate=gate_rate, residual=bool(rng.random() < 0.4),
                          relu=bool(rng.random() < 0.7), dense=p == 1 and rng.random() < 0.5,
                          seed=seed * 1000 + i, name=f"case{i}"))
    return cases


def _run(tmp_path: Path, params: HwParams, layers, *, dense=False, stall=0.0,
         testcase="run_plan"):
    rtl = RtlSim(params, SIM)
    runs = []
    for i, layer in enumerate(layers):
        lpath = tmp_path / f"{i:02d}.layer.npz"
        write_layer(lpath, layer)
        runs.append(dict(layer=str(lpath), result=str(tmp_path / f"{i:02d}.result.npz"),
                         dense=dense, stall_in=stall, stall_out=stall, seed=i + 1))
    rtl.run(runs, testcase=testcase, workdir=tmp_path / "sim")
    return [read_result(r["result"]) for r in runs]


def _check(layer, result, dense=False):
    y, gate = run_reference(layer, dense=dense)
    assert result.y.shape == y.shape, layer.name
    bad = np.argwhere(result.y != y)
    assert bad.size == 0, f"{layer.name}: {len(bad)} outputs differ, first at {bad[0].tolist()}"
    np.testing.assert_array_equal(result.gate, gate, err_msg=f"{layer.name}: gate bits")


@pytest.mark.parametrize("rows,cols,seed", [(8, 8, 1), (8, 8, 2), (4, 6, 3)])
def test_random_layers_bit_exact(tmp_path, rows, cols, seed):
    params = HwParams(rows=rows, cols=cols)
    layers = [make_layer(**c) for c in random_cases(seed, 10, rows, cols)]
    for layer, result in zip(layers, _run(tmp_path, params, layers)):
        _check(layer, result)
        fig = work_figures(layer, result.gate, rows, cols)
        assert result.cycles >= fig["bound_cycles"], layer.name


def test_dense_mode_bit_exact(tmp_path):
    params = HwParams(rows=8, cols=8)
    layers = [make_layer(**c) for c in random_cases(7, 6, 8, 8)]
    for layer, result in zip(layers, _run(tmp_path, params, layers, dense=True)):
        _check(layer, result, dense=True)


def test_backpressure_nothing_lost(tmp_path):
    """Random valid/ready stalls on both streams (40% of cycles): results stay exact."""
    params = HwParams(rows=4, cols=6)
    layers = [make_layer(**c) for c in random_cases(11, 4, 4, 6)]
    for layer, result in zip(layers, _run(tmp_path, params, layers, stall=0.4)):
        _check(layer, result)


def test_gate_rate_extremes(tmp_path):
    params = HwParams(rows=8, cols=8)
    layers = [make_layer(c_in=8, c_out=16, size=(7, 9), gate_rate=r, seed=5, name=f"rate{r}")
              for r in (0.0, 1.0)]
    layers.append(make_layer(c_in=4, c_out=4, size=(1, 1), kernel=1, padding=0, seed=6,
                             name="one_pixel"))
    for layer, result in zip(layers, _run(tmp_path, params, layers)):
        _check(layer, result)


@pytest.mark.parametrize("rows,cols", [(4, 6), (8, 8)])
def test_padding_pixels_bit_exact(tmp_path, rows, cols):
    """K=1 layers with padding 1..3: the first passes hold only padding pixels (acc = bias),
    so every array sum of a pass can be 0 and nothing upstream of the drain ever changes; no
    X (undriven) bit may reach a result (the testbench decodes X as 0 and as 1)."""
    params = HwParams(rows=rows, cols=cols)
    layers = []
    for i, (pad, size, c_in, c_out, p, dense) in enumerate([
            (1, (4, 1), 2, 5, 1, True), (2, (1, 1), 3, 7, 1, True), (3, (2, 3), 2, 9, 1, True),
            (1, (3, 2), 4, 8, 2, False), (2, (1, 2), 4, 6, 2, False),
            (3, (1, 1), 2, 4, 1, False)]):
        layers.append(make_layer(c_in=c_in, c_out=c_out, size=size, kernel=1, stride=1,
                                 padding=pad, partitions=p, dense=dense, residual=i % 2 == 1,
                                 seed=11000 + i, name=f"pad{pad}_{i}"))
    for layer, result in zip(layers, _run(tmp_path, params, layers)):
        _check(layer, result)


def test_counters_match_cycle_model(tmp_path):
    """The cycle model predicts the RTL's counters exactly (no stalls on the streams)."""
    from sluice.hw.cycle_model import predict

    params = HwParams(rows=8, cols=8)
    layers = [make_layer(**c) for c in random_cases(21, 6, 8, 8)]
    for layer, result in zip(layers, _run(tmp_path, params, layers)):
        model = predict(layer, result.gate, params)
        assert result.cycles == model["cycles"], layer.name
        for name, value in result.counters.items():
            if name in model:
                assert value == model[name], f"{layer.name}: {name}"


def test_row_slices_on_an_odd_row_count(tmp_path):
    """Sliced conditional passes through the Verilog on 5 rows (slices of 2 rows, the fifth
    row idle in a sliced pass), 5 x 5 and 7 x 7 kernels, a residual: bit-exact, the cycle
    model exact, and fewer cycles than the same instance without row slices."""
    from dataclasses import replace

    from sluice.hw.cycle_model import predict

    params = HwParams(rows=5, cols=4, act_depth=2048, wgt_depth=512, pix_depth=128)
    layers = [make_layer(c_in=4, c_out=6, size=(5, 6), kernel=5, padding=2, partitions=2,
                         gate_rate=0.02, residual=True, seed=31, name="k5_res"),
              make_layer(c_in=6, c_out=6, size=(4, 5), kernel=7, padding=3, partitions=3,
                         gate_rate=0.05, seed=32, name="k7")]
    for layer, result in zip(layers, _run(tmp_path, params, layers)):
        _check(layer, result)
        assert result.cycles == predict(layer, result.gate, params)["cycles"], layer.name
        unsliced = predict(layer, result.gate, replace(params, row_slices=1))["cycles"]
        assert result.cycles < unsliced, layer.name


def test_three_row_slices_through_the_verilog(tmp_path):
    """Three-slice passes (3 x 3, at most rows // 4 pixels per skip group) through the
    Verilog on 5 rows (one row per slice, rows 3 and 4 idle), one-column skip groups, a
    residual: bit-exact, the cycle model exact, and fewer cycles than on two slices."""
    from dataclasses import replace

    from sluice.hw.cycle_model import predict

    params = HwParams(rows=5, cols=4, act_depth=2048, wgt_depth=512, pix_depth=128,
                      skip_cols=1, row_slices=3)
    layer = make_layer(c_in=4, c_out=8, size=(5, 4), kernel=3, padding=1, partitions=2,
                       gate_rate=0.02, residual=True, seed=33, name="k3_three_slices")
    (result,) = _run(tmp_path, params, [layer])
    _check(layer, result)
    model = predict(layer, result.gate, params)
    assert model["sliced3_passes"] > 0 and result.cycles == model["cycles"]
    assert result.cycles < predict(layer, result.gate, replace(params, row_slices=2))["cycles"]


def test_invalid_descriptor_then_valid(tmp_path):
    layer = make_layer(seed=9, name="after_error")
    (result,) = _run(tmp_path, HwParams(rows=4, cols=6), [layer], testcase="invalid_then_valid")
    _check(layer, result)


def test_reset_mid_layer(tmp_path):
    layer = make_layer(c_in=8, c_out=8, size=(8, 8), seed=10, name="after_reset")
    (result,) = _run(tmp_path, HwParams(rows=4, cols=6), [layer], testcase="reset_mid_layer")
    _check(layer, result)


@pytest.mark.skipif(simulator_missing("verilator") is not None,
                    reason=str(simulator_missing("verilator")))
def test_verilator_run(tmp_path):
    global SIM
    saved, SIM = SIM, "verilator"
    try:
        # a small instance: Verilator's C++ build of the default 8x8 takes minutes
        layers = [make_layer(c_in=8, c_out=8, size=(6, 6), residual=True, seed=12, name="vl")]
        small = HwParams(rows=4, cols=4, act_depth=2048, wgt_depth=512, pix_depth=256)
        (result,) = _run(tmp_path, small, layers)
    finally:
        SIM = saved
    _check(layers[0], result)
    assert result.runner == "verilator"


def test_waves_use_their_own_traced_build(tmp_path, monkeypatch):
    """WAVES=1 must not reuse an untraced build: it gets its own build and writes a trace."""
    monkeypatch.setenv("SLUICE_SIM_BUILD", str(tmp_path / "build"))
    small = HwParams(rows=2, cols=2, act_depth=1024, wgt_depth=256, pix_depth=64)
    plain = RtlSim(small, "icarus")
    monkeypatch.setenv("WAVES", "1")
    traced = RtlSim(small, "icarus")
    assert traced.build_dir != plain.build_dir and traced.build_dir.name.endswith("_waves")
    layer = make_layer(c_in=4, c_out=2, size=(3, 3), partitions=2, seed=3, name="waves")
    write_layer(tmp_path / "w.layer.npz", layer)
    traced.run([dict(layer=str(tmp_path / "w.layer.npz"), result=str(tmp_path / "w.result.npz"))],
               workdir=tmp_path / "run")
    _check(layer, read_result(tmp_path / "w.result.npz"))
    assert list(traced.build_dir.glob("*.fst")), "no FST trace written"
    assert not list(plain.build_dir.glob("*.fst"))


def _free_and_stalled(tmp_path, params, seed):
    """Four random layers on ``params``'s 4x4 instance: bit-exact with the model's cycle count
    when the streams never stall, bit-exact again with stalls on both streams."""
    from sluice.hw.cycle_model import predict

    layers = [make_layer(**c) for c in random_cases(seed, 4, 4, 4)]
    for layer, result in zip(layers, _run(tmp_path / "free", params, layers)):
        _check(layer, result)
        assert result.cycles == predict(layer, result.gate, params)["cycles"], layer.name
    for layer, result in zip(layers, _run(tmp_path / "stall", params, layers, stall=0.3)):
        _check(layer, result)


def test_shared_post_units_bit_exact(tmp_path):
    """One post-processing unit for all four columns (``post_cols``), in the generated
    Verilog: bit-exact, the model's cycle count without stalls, and exact under back-pressure
    on both streams (the drain's FIFO room check with rows leaving every 4 cycles)."""
    _free_and_stalled(tmp_path, HwParams(rows=4, cols=4, act_depth=2048, wgt_depth=512,
                                         pix_depth=256, post_cols=4), seed=31)


def test_shared_narrow_activation_copies_bit_exact(tmp_path):
    """Activation-buffer copies read by two skip groups through their two ports, in 2-byte
    words (``act_share`` 2, ``act_width`` 2: a 16-byte beat is 8 words, written two a cycle
    through the copies' two ports over 4 cycles), in the generated Verilog: bit-exact, the
    model's cycle count without stalls, exact with stalls on both streams (the stream held
    while a beat's words are written)."""
    params = HwParams(rows=4, cols=4, act_depth=2048, wgt_depth=512, pix_depth=256,
                      act_share=2, act_width=2)
    assert params.act_copies == 4 and params.act_write_ports == 2 and params.act_pieces == 4
    _free_and_stalled(tmp_path, params, seed=41)


def test_sums_at_the_ends_of_the_narrowed_width(tmp_path):
    """The generated Verilog with sums ``sum_bits`` wide (19 bits for a 16-word weight bank):
    a layer whose sums reach both ends (+-260,096) is exact, gated and dense."""
    params = HwParams(rows=2, cols=2, act_depth=256, wgt_depth=16, pix_depth=32, skip_cols=1)
    assert params.sum_bits == 19
    layer = extreme_sums_layer(params.wgt_depth)
    (gated,) = _run(tmp_path / "gated", params, [layer])
    _check(layer, gated)
    assert gated.gate[0].sum() == 2 and gated.y[0, 0, 0] == 64
    (dense,) = _run(tmp_path / "dense", params, [layer], dense=True)
    _check(layer, dense, dense=True)
    assert dense.y[1, 0, 0] == -63


def test_run_layer_cli_simulates_the_instance_asked_for(tmp_path, capsys):
    """`sluice run-layer --sim icarus` takes the generator's options: the RTL run is the
    instance named (its cycles are the model's for exactly that instance, not the default's),
    and a bad option exits 2 before anything is built."""
    from sluice.cli import main
    from sluice.hw.cycle_model import predict

    layer = make_layer(c_in=8, c_out=8, size=(6, 6), partitions=4, gate_rate=0.3, seed=5,
                       name="cli")
    lpath, rpath = tmp_path / "l.layer.npz", tmp_path / "l.result.npz"
    write_layer(lpath, layer)
    opts = ["--rows", "2", "--cols", "4", "--act-depth", "1024", "--wgt-depth", "128",
            "--pix-depth", "64", "--skip-cols", "1", "--act-share", "2", "--act-width", "4",
            "--feed-regs", "2"]
    assert main(["run-layer", str(lpath), "-o", str(rpath), "--sim", SIM, *opts]) == 0
    result = read_result(rpath)
    _check(layer, result)
    params = HwParams(rows=2, cols=4, act_depth=1024, wgt_depth=128, pix_depth=64,
                      skip_cols=1, act_share=2, act_width=4, feed_regs=2)
    assert result.cycles == predict(layer, result.gate, params)["cycles"]
    assert result.cycles != predict(layer, result.gate, replace(params, feed_regs=1))["cycles"]
    assert result.cycles != predict(layer, result.gate, HwParams(rows=2, cols=4))["cycles"]
    capsys.readouterr()
    assert main(["run-layer", str(lpath), "-o", str(tmp_path / "x.result.npz"), "--sim", SIM,
                 "--skip-cols", "3"]) == 2
    assert "--skip-cols: 3 must divide --cols 8" in capsys.readouterr().err
    assert not (tmp_path / "x.result.npz").exists()


def test_the_simulation_cache_key_covers_every_module_the_verilog_comes_from():
    """A built simulation is reused while ``design_key`` stays the same; the key leaves out
    the ``NOT_RTL`` modules (the command line, the cycle model ...), so editing them rebuilds
    nothing. That is sound only while generating the Verilog imports none of them: checked in
    a fresh interpreter, and every module it imports is hashed."""
    import subprocess
    import sys

    from sluice.sim.runner import NOT_RTL, rtl_sources

    code = ("import sys\n"
            "from sluice.hw.verilog import verilog_text\n"
            "from sluice.hw.params import HwParams\n"
            "verilog_text(HwParams(rows=2, cols=2, act_depth=256, wgt_depth=64, pix_depth=32))\n"
            "import sluice.sim.harness\n"
            "print(' '.join(m.__file__ for n, m in sys.modules.items()\n"
            "               if n.startswith('sluice.hw.') or n == 'sluice.sim.harness'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    used = {Path(f).resolve() for f in out}
    hashed = {p.resolve() for p in rtl_sources()}
    assert used <= hashed
    assert not {p.name for p in used} & set(NOT_RTL)
    assert {p.name for p in hashed} & set(NOT_RTL) == set()
