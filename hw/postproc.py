"""Post-processing (SPEC section 2) and the gate unit, one lane per array column.

``PostProc`` turns a column's finished sum into the int8 output:
``clamp(rescale(acc + base + bias + [rescale(res, res_mult, res_shift)], mult, shift), lo, 127)``
(``base``: the stored base partial sum in the conditional phase, else 0)
with ``rescale(v, M, s) = (v*M + 2^(s-1)) >> s`` (s > 0), ``v*M`` (s = 0), computed for every s
as ``(((v*M << 1) >> s) + 1) >> 1``, which is the same integer.

``GateUnit`` compares a row of base partial sums with the columns' thresholds, strictly.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sluice.hw.ecp5 import ecp5_registered_dsp, mult18x18d
from sluice.hw.params import ACC_BITS, ACT_BITS, KEEP_ATTRS, PARAM_BITS


# PostProc stages besides the requantisation multiply and the residual's: input registers,
# bias and the residual's partial products, output shift, output rounding and clamp
FIXED_STAGES = 4
#: the residual's stages after its partial products: 3 (their sum; the shift by res_shift; its
#: rounding step and the sum with acc + bias) or 1 (all three in one cycle)
RES_STAGES = (1, 3)


def res_stages(cols: int) -> int:
    """The residual's stages in the ``PostProc`` of a ``cols``-column array: 1 up to 2 columns
    (the iCEBreaker's 12 MHz build: about 80 pipeline flip-flops fewer, each a logic cell of its
    own on the iCE40), else 3."""
    return 1 if cols <= 2 else 3


def param_read_last(cols: int) -> int:
    """The last cycle (after a value enters) at which the ``PostProc`` of a ``cols``-column
    array reads a tile parameter directly: ``mult``, by the multiply's first stage (5, or 3
    with one residual stage); ``shift`` and ``relu`` are read with ``bias`` and travel with the
    value. A tile's parameters may change that many cycles after its last value."""
    return 2 + res_stages(cols)


def _data(*args, **kwargs):
    """A data register: no reset. Nothing reads one before the unit's pipeline has written it,
    and out of the reset net it leaves that net to the control registers (at 8 x 8 on ECP5 one
    reset net reached 20,000 flip-flops)."""
    return Signal(*args, reset_less=True, **kwargs)


def _data_like(other, **kwargs):
    return Signal.like(other, reset_less=True, **kwargs)


def _dsp_chunks(v):
    """A signed value as the two operands an 18 x 18 DSP multiply takes: its unsigned low 17
    bits and its signed top bits (``v = hi * 2^17 + lo``)."""
    return [v[0:17], v[17:].as_signed()]


MULT_STAGES = (1, 2, 5)


def mult_stages(cols: int) -> int:
    """Pipeline stages of the requantisation multiply in the ``PostProc`` of a ``cols``-column
    array: 1 (one product), 2 (two half products, then their sum) or 5 (four DSP-sized partial
    products with a register on each side of every DSP, two sums, the final sum). Narrow
    arrays get fewer (their tile switch once bounded the latency to ``cols + 3``;
    ``param_read_last`` lifted that, and the small arrays the tests run keep their short
    pipeline)."""
    return 1 if cols <= 2 else 2 if cols == 3 else 5


def front_regs(cols: int) -> int:
    """Registers in front of ``PostProc`` (in the caller, ``hw/top.py``) in an array of ``cols``
    columns: 1 from 4 columns on, where the stored base sum and the residual leave their block
    RAMs into a register as read and are selected after it (block-RAM output -> select ->
    PostProc's input register was the 8 x 8 ECP5 critical path, 12.2 ns), else 0."""
    return 1 if cols >= 4 else 0


def post_latency(cols: int) -> int:
    """Cycles from a value entering post-processing to its result ``y`` (one result per cycle)
    in an array of ``cols`` columns: ``front_regs(cols) + FIXED_STAGES + res_stages(cols) +
    mult_stages(cols)`` (6 up to 2 columns, 9 at 3, then 13 from 4 columns on)."""
    return front_regs(cols) + FIXED_STAGES + res_stages(cols) + mult_stages(cols)


