"""cocotb testbench: run layer jobs on the accelerator inside :mod:`sluice.sim.harness`.

The runner (:mod:`sluice.sim.runner`) writes a *plan* (``plan.json``) into the test directory: a
list of runs, each a layer file, a result path and options. For every job of every run the
testbench loads the job's input stream into the harness, writes the descriptor over AXI4-Lite,
starts the job and then sleeps on a timer between STATUS polls (Python is not woken every
cycle); afterwards it reads the counters, dumps the captured output stream and hands it to the
host sequence (:mod:`sluice.sim.host`, shared with the board host) to decode. The result file is
written here, in the simulator process, with every performance counter.

Other test cases in this module check the control path: an invalid descriptor raises the error
flag and the next valid layer still runs; a reset in the middle of a layer is followed by a
clean, correct run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer

from sluice.hw.cycle_model import predict
from sluice.hw.params import COUNTERS, REG, STATUS_FIELDS, HwParams
from sluice.model.layerfile import Result, read_layer, write_result
from sluice.sim import host
from sluice.sim.axil import AxiLiteMaster
from sluice.sim.harness import IN_HEX, OUT_HEX

CLOCK_NS = 10
POLL_CYCLES = 256  # STATUS is read this often while a job runs
_XZ_TO_0 = str.maketrans("xXzZ", "0000")
_XZ_TO_F = str.maketrans("xXzZ", "ffff")
STATUS_BIT = {name: lsb for name, lsb, _, _ in STATUS_FIELDS}


class Bench:
    """Owns the clock, the AXI4-Lite master and the harness controls."""

    def __init__(self, dut, params: HwParams, workdir: Path):
        self.dut, self.params, self.workdir = dut, params, workdir
        self.axil = AxiLiteMaster(dut, dut.clk)
        self.in_width = 8 * params.stream_bytes

    async def start(self):
        d = self.dut
        for name in ("load", "dump", "feed", "in_count", "in_stall", "out_stall", "seed"):
            getattr(d, name).value = 0
        cocotb.start_soon(Clock(d.clk, CLOCK_NS, unit="ns").start())
        await self.reset()

    async def reset(self, cycles: int = 4):
        self.dut.rst.value = 1
        self.dut.feed.value = 0
        self.axil.idle()
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def load_stream(self, beats):
        digits = (self.in_width + 3) // 4
        text = "\n".join(f"{int(b):0{digits}x}" for b in beats) + "\n"
        (self.workdir / IN_HEX).write_text(text)
        self.dut.in_count.value = len(beats)
        await RisingEdge(self.dut.clk)
        self.dut.load.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.load.value = 0

    async def collect(self) -> list[tuple[int, int]]:
        """Output beats captured since ``feed`` rose: (tdata, tlast) with X/Z bits as 0, then
        (tdata, tlast) with X/Z bits as 1."""
        n = int(self.dut.out_count.value)
        self.dut.dump.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.dump.value = 0
        await RisingEdge(self.dut.clk)
        if n == 0:
            return []
        out_bits = self.params.out_bits
        words = []
        for line in (self.workdir / OUT_HEX).read_text().splitlines():
            line = line.split("//")[0].strip()  # $writememh writes "// 0x<address>" comments
            if not line:
                continue
            # X/Z (bits the RTL leaves undriven) are read both ways; see run_layer
            lo = int(line.translate(_XZ_TO_0), 16)
            hi = int(line.translate(_XZ_TO_F), 16)
            words.append((lo & ((1 << out_bits) - 1), lo >> out_bits,
                          hi & ((1 << out_bits) - 1), hi >> out_bits))
        return words[:n]

    async def run_job(self, job, *, stall_in=0.0, stall_out=0.0, seed=1, timeout_cycles=10**6):
        """One job: load, descriptor and START, wait; returns (words, counters, status).

        ``words`` are the captured output beats; the last one must carry TLAST.
        """
        d = self.dut
        d.feed.value = 0
        await self.load_stream(job.beats)
        d.in_stall.value = int(stall_in * 65536) & 0xFFFF
        d.out_stall.value = int(stall_out * 65536) & 0xFFFF
        d.seed.value = seed
        d.feed.value = 1
        for addr, value in job.writes:  # descriptor registers, then CTRL.START
            await self.axil.write(addr, value)
        status = await self.wait_done(timeout_cycles)
        counters = {name.lower(): await self.axil.read_reg(name) for name, _ in COUNTERS}
        beats = await self.collect()
        sent = int(d.in_sent.value)
        d.feed.value = 0
        await RisingEdge(d.clk)
        if status & (1 << STATUS_BIT["ERROR"]):
            return [], counters, status
        if sent != len(job.beats):
            raise AssertionError(f"the accelerator took {sent} of {len(job.beats)} input beats")
        for tlast_at in (1, 3):
            lasts = [n for n, b in enumerate(beats) if b[tlast_at]]
            if lasts != ([len(beats) - 1] if beats else []):
                raise AssertionError(f"TLAST on output beats {lasts}, expected only on the "
                                     f"last of {len(beats)}")
        return beats, counters, status

    async def wait_done(self, timeout_cycles: int) -> int:
        """Poll STATUS every POLL_CYCLES cycles (one timer, no per-cycle Python)."""
        waited = 0
        while True:
            status = await self.axil.read_reg("STATUS")
            if not status & (1 << STATUS_BIT["BUSY"]):
                return status
            if waited > timeout_cycles:
                raise AssertionError(f"still busy after {waited} cycles (STATUS=0x{status:x})")
            await Timer(POLL_CYCLES * CLOCK_NS, "ns")
            await RisingEdge(self.dut.clk)
            waited += POLL_CYCLES


def _plan():
    path = Path(os.environ.get("SLUICE_PLAN", "plan.json"))
    return json.loads(path.read_text()), path.parent


def _timeout(layer, params, dense):
    gate = None if (dense or not layer.gated) else np.ones(
        (layer.c_out, layer.h_out, layer.w_out), np.uint8)
    return 4 * predict(layer, gate, params, dense=dense)["cycles"] + 10_000


async def run_layer(bench: Bench, layer, *, dense=False, stall_in=0.0, stall_out=0.0, seed=1):
    """Every job of one layer through the RTL; returns a Result with every counter."""
    params = bench.params
    jobs = host.layer_jobs(layer, params, dense=dense)
    # stalls slow the streams down; the timeout is only there to turn a hang into an error
    timeout = int(_timeout(layer, params, dense) / (1.0 - max(stall_in, stall_out, 0.0) + 1e-3))
    y, gate = host.new_outputs(layer)
    total = {}
    for n, job in enumerate(jobs):
        words, counters, status = await bench.run_job(job, stall_in=stall_in,
                                                      stall_out=stall_out, seed=seed + n,
                                                      timeout_cycles=timeout)
        if status & (1 << STATUS_BIT["ERROR"]):
            err = await bench.axil.read_reg("ERROR")
            raise AssertionError(f"{layer.name}: job {n} refused, ERROR=0x{err:x}")
        # decode with every X/Z bit read as 0, then as 1: both must give the same outputs, so
        # X may only sit in bits the host ignores (columns beyond C_out, invalid skip groups)
        decoded = []
        for at in (0, 2):
            yj, gj = host.new_outputs(layer)
            host.decode_words(layer, job, [b[at] for b in words], yj, gj, params)
            decoded.append((yj, gj))
        (y0, g0), (y1, g1) = decoded
        if not ((y0 == y1).all() and (g0 == g1).all()):
            bad = np.argwhere((y0 != y1) | (g0 != g1))[0].tolist()
            raise AssertionError(f"{layer.name}: job {n}: undriven (X/Z) result bits, first at "
                                 f"output {bad} (channel, y, x)")
        host.decode_words(layer, job, [b[0] for b in words], y, gate, params)
        for k, v in counters.items():
            total[k] = total.get(k, 0) + v
    cycles = total.pop("cycles")
    return Result(y=y, gate=gate, cycles=cycles, runner=os.environ.get("SLUICE_RUNNER", "rtl"),
                  rows=params.rows, cols=params.cols, counters=total)


@cocotb.test()
async def run_plan(dut):
    """Run every layer of plan.json and write its result file."""
    plan, workdir = _plan()
    bench = Bench(dut, HwParams(**plan["params"]), workdir)
    await bench.start()
    for item in plan["runs"]:
        layer = read_layer(item["layer"])
        result = await run_layer(bench, layer, dense=item.get("dense", False),
                                 stall_in=item.get("stall_in", 0.0),
                                 stall_out=item.get("stall_out", 0.0), seed=item.get("seed", 1))
        write_result(item["result"], result)
        dut._log.info("%s: %d cycles", layer.name, result.cycles)


async def _first_layer(dut):
    """Bench started on plan.json's first run: (bench, run item, layer, its first job)."""
    plan, workdir = _plan()
    bench = Bench(dut, HwParams(**plan["params"]), workdir)
    await bench.start()
    item = plan["runs"][0]
    layer = read_layer(item["layer"])
    return bench, item, layer, host.layer_jobs(layer, bench.params)[0]


