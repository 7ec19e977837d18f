"""Products of descriptor fields by one shift-and-add multiplier, after every descriptor write.

The sequencer and the error checks need a dozen products of descriptor fields (``H_IN *
W_IN``, ``C_IN * H_IN * W_IN``, ``C_IN * K * K``, the partition totals, ...). As parallel
multipliers they took 15 of the iCE40 UP5K's 8 DSPs, 9-17 of an ECP5's, and were critical paths
of the ECP5 builds again and again. They change only when the host writes the descriptor, so
one adder computes them in turn: after a descriptor write (``start``), each product is
``sum(a << i for the set bits i of b)``, one bit of ``b`` per cycle, ``b``'s leading zeros
skipped, the result registered. A product may use an earlier one as an operand (the list's
order). ``busy`` is high from ``start`` until every product is registered: at most
``max_cycles`` cycles; the register file holds CTRL.START back until then.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class SerialProducts(wiring.Component):
    """``products``: ``(name, a_bits, b_bits, p_bits)`` in the order they are computed. Ports
    per product: inputs ``<name>_a``, ``<name>_b``, output ``<name>`` (registered, the product
    modulo ``2**p_bits``); ``start`` (restarts the sequence, also while busy) and ``busy``."""

    def __init__(self, products):
        self.products = tuple(products)
        members = {"start": In(1), "busy": Out(1)}
        for name, a_bits, b_bits, p_bits in self.products:
            members[f"{name}_a"] = In(a_bits)
            members[f"{name}_b"] = In(b_bits)
            members[name] = Out(p_bits)
        super().__init__(members)

    @property
    def max_cycles(self) -> int:
        """Cycles from ``start`` to the last product registered, at most: a load cycle and one
        cycle per bit of ``b`` plus the write, per product."""
        return sum(b_bits + 2 for _, _, b_bits, _ in self.products)

    def elaborate(self, platform):
        m = Module()
        n = len(self.products)
        width = max(p_bits for *_, p_bits in self.products)
        b_width = max(b_bits for _, _, b_bits, _ in self.products)
        idx = Signal(range(n))
        a_sh = Signal(width)
        b_sh = Signal(b_width)
        acc = Signal(width)
        a_in = Array(getattr(self, f"{name}_a") for name, *_ in self.products)
        b_in = Array(getattr(self, f"{name}_b") for name, *_ in self.products)
        # load: the next product's operands into the shift registers; run: one bit of b per
        # cycle, the product registered when b has no set bits left
        load = Signal()
        run = Signal()
        m.d.comb += self.busy.eq(self.start | load | run)
        with m.If(self.start):
            m.d.sync += [idx.eq(0), load.eq(1), run.eq(0)]
        with m.Elif(load):
            m.d.sync += [a_sh.eq(a_in[idx]), b_sh.eq(b_in[idx]), acc.eq(0), load.eq(0),
                         run.eq(1)]
        with m.Elif(run):
            with m.If(b_sh == 0):
                with m.Switch(idx):
                    for i, (name, *_) in enumerate(self.products):
                        with m.Case(i):
                            m.d.sync += getattr(self, name).eq(acc)
                m.d.sync += [idx.eq(idx + 1), run.eq(0), load.eq(idx != n - 1)]
            with m.Else():
                with m.If(b_sh[0]):
                    m.d.sync += acc.eq(acc + a_sh)
                m.d.sync += [a_sh.eq(a_sh << 1), b_sh.eq(b_sh >> 1)]
        return m
