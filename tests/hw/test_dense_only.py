"""The dense-only build (``HwParams(gating=False)``): the same array with the gating hardware
left out at elaboration, the baseline for the cost of gating (boards' ``--dense-only``)."""

import dataclasses

import numpy as np
import pytest

from sluice.errors import SluiceError
from sluice.hw.params import ERROR_FIELDS, ID_GATING_BIT, REG, HwParams, id_value
from sluice.hw.simulate import run_layer_amaranth, simulate_jobs
from sluice.model.randlayer import make_layer
from sluice.sim.host import layer_jobs

from test_top import _job, check_run  # noqa: E402  (tests/hw is on sys.path)

GATED = HwParams(rows=4, cols=4, act_depth=1024, wgt_depth=512, pix_depth=64, skip_cols=2)
DENSE = dataclasses.replace(GATED, gating=False)
ERR = {name: lsb for name, lsb, _, _ in ERROR_FIELDS}


def test_params():
    assert DENSE.skip_cols == DENSE.cols and DENSE.groups == 1
    assert DENSE.act_copies == DENSE.rows  # one activation feed per row, not per skip group
    assert id_value(DENSE) >> ID_GATING_BIT & 1 == 0
    assert id_value(GATED) >> ID_GATING_BIT & 1 == 1


def test_gated_layer_in_dense_mode_is_exact_on_both_builds():
    """A gated layer run dense on the dense-only build: bit-exact, counters equal to the cycle
    model. The gated build's dense mode streams the same steps; its skip groups are skewed
    each on its own, so its drain starts cols - skip_cols cycles sooner after a pass: a few
    cycles less, exactly as the model says."""
    layer = make_layer(c_in=6, c_out=6, size=(5, 4), partitions=2, gate_rate=0.3, residual=True,
                       seed=4)
    res, _ = check_run(layer, DENSE, dense=True)
    gated, _ = check_run(layer, GATED, dense=True)
    assert gated.counters["macs_issued"] == res.counters["macs_issued"]
    assert gated.counters["passes"] == res.counters["passes"]
    assert gated.cycles < res.cycles
    assert res.counters["active_pixels"] == 0 and res.counters["macs_skipped"] == 0


def test_dense_layer_with_stride_and_padding():
    layer = make_layer(c_in=3, c_out=5, size=(7, 6), kernel=5, stride=2, padding=2, dense=True,
                       seed=2)
    check_run(layer, DENSE, dense=False)


def test_gated_descriptor_is_refused():
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), partitions=2, gate_rate=0.5, seed=3)
    gated_job = layer_jobs(layer, GATED)[0]  # a gated job as a host for a gated build sends it
    good = layer_jobs(layer, DENSE, dense=True)[0]
    results = simulate_jobs([_job(gated_job.descriptor, gated_job.beats), good], DENSE)
    words, status, error, _ = results[0]
    assert error == 1 << ERR["GATING"] and status & 0b110 == 0b110 and words == []
    words, status, error, _ = results[1]  # not hung: the next (dense) job runs
    assert error == 0 and status & 0b111 == 0b010 and words


def test_host_refuses_a_gated_run():
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), partitions=2, gate_rate=0.5, seed=3)
    with pytest.raises(SluiceError, match="dense-only"):
        layer_jobs(layer, DENSE)


def test_verilog_leaves_the_gating_hardware_out():
    from sluice.hw.verilog import verilog_text
    gated, dense = verilog_text(GATED), verilog_text(DENSE)
    for name in ("gate_unit", "active_list_0", "psum_buf_0", "act_buf_1"):
        assert name in gated
    for name in ("gate_unit", "active_list", "psum_buf"):
        assert name not in dense
    # one activation buffer copy per row (act_buf_0..3) instead of one per row and skip group
    assert "act_buf_3 " in dense and "act_buf_4 " not in dense
    assert "gating = False" in dense
    # nor the gate compare's copies of the drained sums and of the thresholds
    for name in ("gate_psum_", "gate_thr_"):
        assert name in gated and name not in dense, name


def test_id_register_reports_no_gating():
    from amaranth.sim import Simulator

    from sluice.hw.simulate import axil_read
    from sluice.hw.top import Sluice
    dut = Sluice(DENSE)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got = []

    async def bench(ctx):
        got.append(await axil_read(ctx, dut, REG["ID"].addr))

    sim.add_testbench(bench)
    sim.run()
    assert got == [id_value(DENSE)]
    assert np.uint32(got[0]) >> ID_GATING_BIT & 1 == 0