@cocotb.test()
async def invalid_then_valid(dut):
    """An invalid descriptor sets the error flag without touching the streams; then a valid
    layer runs bit-exact."""
    bench, item, layer, job = await _first_layer(dut)
    bad = [(a, 4 if a == REG["KERNEL"].addr else v) for a, v in job.writes]
    words, _, status = await bench.run_job(dataclasses.replace(job, writes=bad),
                                           timeout_cycles=1000)
    assert status & (1 << STATUS_BIT["ERROR"]), f"STATUS=0x{status:x}: no error flag"
    assert await bench.axil.read_reg("ERROR") != 0
    assert words == [] and int(dut.in_sent.value) == 0
    result = await run_layer(bench, layer)
    write_result(item["result"], result)


@cocotb.test()
async def reset_mid_layer(dut):
    """Reset while a layer is streaming, then the same layer runs clean and correct."""
    bench, item, layer, job = await _first_layer(dut)
    await bench.load_stream(job.beats)
    dut.feed.value = 1
    for addr, value in job.writes:
        await bench.axil.write(addr, value)
    await ClockCycles(dut.clk, 50)
    assert await bench.axil.read_reg("STATUS") & (1 << STATUS_BIT["BUSY"]), "not busy mid-layer"
    await bench.reset()
    assert await bench.axil.read_reg("STATUS") & (1 << STATUS_BIT["BUSY"]) == 0
    result = await run_layer(bench, layer)
    write_result(item["result"], result)


