"""Post-processing (SPEC section 2) and the gate unit, one lane per array column.

``PostProc`` turns a column's finished sum into the int8 output:
``clamp(rescale(acc + bias + [rescale(res, res_mult, res_shift)], mult, shift), lo, 127)``
with ``rescale(v, M, s) = (v*M + 2^(s-1)) >> s`` (s > 0), ``v*M`` (s = 0), computed for every s
as ``((v*M << 1) + (1 << s)) >> (s + 1)``, which is the same integer.

``GateUnit`` compares a row of base partial sums with the columns' thresholds, strictly.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sluice.hw.params import ACC_BITS, ACT_BITS, PARAM_BITS


def rescale_expr(m, v, mult, shift, width):
    """Amaranth expression for SPEC ``rescale``; ``width`` bits of signed result (no overflow)."""
    wide = max(width, 64) + 2  # room for 2*v*M and the rounding term 2^s (s <= 62)
    prod = Signal(signed(wide))
    m.d.comb += prod.eq((v * mult) << 1)
    rnd = Signal(unsigned(64))
    m.d.comb += rnd.eq(Const(1, 64) << shift[:6])
    total = Signal(signed(wide))
    m.d.comb += total.eq(prod + rnd)
    out = Signal(signed(wide))
    m.d.comb += out.eq(total >> (shift[:6] + 1))
    return out


class PostProc(wiring.Component):
    """One output lane: bias, optional residual, requantise (round half up), ReLU, clamp."""

    def __init__(self):
        super().__init__({
            "acc": In(signed(ACC_BITS + 1)),
            "bias": In(signed(PARAM_BITS)),
            "residual": In(signed(ACT_BITS)), "has_res": In(1),
            "res_mult": In(signed(PARAM_BITS)), "res_shift": In(unsigned(6)),
            "mult": In(signed(PARAM_BITS)), "shift": In(unsigned(6)),
            "relu": In(1),
            "y": Out(signed(ACT_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        res = rescale_expr(m, self.residual, self.res_mult, self.res_shift, 40)
        total = Signal(signed(42))
        m.d.comb += total.eq(self.acc + self.bias + Mux(self.has_res, res, 0))
        scaled = rescale_expr(m, total, self.mult, self.shift, 74)
        lo = Mux(self.relu, 0, -128)
        with m.If(scaled > 127):
            m.d.comb += self.y.eq(127)
        with m.Elif(scaled < lo):
            m.d.comb += self.y.eq(lo)
        with m.Else():
            m.d.comb += self.y.eq(scaled[:ACT_BITS])
        return m


class GateUnit(wiring.Component):
    """``gate[c] = psum[c] > thresh[c]`` (strict) for valid columns, else 0."""

    def __init__(self, *, cols):
        self._cols = cols
        super().__init__({
            "psum": In(signed(ACC_BITS)).array(cols),
            "thresh": In(signed(PARAM_BITS)).array(cols),
            "col_valid": In(cols),
            "gate": Out(cols),
        })

    def elaborate(self, platform):
        m = Module()
        bits = [(self.psum[c] > self.thresh[c]) & self.col_valid[c] for c in range(self._cols)]
        m.d.comb += self.gate.eq(Cat(*bits))
        return m
