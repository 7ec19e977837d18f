"""Processing element and the output-stationary systolic array.

A row of the array is an output pixel, a column an output channel. Activations (with their
control: valid, first, last, and a per-column accumulate-enable vector) enter each row at column
0 and move one column right per cycle; weights enter each column at row 0 and move one row down
per cycle. The feeder skews row r by r cycles and column c by c cycles, so element (r, c) sees
step s of a pass at cycle s + r + c. With skip groups, activations enter each group at its first
column, and every group is skewed on its own (column c by c mod group): element (r, c) sees step
s at s + r + (c mod group). Every element keeps its own sum (``acc_bits`` wide: int32, or
as narrow as the instance's longest pass needs, ``HwParams.sum_bits``); on the ``last`` step
of a pass it copies the finished sum into ``psum`` (kept until the next pass finishes), so the
next pass can stream in while the result is drained.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sluice.hw.ecp5 import ecp5_registered_dsp, mult18x18d, platform_family
from sluice.hw.ice40 import mac16_8x8_pair
from sluice.hw.params import ACC_BITS, ACT_BITS, KEEP_ATTRS, WGT_BITS

# (the registers between the buffers' read data and the array edge, FEED_REGS, are an instance
# parameter: ``HwParams.feed_regs``, hw/params.py)
# Registers between an element's multiplier and its accumulator (the product and the step's
# control: valid, first, last, enable). Without one, the 8 x 8 multiply and the 32-bit
# accumulate share a cycle (the ECP5 critical path after FEED_REGS); with one, the route from
# the DSP block across the die to that register (placed by the accumulator) was the 4 x 4
# ULX3S critical path at 74 MHz. With two, ``dsp`` elements put one in front of the multiplier
# and one after it (registers on both sides of the DSP block), ``logic`` elements one after
# each half of the partial-product tree. With three, the product is registered twice. (At
# 8 x 8 on the ECP5 an element's DSP sat 73 columns from its registers; the third register
# alone did not help, placement kept it by the element too: the board builds use the DSP
# block's own registers, hw/ecp5.py.)
PE_STAGES = 3
# Registers between the issuer and the buffers' read addresses: a step's buffer addresses and
# its control (valid, enables, tap bounds check, first/last) are registered once before they
# address the block RAMs, so the issuer's state (step counters and offsets, the row set) can be
# placed by the issue/swap logic that loads it, not by the block RAMs across the die (at 8 x 8
# on the ECP5, issue/swap into those registers was the critical path, 12.9 ns).
ISSUE_REGS = 1
# (the cycles from a step's issue-side registers to the element's sum, beyond the skew, are
# ISSUE_REGS + feed_regs + PE_STAGES: ``HwParams.array_extra``)


def _tree(terms):
    """A balanced adder tree."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


