"""Unit tests: processing element / array, gate unit, post-processing, against the reference."""

import numpy as np
import pytest
from amaranth.hdl import Module, ResetInserter, Signal, signed, unsigned
from amaranth.sim import Simulator

from sluice.hw.params import PE_MULTS
from sluice.hw.pe import PE, PE_STAGES, SystolicArray
from sluice.hw.postproc import (GateUnit, PostProc, front_regs, mult_stages, param_read_last,
                               post_latency, res_stages, window_shift)
from sluice.model.reference import rescale


# (mult_stages, res_stages) of the PostProc variants the arrays use: up to 2 columns, 3, 4 on
STAGES = [(1, 1), (1, 3), (2, 3), (5, 3)]


def _post(stages):
    return PostProc(mult_stages=stages[0], res_stages=stages[1])


def _run(dut, bench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("mult", PE_MULTS)
@pytest.mark.parametrize("rows,cols,group", [(3, 4, 4), (2, 4, 2), (2, 3, 1)])
def test_array_pass_is_matrix_product(rows, cols, group, mult):
    """Two back-to-back skewed passes with enables, each skip group on its own activations;
    psum == masked dot products per element."""
    rng = np.random.default_rng(rows * 10 + cols + group)
    ng = cols // group
    steps = 12  # > rows + cols: pass 1 is fully latched before pass 2 latches anywhere
    dut = SystolicArray(rows=rows, cols=cols, group=group, mult=mult)
    passes = []
    for _ in range(2):
        a = rng.integers(-128, 128, (rows, ng, steps))  # each (row, group) its own pixel
        w = rng.integers(-127, 128, (cols, steps))
        en = rng.integers(0, 2, (rows, cols, steps))
        expect = np.array([[int((a[r, c // group] * w[c] * en[r, c]).sum())
                            for c in range(cols)] for r in range(rows)])
        passes.append((a, w, en, expect))
    got = []

    async def bench(ctx):
        total = 2 * steps + rows + cols + 4
        for t in range(total):
            for r in range(rows):
                for j in range(ng):
                    s = t - r  # each skip group skewed on its own (as the top level feeds)
                    k, s = divmod(s, steps) if s >= 0 else (9, 0)
                    if 0 <= k < 2:
                        a, _, en, _ = passes[k]
                        ctx.set(dut.a[r][j], int(a[r, j, s]))
                        ctx.set(dut.valid[r][j], 1)
                        ctx.set(dut.first[r][j], s == 0)
                        ctx.set(dut.last[r][j], s == steps - 1)
                        bits = en[r, j * group:(j + 1) * group, s]
                        ctx.set(dut.en[r][j], int(sum(int(b) << i for i, b in enumerate(bits))))
                    else:
                        ctx.set(dut.valid[r][j], 0)
            for c in range(cols):
                s = t - c % group
                k, s = divmod(s, steps) if s >= 0 else (9, 0)
                if 0 <= k < 2:
                    ctx.set(dut.w[c], int(passes[k][1][c, s]))
            await ctx.tick()
            if t == steps + rows + cols:  # first pass finished everywhere, second not yet
                got.append([[ctx.get(dut.psum[r][c]) for c in range(cols)] for r in range(rows)])
        got.append([[ctx.get(dut.psum[r][c]) for c in range(cols)] for r in range(rows)])

    _run(dut, bench)
    assert np.array_equal(np.array(got[0]), passes[0][3])
    assert np.array_equal(np.array(got[1]), passes[1][3])


@pytest.mark.parametrize("mult", PE_MULTS)
def test_pe_product_every_weight(mult):
    """One element, a one-step pass per cycle: psum == a * w for every int8 weight (-128
    included: the logic multiplier subtracts the sign bit's term) against the int8 extremes
    and random activations, and 0 when the element is disabled."""
    rng = np.random.default_rng(7)
    acts = [-128, -127, -1, 0, 1, 127] + [int(v) for v in rng.integers(-128, 128, 6)]
    cases = [(a, w, 1) for w in range(-128, 128) for a in acts]
    cases += [(int(a), int(w), 0) for a, w in rng.integers(-128, 128, (20, 2))]
    dut = PE(mult=mult)
    lat = PE_STAGES + 1
    got = []

    async def bench(ctx):
        for t in range(len(cases) + lat):
            if t < len(cases):
                a, w, en = cases[t]
                ctx.set(dut.a_in, a)
                ctx.set(dut.w_in, w)
                ctx.set(dut.en_in, en)
                for sig in (dut.valid_in, dut.first_in, dut.last_in):
                    ctx.set(sig, 1)
            await ctx.tick()
            if t >= lat - 1:
                got.append(ctx.get(dut.psum))

    _run(dut, bench)
    assert got[:len(cases)] == [a * w * en for a, w, en in cases]


def test_gate_unit_is_strict():
    cols = 6
    dut = GateUnit(cols=cols)
    rng = np.random.default_rng(1)
    cases = []
    for _ in range(40):
        thresh = rng.integers(-2**31, 2**31, cols)
        psum = thresh + rng.integers(-1, 2, cols)  # below, equal, above
        psum = np.clip(psum, -2**31, 2**31 - 1)
        valid = int(rng.integers(0, 1 << cols))
        cases.append((psum, thresh, valid))

    async def bench(ctx):
        for psum, thresh, valid in cases:
            for c in range(cols):
                ctx.set(dut.psum[c], int(psum[c]))
                ctx.set(dut.thresh[c], int(thresh[c]))
            ctx.set(dut.col_valid, valid)
            g = ctx.get(dut.gate)
            for c in range(cols):
                assert (g >> c) & 1 == int(psum[c] > thresh[c] and (valid >> c) & 1)

    _run(dut, bench, clock=False)


@pytest.mark.parametrize("stages", STAGES)
def test_postproc_matches_reference(stages):
    dut = _post(stages)
    rng = np.random.default_rng(2)
    n = 400
    # SPEC: acc (with bias and residual) fits int32; keep the vectors inside that contract
    acc = rng.integers(-2**30, 2**30, n)
    acc[:50] = rng.integers(-5000, 5000, 50)
    bias = rng.integers(-2**20, 2**20, n)
    res = rng.integers(-128, 128, n)
    res_mult = rng.integers(0, 2**31, n)
    res_shift = rng.integers(8, 63, n)
    mult = rng.integers(0, 2**31, n)
    mult[110:130] = rng.integers(-2**31, 0, 20)  # the split multiply's signed upper half
    shift = rng.integers(0, 63, n)
    shift[:100] = rng.integers(25, 45, 100)  # the interesting range: outputs near int8
    shift[100:110] = 0
    has_res = rng.integers(0, 2, n)
    # the ends of int32 for the sum, with the largest multipliers: every partial product's range
    edge = slice(130, 138)
    acc[edge] = [2**31 - 1, -2**31, 2**31 - 1, -2**31, 2**31 - 1, -2**31, 1, -1]
    bias[edge], has_res[edge] = 0, 0
    mult[edge] = [2**31 - 1] * 4 + [2**17 - 1, 2**17, 2**31 - 1, 2**31 - 1]
    shift[edge] = [62, 62, 31, 31, 0, 0, 0, 0]
    relu = rng.integers(0, 2, n)
    total = acc + bias + np.where(has_res == 1, rescale(res, res_mult, res_shift), 0)
    assert -2**31 <= total.min() and total.max() < 2**31
    ref = np.clip(rescale(total, mult, shift), np.where(relu == 1, 0, -128), 127)
    assert len(set(ref.tolist())) > 20  # the vectors exercise more than the clamp

    # a stored base sum (conditional phase) arrives beside acc on some values
    base = np.where(rng.integers(0, 2, n) == 1, rng.integers(-2**29, 2**29, n), 0)
    base[edge] = 0
    names = ("acc", "base", "bias", "residual", "has_res", "res_mult", "res_shift", "mult",
             "shift", "relu")
    vecs = dict(zip(names, (acc - base, base, bias, res, has_res, res_mult, res_shift, mult,
                            shift, relu)))

    async def bench(ctx):
        for i in range(n):  # one value at a time, parameters changing between values
            for name in names:
                ctx.set(getattr(dut, name), int(vecs[name][i]))
            await ctx.tick().repeat(dut.latency)
            assert ctx.get(dut.y) == ref[i], i

    _run(dut, bench)


@pytest.mark.parametrize("stages", STAGES)
def test_postproc_is_pipelined(stages):
    """One value per cycle with fixed parameters: y follows acc and residual ``latency``
    cycles later."""
    dut = _post(stages)
    rng = np.random.default_rng(3)
    n = 64
    acc = rng.integers(-2**20, 2**20, n)
    res = rng.integers(-128, 128, n)
    bias, res_mult, res_shift, mult, shift = -1234, 3 << 28, 30, 1 << 20, 34
    total = acc + bias + rescale(res, res_mult, res_shift)
    ref = np.clip(rescale(total, mult, shift), -128, 127)
    assert len(set(ref.tolist())) > 20

    async def bench(ctx):
        for name, v in (("bias", bias), ("res_mult", res_mult), ("res_shift", res_shift),
                        ("mult", mult), ("shift", shift), ("has_res", 1), ("relu", 0)):
            ctx.set(getattr(dut, name), v)
        got = []
        for i in range(n + dut.latency):
            if i < n:
                ctx.set(dut.acc, int(acc[i]))
                ctx.set(dut.residual, int(res[i]))
            if i >= dut.latency:
                got.append(ctx.get(dut.y))
            await ctx.tick()
        assert got == ref.tolist()

    _run(dut, bench)


@pytest.mark.parametrize("stages", STAGES)
def test_postproc_rounds_half_up(stages):
    """(v*M + 2^(s-1)) >> s: ties go towards +infinity, also for negative values."""
    dut = _post(stages)
    cases = [(-3, 1, 1), (-1, 1, 1), (1, 1, 1), (3, 1, 1), (-5, 1, 2), (5, 3, 1), (-7, 1, 3)]

    async def bench(ctx):
        ctx.set(dut.relu, 0)
        for v, m, s in cases:
            ctx.set(dut.acc, v)
            ctx.set(dut.mult, m)
            ctx.set(dut.shift, s)
            await ctx.tick().repeat(dut.latency)
            assert ctx.get(dut.y) == int(rescale(v, m, s)), (v, m, s)

    _run(dut, bench)


def test_postproc_clamp_edges():
    """The clamp's tests on the shifted value (before the rounding step) at and around each
    edge, with and without ReLU: mult 1, shift 1 makes the shifted value the sum itself."""
    dut = PostProc(mult_stages=1)
    edges = [252, 253, 254, 255, 256, 2**31 - 1, 1, 0, -1, -2, -3, -254, -255, -256, -257, -258,
             -259, -2**31, 510, 511, 512, -511, -512, -513]
    cases = [(v, relu) for v in edges for relu in (0, 1)]

    async def bench(ctx):
        ctx.set(dut.mult, 1)
        ctx.set(dut.shift, 1)
        for v, relu in cases:
            ctx.set(dut.acc, v)
            ctx.set(dut.relu, relu)
            await ctx.tick().repeat(dut.latency)
            want = int(np.clip(rescale(np.int64(v), 1, 1), 0 if relu else -128, 127))
            assert ctx.get(dut.y) == want, (v, relu)

    _run(dut, bench)


@pytest.mark.parametrize("bits", [80, 65, 20])
def test_window_shift_is_the_low_bits_of_the_shift(bits):
    """``window_shift``: the low 9 bits of ``v >> s`` and whether ``v >> s`` lies in
    [-512, 511], for every shift and values at and around each window edge (all-sign runs
    that end one bit inside or outside the window) and random ones."""
    m = Module()
    v = Signal(signed(bits))
    s = Signal(unsigned(6))
    win, fits = Signal(9), Signal()
    w_c, f_c = window_shift(v, s, 9)
    m.d.comb += [win.eq(w_c), fits.eq(f_c)]
    rng = np.random.default_rng(bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    values = [0, -1, lo, hi, 1, -2]
    for e in range(8, bits):  # runs of sign bits ending around position e
        values += [(1 << e) - 1, 1 << e, -(1 << e), -(1 << e) - 1, (1 << e) + 1, -(1 << e) + 1]
    values += [int.from_bytes(rng.bytes(11), "little", signed=True) >> (88 - bits)
               for _ in range(200)]
    values = [x for x in values if lo <= x <= hi]

    async def bench(ctx):
        for x in values:
            ctx.set(v, x)
            for sh in range(64):
                ctx.set(s, sh)
                want = x >> sh
                assert ctx.get(win) == want & 511, (x, sh)
                assert ctx.get(fits) == (-512 <= want <= 511), (x, sh)

    _run(m, bench, clock=False)


def test_post_latency():
    """The top level's cycle count (the cycle model's TAIL) and FIFO bound use these: the unit's
    own stages, plus the register in front of it from 4 columns on."""
    assert post_latency(2) == 6 and post_latency(3) == 9
    assert all(post_latency(cols) == 13 for cols in range(4, 33))
    for cols in range(2, 33):
        pp = PostProc(mult_stages=mult_stages(cols), res_stages=res_stages(cols))
        assert front_regs(cols) + pp.latency == post_latency(cols)
        assert pp.mult_read == param_read_last(cols)
        assert front_regs(cols) + param_read_last(cols) <= cols + 3


def _tile_switch_outputs(stages, switch_after):
    """Two tiles of values back to back: tile A's values at one per cycle, then tile B's
    parameters set ``switch_after`` cycles after A's last value went in, and B's values from
    then on. Returns (outputs, expected outputs)."""
    dut = _post(stages)
    rng = np.random.default_rng(11)
    n = 6
    names = ("bias", "res_mult", "res_shift", "mult", "shift", "has_res", "relu")
    pa = dict(bias=-1234, res_mult=3 << 28, res_shift=30, mult=1 << 20, shift=33, has_res=1,
              relu=0)
    pb = dict(bias=777, res_mult=-5 << 27, res_shift=29, mult=-(3 << 19), shift=31, has_res=0,
              relu=1)
    acc = rng.integers(-2**20, 2**20, (2, n))
    res = rng.integers(-128, 128, (2, n))

    def ref(k, p):
        total = acc[k] + p["bias"] + (rescale(res[k], p["res_mult"], p["res_shift"])
                                      if p["has_res"] else 0)
        return np.clip(rescale(total, p["mult"], p["shift"]), 0 if p["relu"] else -128, 127)

    expect = ref(0, pa).tolist() + ref(1, pb).tolist()
    # value i of the stream enters at cycle t_in[i]; its output is y at t_in[i] + latency
    t_in = list(range(n)) + [n - 1 + switch_after + i for i in range(n)]
    vals = {t: (int(acc[k, i]), int(res[k, i])) for k in range(2) for i, t in
            enumerate(t_in[k * n:(k + 1) * n])}
    got = {}

    async def bench(ctx):
        for name in names:
            ctx.set(getattr(dut, name), pa[name])
        for t in range(t_in[-1] + dut.latency + 1):
            if t == n - 1 + switch_after:
                for name in names:
                    ctx.set(getattr(dut, name), pb[name])
            if t in vals:
                ctx.set(dut.acc, vals[t][0])
                ctx.set(dut.residual, vals[t][1])
            if t - dut.latency in vals:
                got[t - dut.latency] = ctx.get(dut.y)
            await ctx.tick()

    _run(dut, bench)
    return [got[t] for t in t_in], expect


@pytest.mark.parametrize("stages", STAGES)
def test_postproc_parameters_may_change_under_the_pipeline(stages):
    """A tile's parameters may change ``mult_read`` (``param_read_last``) cycles after its last
    value went in, with that value still in flight (the top level's tile switch relies on it);
    one cycle earlier the last value of the old tile is computed with a new parameter."""
    got, expect = _tile_switch_outputs(stages, _post(stages).mult_read + 1)
    assert got == expect
    got, expect = _tile_switch_outputs(stages, _post(stages).mult_read)
    assert got != expect


@pytest.mark.parametrize("width,narrow", [(17, False), (12, False), (17, True)])
def test_serial_products_exact_and_bounded(width, narrow):
    """The descriptor's shift-and-add products: exact below ``2**width`` and saturated at
    ``2**width - 1`` above, for random and extreme operands (products just below, at and above
    the limit), an operand may be an earlier product, done within ``max_cycles``, and a
    ``start`` while busy restarts the sequence with the new operands. ``narrow``: two products
    have widths of their own (9 and ``width - 3`` bits), saturated at those."""
    from amaranth.hdl import Module

    from sluice.hw.products import SerialProducts

    bits = {"x": width, "y": width, "z": 9 if narrow else width,
            "w": width - 3 if narrow else width}
    spec = [("x", 16, 16), ("y", width, 16), ("z", 16, 7, bits["z"]), ("w", 16, 16, bits["w"])]
    prods = SerialProducts(spec, width=width)
    top = Module()
    top.submodules.p = prods
    top.d.comb += prods.y_a.eq(prods.x)  # y = x * y_b (x saturated)
    top_v = {name: (1 << b) - 1 for name, b in bits.items()}

    def expect(a, b, yb, za, zb, wa, wb):
        x = min(a * b, top_v["x"])
        return {"x": x, "y": min(x * yb, top_v["y"]), "z": min(za * zb, top_v["z"]),
                "w": min(wa * wb, top_v["w"])}

    rng = np.random.default_rng(5)
    cases = [(0, 0, 0, 0, 0, 0, 0), (65535, 65535, 65535, 65535, 127, 65535, 65535),
             (1, 1, 1, 1, 1, 1, 1), (7, 0, 3, 65535, 49, 0, 9)]
    cases += [tuple(int(v) for v in rng.integers(0, 1 << 16, 7) >> rng.integers(0, 16, 7))
              for _ in range(20)]
    # around the limit (16-bit operands): products of 2**width - 4, 2**width - 1 or 2**width
    # - 2 (exact), 2**width (the first saturated), a saturated product times 1 and times 0
    lim = 1 << width
    cases += [(lim // 4 - 1, 4, 1, lim // 64, 64, (lim - 1) // 3 * 3 // 3, 3),
              (lim // 4, 4, 1, lim // 64 - 1, 64, lim // 2 - 1, 2),
              (lim // 8, 8, 0, 1, 127, 65535, 65535),
              ((lim - 1) // 3, 3, 1, lim // 128, 127, (lim + 1) // 3, 3),
              (65535, 65535, 2, 0, 0, 1, 65535)]
    assert all(max(c) < 1 << 16 for c in cases)
    cases = [(a, b, yb, za, zb & 127, wa, wb) for a, b, yb, za, zb, wa, wb in cases]

    async def bench(ctx):
        def set_ops(a, b, yb, za, zb, wa, wb):
            for port, v in ((prods.x_a, a), (prods.x_b, b), (prods.y_b, yb), (prods.z_a, za),
                            (prods.z_b, zb), (prods.w_a, wa), (prods.w_b, wb)):
                ctx.set(port, v)

        for i, ops in enumerate(cases):
            if i % 5 == 4:  # restart mid-way with other operands: only the new ones count
                set_ops(*cases[i - 1])
                ctx.set(prods.start, 1)
                await ctx.tick()
                ctx.set(prods.start, 0)
                await ctx.tick().repeat(int(rng.integers(1, 30)))
            set_ops(*ops)
            ctx.set(prods.start, 1)
            await ctx.tick()
            ctx.set(prods.start, 0)
            n = 1
            while ctx.get(prods.busy):
                await ctx.tick()
                n += 1
            assert n <= prods.max_cycles + 1
            for name, v in expect(*ops).items():
                assert ctx.get(getattr(prods, name)) == v, (name, ops)

    _run(top, bench)


def test_register_file_reads_back_descriptor_counters_and_unmapped():
    """Every descriptor register reads back what was last written to it (from the read-back
    copy, ``desc_mem``), 0 before any write and after a reset, as its flip-flops (the ports the
    sequencer uses) hold it; counters and unmapped addresses read through the multiplexer; a
    read offered in the cycle a write is accepted waits for it and returns the new value."""
    from sluice.hw.params import COUNTERS, DESCRIPTOR, REG, HwParams, desc_ranges
    from sluice.hw.regs import RegisterFile
    from sluice.hw.simulate import axil_read, axil_write

    narrow = {name: bits for name, (bits, _) in desc_ranges(
        HwParams(rows=2, cols=2, act_depth=256, wgt_depth=64, pix_depth=32)).items()}
    assert {"KERNEL", "H_OUT", "C_IN"} <= set(narrow)
    dut = RegisterFile(ident=0x1234, field_bits=narrow)
    rst = Signal()
    sim = Simulator(ResetInserter(rst)(dut))
    sim.add_clock(1e-8)
    names = [name for name, _ in DESCRIPTOR]
    values = {name: (0x9E37 * (i + 1)) & 0xFFFF for i, name in enumerate(names)}
    got = {}

    async def bench(ctx):
        for i, (name, _) in enumerate(COUNTERS):
            ctx.set(getattr(dut, "cnt_" + name.lower()), 0x01020304 * (i + 1))
        got["before"] = [await axil_read(ctx, dut, REG[n].addr) for n in names]
        for name in names[::2]:  # every other register, the rest left at reset
            await axil_write(ctx, dut, REG[name].addr, values[name] | 0xABCD0000)
        got["half"] = [await axil_read(ctx, dut, REG[n].addr) for n in names]
        got["ports"] = [ctx.get(getattr(dut, n.lower())) for n in names]
        got["over"] = {n: ctx.get(getattr(dut, n.lower() + "_over")) for n in narrow}
        got["counters"] = [await axil_read(ctx, dut, REG[n].addr) for n, _ in COUNTERS]
        got["unmapped"] = [await axil_read(ctx, dut, a) for a in (0x11, 0x4C, 0xFC)]
        got["id"] = await axil_read(ctx, dut, REG["ID"].addr)
        # a read and a write offered together: the write goes first, the read sees it
        ctx.set(dut.axil_araddr, REG["C_OUT"].addr)
        ctx.set(dut.axil_arvalid, 1)
        ctx.set(dut.axil_rready, 1)
        await axil_write(ctx, dut, REG["C_OUT"].addr, 777)
        while not ctx.get(dut.axil_rvalid):
            await ctx.tick()
        got["raced"] = ctx.get(dut.axil_rdata)
        ctx.set(dut.axil_arvalid, 0)
        await ctx.tick()
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        got["reset"] = [await axil_read(ctx, dut, REG[n].addr) for n in names[:3]]

    sim.add_testbench(bench)
    sim.run()
    assert got["before"] == [0] * len(names)
    want = [values[n] if i % 2 == 0 else 0 for i, n in enumerate(names)]
    assert got["half"] == want
    # the ports hold what the sequencer uses: narrow fields their low bits and "larger"
    assert got["ports"] == [v & ((1 << narrow.get(n, 16)) - 1) for n, v in zip(names, want)]
    assert got["over"] == {n: int(v >> narrow[n] != 0) for n, v in zip(names, want)
                           if n in narrow}
    assert any(got["over"].values()) and not all(got["over"].values())
    assert got["counters"] == [0x01020304 * (i + 1) & 0xFFFFFFFF for i in range(len(COUNTERS))]
    assert got["unmapped"] == [0, 0, 0]
    assert got["id"] == 0x1234
    assert got["raced"] == 777
    assert got["reset"] == [0, 0, 0]  # (the copy keeps its words; the written bits do not)