@cocotb.test()
async def run_model(dut):
    """The exported network layer by layer on the RTL, each layer fed with the RTL's own output
    of the layers before it (the manifest's wiring); gated layers also run in dense mode (the
    speedup baseline). With several images (``images``: an npz of int8 inputs), every layer
    runs once on the images stacked along the height (:mod:`sluice.sim.batch`). The host part
    (pool, classifier) is done outside, from the results."""
    from sluice.model.intnet import IntNet
    from sluice.sim.batch import bind_batch, split

    plan, workdir = _plan()
    bench = Bench(dut, HwParams(**plan["params"]), workdir)
    await bench.start()
    spec = plan["model"]
    net = IntNet(spec["export"])
    out = Path(spec["out"])
    if spec.get("images"):
        with np.load(spec["images"]) as f:
            tensors = [{"input": x} for x in f["x"]]
    else:
        tensors = [{"input": net.layers[0][1].x}]
    for entry, layer in net.layers[:spec.get("limit") or None]:
        bound, rows = bind_batch(net, entry, layer, tensors)
        stem = Path(entry["file"]).name.removesuffix(".layer.npz")
        result = await run_layer(bench, bound)
        write_result(out / f"{stem}.result.npz", result)
        for t, y in zip(tensors, split(result.y, rows)):
            t[entry["name"]] = y
        if spec.get("dense_baseline", True) and layer.gated:
            dense = await run_layer(bench, bound, dense=True)
            write_result(out / f"{stem}.dense.result.npz", dense)
        dut._log.warning("%s: %d cycles", layer.name, result.cycles)