class PE(wiring.Component):
    """One int8 x int8 -> int32 multiply-accumulate element.

    ``en`` is the per-element accumulate enable: base-set membership of the input channel for
    this column, and in the conditional phase the element's gate bit. A disabled element adds 0.
    ``mult``: the multiply as ``a * w`` (``"dsp"``) or as shifted partial products
    (``"logic"``), see ``HwParams.pe_mult``; the same integers and latency either way.
    """

    def __init__(self, *, cols=1, col=0, mult="dsp", ext_mult=False, acc_bits=ACC_BITS):
        self._cols, self._col, self._mult = cols, col, mult
        self._acc_bits = acc_bits
        # ext_mult (a "dsp" element): the multiply is outside, in a DSP block shared with
        # another element (``SystolicArray`` on iCE40, ``hw/ice40.py``): the element presents
        # its registered operands on ``mul_a``/``mul_b`` and takes their product, registered
        # once by the block, on ``mul_p`` a cycle later (its first product register)
        self._ext = ext_mult
        members = {
            "a_in": In(signed(ACT_BITS)), "valid_in": In(1), "first_in": In(1), "last_in": In(1),
            "en_in": In(cols), "w_in": In(signed(WGT_BITS)),
            "a_out": Out(signed(ACT_BITS)), "valid_out": Out(1), "first_out": Out(1),
            "last_out": Out(1), "en_out": Out(cols), "w_out": Out(signed(WGT_BITS)),
            "psum": Out(signed(acc_bits)),
        }
        if ext_mult:
            if mult != "dsp":
                raise ValueError("ext_mult needs mult='dsp'")
            members.update({"mul_a": Out(signed(ACT_BITS)), "mul_b": Out(signed(WGT_BITS)),
                            "mul_p": In(signed(ACT_BITS + WGT_BITS))})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        col = self._col
        # the data registers (operands, products, sums) have no reset: nothing reads them before
        # a pass's first step has written them (`first` loads the sum), and left out of the
        # reset they keep the accelerator's reset net to its control registers (at 8 x 8 on
        # ECP5 one reset net reached 20,000 flip-flops, half of them here)
        acc = Signal(signed(self._acc_bits), reset_less=True)
        a_out = Signal(signed(ACT_BITS), name="a_out_q", reset_less=True)
        w_out = Signal(signed(WGT_BITS), name="w_out_q", reset_less=True)
        psum = Signal(signed(self._acc_bits), name="psum_q", reset_less=True)
        m.d.sync += [
            a_out.eq(self.a_in), self.valid_out.eq(self.valid_in),
            self.first_out.eq(self.first_in), self.last_out.eq(self.last_in),
            self.en_out.eq(self.en_in), w_out.eq(self.w_in),
        ]
        m.d.comb += [self.a_out.eq(a_out), self.w_out.eq(w_out), self.psum.eq(psum)]
        # the product of a disabled element is 0; PE_STAGES register stages lie between the
        # element's inputs and its accumulate
        en = self.en_in[col]
        # the first register stage: the step's control, and the multiply's operands (dsp) or
        # its two half sums (logic)
        qv, qf, ql = Signal(name="valid_q0"), Signal(name="first_q0"), Signal(name="last_q0")
        m.d.sync += [qv.eq(self.valid_in), qf.eq(self.first_in), ql.eq(self.last_in)]
        add = Signal(signed(2 * ACT_BITS))
        dsp_regs = self._mult == "dsp" and ecp5_registered_dsp(platform)
        if dsp_regs:
            # the block's input registers are the first stage (a disabled element's activation
            # zeroed in front of them), its output register the second
            m.d.comb += add.eq(mult18x18d(m, Mux(en, self.a_in, 0), self.w_in, "mult",
                                          width=len(add), in_regs=True))
        elif self._mult == "dsp":
            # the register in front of the multiplier, the others after it, so the placer can
            # put registers on both sides of the DSP block (with both after it, the
            # activation's route to a DSP across the die and the DSP's own delay shared a
            # cycle: the 4 x 4 ULX3S critical path at 79-80 MHz)
            # A disabled element's operands are zeroed as they are registered (a synchronous
            # reset of these registers, no LUT), not its product: the product goes straight
            # from the DSP block to the next register, and these registers differ from the
            # pass-through ones (a_out, w_out), so synthesis cannot merge the two and the
            # placer can put each operand register next to its own DSP block (merged, the
            # weight register fed both this DSP and the next row's element: the 4 x 8 ECP5
            # critical path, 3.7 ns of routing into the multiplier and 3.6 ns out of it)
            a_q = Signal(signed(ACT_BITS), name="a_q", reset_less=True)
            w_q = Signal(signed(WGT_BITS), name="w_q", reset_less=True)
            m.d.sync += [a_q.eq(Mux(en, self.a_in, 0)), w_q.eq(Mux(en, self.w_in, 0))]
            if self._ext:
                m.d.comb += [self.mul_a.eq(a_q), self.mul_b.eq(w_q)]
            else:
                m.d.comb += add.eq(a_q * w_q)
        else:
            # a * w = sum_i w[i] * (a << i), the sign bit's term subtracted (two's complement),
            # in two halves registered by the first stage, added after it
            a, w = self.a_in, self.w_in
            terms = [Mux(w[i], a << i, 0) for i in range(WGT_BITS - 1)]
            terms.append(-Mux(w[WGT_BITS - 1], a << (WGT_BITS - 1), 0))
            half = len(terms) // 2
            lo, hi = (Signal(signed(2 * ACT_BITS), name=f"pp_{n}", reset_less=True)
                      for n in ("lo", "hi"))
            m.d.sync += [lo.eq(Mux(en, _tree(terms[:half]), 0)),
                         hi.eq(Mux(en, _tree(terms[half:]), 0))]
            m.d.comb += add.eq(lo + hi)
        valid, first, last = qv, qf, ql
        for i in range(1, PE_STAGES):
            stage = (Signal(name=f"valid_q{i}"), Signal(name=f"first_q{i}"),
                     Signal(name=f"last_q{i}"))
            m.d.sync += [n.eq(x) for n, x in zip(stage, (valid, first, last))]
            valid, first, last = stage
            if i == 1 and self._ext:  # the shared block's product register is stage 1
                add = self.mul_p
            elif not (dsp_regs and i == 1):  # (the block's output register is stage 1)
                # (iCE40: the product's first register stays a fabric register, `keep`:
                # yosys 0.70's SB_MAC16 packing of it and the next one left the product's net
                # driven by the block and by a constant, resolved to the constant, and the
                # post-synthesis element summed zeros; tests/boards/test_ice40_dsp.py)
                keep = i == 1 and self._mult == "dsp" and platform_family(platform) == "ice40"
                add_q = Signal.like(add, name=f"add_q{i}", reset_less=True,
                                    attrs=KEEP_ATTRS if keep else {})
                m.d.sync += add_q.eq(add)
                add = add_q
        total = Signal(signed(self._acc_bits))
        with m.If(first):
            m.d.comb += total.eq(add)
        with m.Else():
            m.d.comb += total.eq(acc + add)
        with m.If(valid):
            m.d.sync += acc.eq(total)
            with m.If(last):
                m.d.sync += psum.eq(total)
        return m