class PostProc(wiring.Component):
    """One output lane: bias, optional residual, requantise (round half up), ReLU, clamp.

    Pipelined for timing, one value per cycle: ``y`` is the result for the ``acc`` and
    ``residual`` presented ``latency`` cycles earlier (``post_latency``). ``bias``, ``res_mult``,
    ``shift`` and ``relu`` are read at stage 1, ``res_shift`` and ``has_res`` at stage 3 (2 with
    one residual stage: ``res_shift_read``), ``mult`` at stage 5 (3: ``mult_read``,
    ``param_read_last``); ``shift`` and ``relu`` travel down the pipeline with the value, so the
    top level may change a tile's parameters ``mult_read`` cycles after the tile's last value
    entered, while that value is still in flight.

    Stages: (0) ``acc``, ``base`` and ``residual`` registered (``base`` and the residual come
    straight from block RAM outputs); (1) ``acc + base + bias`` and the residual's two partial
    products with ``res_mult``'s unsigned low 17 and signed top 15 bits (one 18 x 18 DSP each,
    output registered); (2) their sum, ``2 * residual * res_mult``; (3) the residual's barrel
    shift by ``res_shift`` (0 without a residual); (4) its rounding step and the sum (with
    ``res_stages`` 1, stages 2 to 4 are one); (5, or 3) the
    product with ``mult``, in ``mult_stages`` stages: one
    product; or the products with the signed upper and unsigned lower 16 bits of ``mult``, then
    their sum; or the four partial products of the int32 sum's two 17-bit chunks (the low one
    unsigned, the signed top 15 bits) with ``mult``'s (unsigned low 17 bits, signed top 15),
    each one 18 x 18 DSP multiply: its operands registered (a copy per DSP, which placement
    puts beside the DSP however far the free DSP site is), the product registered and
    registered again (the route away from the DSP gets a cycle of its own), then the two
    chunks' sums, then the total (at 8 x 8 on the ECP5 the route into a far DSP and back was the
    critical path, 4.2 + 3.9 + 4.8 ns); (``mult_read + mult_stages``) that product shifted
    right by ``shift``, of which only the 9 bits and the range the clamp reads are formed
    (``window_shift``); (the next) the rounding step (``(v + 1) >> 1``), ReLU and clamp,
    registered: the saturation tests are compares of the shifted value with constants (no wide
    adder in front of them) and the in-range result needs only its low 9 bits.

    ``acc_bits``: the width of ``base`` (``acc``: one more), the array's sums
    (``HwParams.sum_bits``); ``acc + base + bias`` and everything after it are int32 (the bias
    is) with the bits SPEC's int32 range needs.
    """

    def __init__(self, *, mult_stages: int = MULT_STAGES[-1], res_stages: int = RES_STAGES[-1],
                 acc_bits: int = ACC_BITS):
        if mult_stages not in MULT_STAGES:
            raise ValueError(f"mult_stages: {mult_stages} is not 1, 2 or 5")
        if res_stages not in RES_STAGES:
            raise ValueError(f"res_stages: {res_stages} is not 1 or 3")
        self.mult_stages, self.res_stages = mult_stages, res_stages
        self.latency = FIXED_STAGES + res_stages + mult_stages
        #: the cycles after a value entered at which ``res_shift`` and ``has_res``, and ``mult``,
        #: are read (``param_read_last`` is the latter)
        self.res_shift_read = 1 + (res_stages + 1) // 2
        self.mult_read = 2 + res_stages
        super().__init__({
            "acc": In(signed(acc_bits + 1)),
            "base": In(signed(acc_bits)),  # a stored base partial sum to add (0: none)
            "bias": In(signed(PARAM_BITS)),
            "residual": In(signed(ACT_BITS)), "has_res": In(1),
            "res_mult": In(signed(PARAM_BITS)), "res_shift": In(unsigned(6)),
            "mult": In(signed(PARAM_BITS)), "shift": In(unsigned(6)),
            "relu": In(1),
            "y": Out(signed(ACT_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        # every register here is data (a unit's valid bits travel beside it, in the caller):
        # none has a reset (see ``_data``)
        # stage 0
        acc = _data_like(self.acc)
        base = _data_like(self.base)
        # the residual registered once per DSP block it feeds (KEEP_ATTRS: equal copies)
        residual = [_data_like(self.residual, name=f"residual_{k}", attrs=KEEP_ATTRS)
                    for k in range(2)]
        m.d.sync += [acc.eq(self.acc), base.eq(self.base)]
        m.d.sync += [r.eq(self.residual) for r in residual]
        # stage 1: ``acc + base + bias``; the residual's partial products (res_mult = r1*2^17 + r0)
        acc_b = _data(signed(ACC_BITS + 2))
        rm = _dsp_chunks(self.res_mult)
        rp = [_data(signed(ACT_BITS + len(rm[k]) + 1), name=f"rp_{k}") for k in range(2)]
        m.d.sync += [acc_b.eq(acc + base + self.bias)]
        dsp_regs = ecp5_registered_dsp(platform)
        for k in range(2):
            if dsp_regs:  # the product register inside the DSP block (hw/ecp5.py)
                m.d.comb += rp[k].eq(mult18x18d(m, residual[k], rm[k], f"res_mult_{k}",
                                                width=len(rp[k]), in_regs=False))
            else:
                m.d.sync += rp[k].eq(residual[k] * rm[k])
        res_bits = signed(ACT_BITS + PARAM_BITS + 1)

        def res_stage(v, shape, name):
            """``v`` registered as a stage of its own (three residual stages), or a wire (one:
            the sum, shift and rounding of stages 2 to 4 share stage 2)."""
            if self.res_stages == 1:
                q = Signal(shape, name=name)
                m.d.comb += q.eq(v)
            else:
                q = _data(shape, name=name)
                m.d.sync += q.eq(v)
            return q

        # stage 2: their sum, ``2 * residual * res_mult``; ``acc + bias`` waits
        res_prod = res_stage((rp[0] + (rp[1] << 17)) << 1, res_bits, "res_prod")
        acc_b1 = res_stage(acc_b, acc_b.shape(), "acc_b1")
        # stage 3: the residual's barrel shift (0 without a residual)
        res_sh = res_stage(Mux(self.has_res, res_prod >> self.res_shift, 0), res_bits, "res_sh")
        acc_b2 = res_stage(acc_b1, acc_b.shape(), "acc_b2")
        # stage 4: the residual's rounding step (``(res_sh + 1) >> 1``, 0 from 0) and the sum,
        # an int32 (SPEC: ``acc`` fits int32; every layer file's worst case is checked)
        total = _data(signed(ACC_BITS))
        m.d.sync += total.eq(acc_b2 + ((res_sh + 1) >> 1))
        # the parameters read after stage 1 travel with the value, so a tile's parameters may
        # change once its last value has passed stage 1 (the multiply reads ``mult`` later still,
        # at ``mult_read``: ``param_read_last``)
        shift, relu = self.shift, self.relu
        for i in range(1, self.mult_read + self.mult_stages):
            shift_d, relu_d = _data_like(shift, name=f"shift_{i}"), _data(name=f"relu_{i}")
            m.d.sync += [shift_d.eq(shift), relu_d.eq(relu)]
            shift, relu = shift_d, relu_d
        # stage mult_read (5, or 3 with one residual stage)
        prod = _data(signed(2 * PARAM_BITS + 1))  # 2 * total * mult
        if self.mult_stages == 5:  # total = t1*2^17 + t0, mult = m1*2^17 + m0
            t, mm = _dsp_chunks(total), _dsp_chunks(self.mult)
            kn = [(k, n) for k in range(2) for n in range(2)]
            # the operands of product (k, n), registered beside its DSP
            pp = [[_data(signed(len(t[k]) + len(mm[n]) + 1), name=f"pp_{k}_{n}")
                   for n in range(2)] for k in range(2)]
            ppq = [[_data_like(pp[k][n], name=f"ppq_{k}_{n}") for n in range(2)]
                   for k in range(2)]
            if dsp_regs:  # operand and product registers inside the DSP block (hw/ecp5.py)
                for k, n in kn:
                    m.d.comb += pp[k][n].eq(mult18x18d(m, t[k], mm[n], f"mult_{k}_{n}",
                                                       width=len(pp[k][n]), in_regs=True))
            else:
                # (KEEP_ATTRS: equal copies, which synthesis would otherwise merge into one
                # register feeding two DSPs; the 8 x 8 netlist had them merged)
                ta = {(k, n): _data_like(t[k], name=f"pa_{k}_{n}", attrs=KEEP_ATTRS)
                      for k, n in kn}
                mb = {(k, n): _data_like(mm[n], name=f"pb_{k}_{n}", attrs=KEEP_ATTRS)
                      for k, n in kn}
                m.d.sync += [x.eq(t[k]) for (k, n), x in ta.items()]
                m.d.sync += [x.eq(mm[n]) for (k, n), x in mb.items()]
                m.d.sync += [pp[k][n].eq(ta[k, n] * mb[k, n]) for k, n in kn]
            m.d.sync += [ppq[k][n].eq(pp[k][n]) for k, n in kn]
            sk = [_data(signed(len(t[k]) + 33), name=f"pps_{k}") for k in range(2)]
            m.d.sync += [sk[k].eq(ppq[k][0] + (ppq[k][1] << 17)) for k in range(2)]
            m.d.sync += prod.eq((sk[0] + (sk[1] << 17)) << 1)
        elif self.mult_stages == 2:  # mult = hi * 2^16 + lo, hi signed, lo unsigned
            p_hi = _data(signed(ACC_BITS + 16))
            p_lo = _data(signed(ACC_BITS + 17))
            m.d.sync += [p_hi.eq(total * self.mult[16:].as_signed()),
                         p_lo.eq(total * self.mult[:16])]
            m.d.sync += prod.eq(((p_hi << 16) + p_lo) << 1)
        else:
            m.d.sync += prod.eq((total * self.mult) << 1)
        # stage mult_read + mult_stages: the right shift (rescale rounds as ``((prod >> s) + 1)
        # >> 1``), of which the clamp needs only ``shifted``'s low 9 bits (``win``), its sign and
        # whether every bit above those equals the sign (``fits``: ``shifted`` in [-512, 511]);
        # see ``window_shift``
        win = _data(unsigned(ACT_BITS + 1), name="win")
        fits = _data(name="fits")
        neg = _data(name="neg")
        w_comb, f_comb = window_shift(prod, shift, len(win))
        m.d.sync += [win.eq(w_comb), fits.eq(f_comb), neg.eq(prod[-1])]
        # the last stage: rounding step, ReLU, clamp, on ``scaled = (shifted + 1) >> 1``:
        # scaled > 127 <=> shifted >= 255; scaled < 0 <=> shifted < -1; scaled < -128 <=>
        # shifted < -257; in range, scaled's 8 bits come from shifted's low 9 alone. With
        # ``shifted = H * 512 + win`` (H = shifted >> 9): shifted >= 255 <=> H > 0, or H == 0
        # and win >= 255; shifted < -1 <=> H < -1, or H == -1 and win < 511; shifted < -257
        # <=> H < -1, or H == -1 and win < 255 (``fits``: H is 0 or -1, the sign's)
        relu_o = _data()
        m.d.sync += relu_o.eq(relu)
        low = Signal(ACT_BITS + 1)
        m.d.comb += low.eq(win + 1)
        y = _data(signed(ACT_BITS), name="y_q")
        m.d.comb += self.y.eq(y)
        with m.If(~neg & (~fits | (win >= 255))):
            m.d.sync += y.eq(127)
        with m.Elif(neg & (~fits | (win < Mux(relu_o, 511, 255)))):
            m.d.sync += y.eq(Mux(relu_o, 0, -128))
        with m.Else():
            m.d.sync += y.eq(low[1:])
        return m


def window_shift(v, shift, width):
    """The low ``width`` bits of ``v >> shift`` (arithmetic) and whether all of its bits above
    them equal its sign, without the full-width barrel shift: a logarithmic shifter, largest
    step first, that keeps after each step only the bits the remaining steps can still bring
    into the window (``width + 2^k - 1`` after the step by ``2^k``; 111 two-input multiplexers
    instead of 390 for a 65-bit value, ``width`` 9 and a 6-bit ``shift``), checking the bits a
    step leaves behind above them against the sign as it goes. Returns (window, fits), both
    combinational."""
    sign = v[-1]

    def all_sign(bits):
        return bits == Mux(sign, (1 << len(bits)) - 1, 0)

    k_top = len(shift) - 1
    keep = width + (1 << (k_top + 1)) - 1  # the bits any shift can bring into the window
    if len(v) > keep:  # the others must be sign bits whatever the shift
        cur, fits = v[:keep], all_sign(v[keep:])
    else:  # (sign-extended to ``keep`` bits)
        cur, fits = Cat(v, *([sign] * (keep - len(v)))), Const(1)
    for k in range(k_top, -1, -1):
        step = 1 << k
        keep_k = width + step - 1
        # shifted by 2^k: bits [step, step + keep_k) of cur, the sign above cur's top;
        # not shifted: bits [0, keep_k), and bits [keep_k, keep_k + step) are left above the
        # window's reach, so they must equal the sign
        hi = Cat(cur, *([sign] * step))
        shifted = hi[step:step + keep_k]
        fits = fits & (shift[k] | all_sign(cur[keep_k:keep_k + step]))
        cur = Mux(shift[k], shifted, cur[:keep_k])
    return cur[:width], fits


class GateUnit(wiring.Component):
    """``gate[c] = psum[c] > thresh[c]`` (strict) for valid columns, else 0."""

    def __init__(self, *, cols, psum_bits=ACC_BITS):
        self._cols = cols
        super().__init__({
            "psum": In(signed(psum_bits)).array(cols),
            "thresh": In(signed(PARAM_BITS)).array(cols),
            "col_valid": In(cols),
            "gate": Out(cols),
        })

    def elaborate(self, platform):
        m = Module()
        bits = [(self.psum[c] > self.thresh[c]) & self.col_valid[c] for c in range(self._cols)]
        m.d.comb += self.gate.eq(Cat(*bits))
        return m
