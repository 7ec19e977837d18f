"""The block RAMs' read/write collisions are don't-care (``hw.params.NO_COLLISION_MEMORIES``).

Board builds tell yosys that a same-address read and write in one cycle may return anything on
these memories (an ECP5 DP16KD's two ports do not keep the old data either). That holds only if
no such read's data is ever used. Checked here in the Amaranth simulator: on every clock edge
where a memory's write port and one of its read ports are enabled at the same address, the
read data is replaced by its complement right after the edge; whole layers must still come out
bit-exact. A control corrupts the weight buffer's reads during every write to it (the loader
filling one bank while the array reads the other) and must break the results, so the
corruption does reach the data paths.
"""

from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Value

from sluice.hw.params import NO_COLLISION_MEMORIES, HwParams
from sluice.hw.simulate import run_layer_amaranth
from sluice.model.randlayer import make_layer
from sluice.model.reference import run_reference

SQUARE = HwParams(rows=4, cols=4, act_depth=1024, wgt_depth=512, pix_depth=64, skip_cols=2)
SLOW = HwParams(rows=4, cols=4, act_depth=2048, wgt_depth=512, pix_depth=256, skip_cols=2,
                stream_width=4)
CASES = {
    # two tiles with residuals, one post-processing unit for the columns
    "gated_res_shared_post": (replace(SQUARE, post_cols=4),
                              dict(c_in=8, c_out=8, size=(5, 6), partitions=2, gate_rate=0.3,
                                   residual=True)),
    # the board builds' options: activation copies shared by two groups, 2-byte words
    "shared_act_narrow_words": (replace(SQUARE, act_share=2, act_width=2, post_cols=4),
                                dict(c_in=8, c_out=8, size=(5, 6), partitions=2,
                                     gate_rate=0.3, residual=True)),
    # a slow stream: the activation load overlaps the passes of the first tile
    "slow_stream_overlap": (SLOW, dict(c_in=12, c_out=6, size=(9, 9), kernel=1, padding=0,
                                       partitions=3, gate_rate=0.3)),
}


def corrupting(counts, corrupt_all_writes_to=None):
    """A monitor for ``run_layer_amaranth``: complements the read data of every same-address
    collision (or, for ``corrupt_all_writes_to``, of every read during a write) and counts
    them per memory kind in ``counts``."""
    async def monitor(ctx, dut):
        pairs = [(name, w, r) for name, mem in dut.memories.items()
                 for w in mem.write_ports for r in mem.read_ports]
        kind = {name: next(k for k in NO_COLLISION_MEMORIES if name.startswith(k))
                for name, _, _ in pairs}
        sampled = [x for _, w, r in pairs for x in (w.en, w.addr, r.en, r.addr)]
        async for _, _, *v in ctx.tick().sample(*sampled):
            for i, (name, _, r) in enumerate(pairs):
                w_en, w_addr, r_en, r_addr = v[4 * i:4 * i + 4]
                if not (w_en and r_en):
                    continue
                if w_addr == r_addr or kind[name] == corrupt_all_writes_to:
                    counts[kind[name]] = counts.get(kind[name], 0) + 1
                    data = Value.cast(r.data)
                    ctx.set(data, ctx.get(data) ^ ((1 << len(data)) - 1))
    return monitor


@pytest.mark.parametrize("case", sorted(CASES))
def test_collision_reads_are_never_used(case):
    params, kw = CASES[case]
    layer = make_layer(seed=1, name=case, **kw)
    counts = {}
    res = run_layer_amaranth(layer, params, monitor=corrupting(counts))
    y, gate = run_reference(layer)
    assert np.array_equal(res.y, y), f"{int((res.y != y).sum())} outputs differ"
    assert np.array_equal(res.gate, gate)
    # not vacuous: every kind of memory the layer uses had collisions, and they were corrupted
    expect = {"act_buf", "wgt_buf", "psum_buf", "active_list"}
    if params.act_shared:
        expect.discard("act_buf")  # a shared copy's port writes or reads, never both
    if kw.get("residual"):
        expect.add("res_buf")
    assert expect <= set(counts), counts


def test_the_corruption_reaches_the_data():
    params, kw = CASES["gated_res_shared_post"]
    layer = make_layer(seed=1, name="control", **kw)
    counts = {}
    res = run_layer_amaranth(layer, params, monitor=corrupting(counts, "wgt_buf"))
    y, _ = run_reference(layer)
    assert counts["wgt_buf"] > 1 and not np.array_equal(res.y, y)


@pytest.mark.parametrize("throttle", [None, 3])
def test_output_fifo_ports_never_meet(throttle):
    """The output FIFO's storage (``hw.fifo.BufferedFIFO``) feeds the output stream directly,
    so a corrupted read there would reach the host only through the testbench's sampling
    order; its claim is checked directly instead: reads and writes in the same cycle happen
    (words a cycle apart with a post-processing unit per column; with and without a throttled
    output stream), never at one address."""
    params, kw = CASES["gated_res_shared_post"]
    params = replace(params, post_cols=1)
    layer = make_layer(seed=1, name="fifo", **kw)
    seen = {"both": 0, "same": 0}

    async def monitor(ctx, dut):
        fifo = dut.memories["storage (out_fifo)"]
        (w,), (r,) = fifo.write_ports, fifo.read_ports
        async for _, _, w_en, w_addr, r_en, r_addr in ctx.tick().sample(w.en, w.addr, r.en,
                                                                        r.addr):
            if w_en and r_en:
                seen["both"] += 1
                seen["same"] += w_addr == r_addr

    res = run_layer_amaranth(layer, params, monitor=monitor, throttle_seed=throttle)
    y, _ = run_reference(layer)
    assert np.array_equal(res.y, y)
    assert seen["both"] > 10 and seen["same"] == 0, seen