class SystolicArray(wiring.Component):
    """``rows x cols`` PEs in skip groups of ``group`` columns.

    Each row of each skip group has its own activation feed (``a[r][j]`` with ``valid``,
    ``first``, ``last`` and a ``group``-bit ``en``), injected at column ``j * group`` and moving
    right inside the group, so the groups of one row can work on different pixels (the
    conditional phase packs each group's own pixel list). Inputs are already skewed, each
    group on its own: feed ``(r, j)`` is delayed ``r`` cycles, weight column ``c`` by
    ``c % group`` cycles.
    ``psum[r][c]`` holds the finished sums of the last pass.
    ``split_row`` (0: none): a second weight input per column, ``w2[c]``, enters row
    ``split_row`` instead of the weight coming down from the row above whenever ``w2_sel[c]``
    is set (a sliced pass's lower rows, ``HwParams.row_slices``; skewed like ``w`` and
    ``split_row`` cycles more, with its select). ``mid_row`` (0: none, else below
    ``split_row``): a third, ``w3[c]``/``w3_sel[c]``, entering row ``mid_row`` the same way
    (a three-slice pass's middle rows).
    """

    def __init__(self, *, rows, cols, group=None, mult="dsp", acc_bits=ACC_BITS, split_row=0,
                 mid_row=0):
        group = group or cols
        self._rows, self._cols, self._group, self._mult = rows, cols, group, mult
        self._acc_bits = acc_bits
        self._split = split_row
        self._mid = mid_row
        assert 0 <= split_row < rows
        assert mid_row == 0 or 0 < mid_row < split_row
        ng = cols // group
        ports = {
            "a": In(signed(ACT_BITS)).array(rows, ng), "valid": In(1).array(rows, ng),
            "first": In(1).array(rows, ng), "last": In(1).array(rows, ng),
            "en": In(group).array(rows, ng),
            "w": In(signed(WGT_BITS)).array(cols),
            "psum": Out(signed(acc_bits)).array(rows, cols),
        }
        if split_row:
            ports.update({"w2": In(signed(WGT_BITS)).array(cols), "w2_sel": In(1).array(cols)})
        if mid_row:
            ports.update({"w3": In(signed(WGT_BITS)).array(cols), "w3_sel": In(1).array(cols)})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        R, C, G = self._rows, self._cols, self._group
        pes = [[None] * C for _ in range(R)]
        # iCE40: two elements per SB_MAC16 (its 8 x 8 mode), in row-major order; an odd one
        # out keeps a block of its own (``hw/ice40.py``)
        paired = (self._mult == "dsp" and platform_family(platform) == "ice40")
        order = [(r, c) for r in range(R) for c in range(C)]
        pairs = list(zip(order[0::2], order[1::2])) if paired else []
        in_pair = {rc for pair in pairs for rc in pair}
        for r in range(R):
            for c in range(C):
                pe = PE(cols=G, col=c % G, mult=self._mult, ext_mult=(r, c) in in_pair,
                        acc_bits=self._acc_bits)
                m.submodules[f"pe_{r}_{c}"] = pe
                pes[r][c] = pe
                m.d.comb += self.psum[r][c].eq(pe.psum)
                if c % G == 0:
                    j = c // G
                    m.d.comb += [pe.a_in.eq(self.a[r][j]), pe.valid_in.eq(self.valid[r][j]),
                                 pe.first_in.eq(self.first[r][j]),
                                 pe.last_in.eq(self.last[r][j]), pe.en_in.eq(self.en[r][j])]
                else:
                    left = pes[r][c - 1]
                    m.d.comb += [pe.a_in.eq(left.a_out), pe.valid_in.eq(left.valid_out),
                                 pe.first_in.eq(left.first_out), pe.last_in.eq(left.last_out),
                                 pe.en_in.eq(left.en_out)]
                if r == 0:
                    m.d.comb += pe.w_in.eq(self.w[c])
                elif r == self._split:
                    m.d.comb += pe.w_in.eq(Mux(self.w2_sel[c], self.w2[c],
                                               pes[r - 1][c].w_out))
                elif r == self._mid:
                    m.d.comb += pe.w_in.eq(Mux(self.w3_sel[c], self.w3[c],
                                               pes[r - 1][c].w_out))
                else:
                    m.d.comb += pe.w_in.eq(pes[r - 1][c].w_out)
        for (rt, ct), (rb, cb) in pairs:
            top, bot = pes[rt][ct], pes[rb][cb]
            p_top, p_bot = mac16_8x8_pair(m, top.mul_a, top.mul_b, bot.mul_a, bot.mul_b,
                                          f"mac_{rt}_{ct}_{rb}_{cb}")
            m.d.comb += [top.mul_p.eq(p_top), bot.mul_p.eq(p_bot)]
        return m
