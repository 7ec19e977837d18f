"""Run layers on the Amaranth model of the top level (Python simulator), through its real ports.

The testbench only moves the transactions that ``sluice.sim.host`` builds: AXI4-Lite writes of
the descriptor and START, input stream beats, output stream words, AXI4-Lite reads of STATUS and
the counters. Used by the tests; slow (pure Python), so meant for small layers.
"""

from __future__ import annotations

from amaranth.sim import Simulator

from sluice.hw.params import COUNTERS, DEFAULT, REG, HwParams
from sluice.hw.top import Sluice


async def axil_write(ctx, dut, addr, value):
    """One AXI4-Lite write; returns the cycles it waited for AWREADY."""
    ctx.set(dut.axil_awaddr, addr)
    ctx.set(dut.axil_wdata, value & 0xFFFFFFFF)
    ctx.set(dut.axil_wstrb, 0xF)
    ctx.set(dut.axil_awvalid, 1)
    ctx.set(dut.axil_wvalid, 1)
    ctx.set(dut.axil_bready, 1)
    waited = 0
    while not ctx.get(dut.axil_awready):
        await ctx.tick()
        waited += 1
    await ctx.tick()
    ctx.set(dut.axil_awvalid, 0)
    ctx.set(dut.axil_wvalid, 0)
    while not ctx.get(dut.axil_bvalid):
        await ctx.tick()
    await ctx.tick()
    ctx.set(dut.axil_bready, 0)
    return waited


async def axil_read(ctx, dut, addr):
    ctx.set(dut.axil_araddr, addr)
    ctx.set(dut.axil_arvalid, 1)
    ctx.set(dut.axil_rready, 1)
    while not ctx.get(dut.axil_arready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(dut.axil_arvalid, 0)
    while not ctx.get(dut.axil_rvalid):
        await ctx.tick()
    value = ctx.get(dut.axil_rdata)
    await ctx.tick()
    ctx.set(dut.axil_rready, 0)
    return value


def simulate_jobs(jobs, params: HwParams = DEFAULT, vcd=None, max_cycles=2_000_000,
                  throttle_seed=None, ready_prob=2 / 3, monitor=None):
    """Run ``jobs`` back to back on a fresh instance.

    Two testbench processes: the *control* one writes the descriptor and START over AXI4-Lite,
    then polls STATUS and reads the counters; the *stream* one presents the job's input beats
    (from before START, so the input is never the bottleneck) and collects the output words with
    TREADY held high until the TLAST word (``throttle_seed``: instead drop TVALID and TREADY at
    random, a third of the cycles each, to exercise back-pressure; ``ready_prob``: the share of
    cycles with TREADY high, 2/3 unless given). ``monitor``: an ``async def monitor(ctx, dut)``
    run beside them as a background testbench (a check on the design's internals). Returns a
    list of ``(words, status, error, counters)``.
    """
    dut = Sluice(params)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = []
    state = {"job": -1, "stop": False, "finished": -1}

    async def control(ctx):
        for j, job in enumerate(jobs):
            for addr, value in job.writes[:-1]:
                await axil_write(ctx, dut, addr, value)
            state["job"], state["stop"] = j, False
            await axil_write(ctx, dut, *job.writes[-1])  # CTRL.START
            status = await axil_read(ctx, dut, REG["STATUS"].addr)
            if status & 0b100:
                state["stop"] = True
            else:
                cycles = 0
                while state["finished"] != j:
                    await ctx.tick()
                    cycles += 1
                    if cycles > max_cycles:
                        raise RuntimeError(f"job {j} did not finish in {max_cycles} cycles")
                while True:
                    status = await axil_read(ctx, dut, REG["STATUS"].addr)
                    if not status & 1:
                        break
            error = await axil_read(ctx, dut, REG["ERROR"].addr)
            counters = {}
            for name, _ in COUNTERS:
                counters[name.lower()] = await axil_read(ctx, dut, REG[name].addr)
            out.append((stream_words[j], status, error, counters))
            state["finished"] = j

    stream_words = [[] for _ in jobs]

    import random
    rng = random.Random(throttle_seed)

    async def stream(ctx):
        ctx.set(dut.m_axis_tready, 1)
        for j, job in enumerate(jobs):
            while state["job"] != j:
                await ctx.tick()
            words = stream_words[j]
            i, n = 0, len(job.beats)
            ended = False
            while not ended and not state["stop"]:
                gap = throttle_seed is not None and rng.random() < 1 / 3
                if throttle_seed is not None:
                    ctx.set(dut.m_axis_tready, rng.random() < ready_prob)
                if i < n and not gap:
                    ctx.set(dut.s_axis_tvalid, 1)
                    ctx.set(dut.s_axis_tdata, job.beats[i])
                else:
                    ctx.set(dut.s_axis_tvalid, 0)
                took = i < n and not gap and ctx.get(dut.s_axis_tready)
                if ctx.get(dut.m_axis_tvalid) and ctx.get(dut.m_axis_tready):
                    if ctx.get(dut.m_axis_tlast):
                        ended = True  # the terminating word carries no results
                    else:
                        words.append(ctx.get(dut.m_axis_tdata))
                await ctx.tick()
                i += bool(took)
            ctx.set(dut.s_axis_tvalid, 0)
            if not state["stop"]:
                state["finished"] = j
            while state["finished"] < j or (state["job"] == j and state["stop"]
                                             and len(out) <= j):
                await ctx.tick()

    sim.add_testbench(control)
    sim.add_testbench(stream, background=True)
    if monitor is not None:
        async def watch(ctx):
            await monitor(ctx, dut)
        sim.add_testbench(watch, background=True)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return out


def run_layer_amaranth(layer, params: HwParams = DEFAULT, dense: bool = False,
                       throttle_seed=None, ready_prob=2 / 3, monitor=None):
    """Run a whole layer; returns a ``sluice.model.layerfile.Result`` (runner ``amaranth``);
    ``throttle_seed``/``ready_prob``/``monitor``: see ``simulate_jobs``."""
    from sluice.errors import SluiceError
    from sluice.model.layerfile import Result
    from sluice.sim.host import decode_words, layer_jobs, new_outputs

    jobs = layer_jobs(layer, params, dense=dense)
    y, gate = new_outputs(layer)
    totals = {}
    runs = simulate_jobs(jobs, params, throttle_seed=throttle_seed, ready_prob=ready_prob,
                         monitor=monitor)
    for job, (words, status, error, counters) in zip(jobs, runs):
        if error:
            raise SluiceError(f"{layer.name}: the accelerator refused the job (ERROR=0x{error:x})")
        decode_words(layer, job, words, y, gate, params)
        for k, v in counters.items():
            totals[k] = totals.get(k, 0) + v
    return Result(y=y, gate=gate, cycles=totals["cycles"], runner="amaranth",
                  rows=params.rows, cols=params.cols, counters=totals)
