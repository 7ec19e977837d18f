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

Every product is ``width`` bits (or its own width, a fourth element of its entry, at most
``width``) and saturates: a product of ``2**width`` or more reads as ``2**width - 1``. The
sequencer's products are bounded by the buffer depths in any job it accepts, and the error
checks compare them with those depths (or with a descriptor field), so a width one bit above
the largest bound keeps every check exact while the products and everything computed from them
are sized from the buffers rather than from the descriptor's 16-bit fields (``hw/top.py``:
``prod_bits``; the partition totals, compared with C_IN and C_OUT, one bit above those).
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class SerialProducts(wiring.Component):
    """``products``: ``(name, a_bits, b_bits[, bits])`` in the order they are computed. Ports
    per product: inputs ``<name>_a``, ``<name>_b``, output ``<name>`` (registered, ``bits``
    (default ``width``) bits, the product saturated at ``2**bits - 1``); ``start`` (restarts
    the sequence, also while busy) and ``busy``."""

    def __init__(self, products, width):
        self.products = tuple((name, a_bits, b_bits, rest[0] if rest else width)
                              for name, a_bits, b_bits, *rest in products)
        self.width = width
        members = {"start": In(1), "busy": Out(1)}
        for name, a_bits, b_bits, bits in self.products:
            if not 1 <= bits <= width:
                raise ValueError(f"product {name}: {bits} bits is not in 1..{width}")
            members[f"{name}_a"] = In(a_bits)
            members[f"{name}_b"] = In(b_bits)
            members[name] = Out(bits)
        super().__init__(members)

    @property
    def max_cycles(self) -> int:
        """Cycles from ``start`` to the last product registered, at most: a load cycle and one
        cycle per bit of ``b`` plus the write, per product."""
        return sum(b_bits + 2 for _, _, b_bits, _ in self.products)

    def elaborate(self, platform):
        m = Module()
        n = len(self.products)
        width = self.width
        b_width = max(b_bits for _, _, b_bits, _ in self.products)
        idx = Signal(range(n))
        a_sh = Signal(width)
        b_sh = Signal(b_width)
        acc = Signal(width)
        # saturation: ``a_big``, the shifted operand is 2**width or more (its bits above
        # ``width`` are dropped); ``ovf``, the product is (a set bit of b met a big operand, or
        # the sum carried out)
        a_big = Signal()
        ovf = Signal()
        a_in = Array(getattr(self, f"{name}_a") for name, *_ in self.products)
        b_in = Array(getattr(self, f"{name}_b") for name, *_ in self.products)
        a_bits = max(a for _, a, _, _ in self.products)
        # load: the next product's operands into the shift registers; run: one bit of b per
        # cycle, the product registered when b has no set bits left
        load = Signal()
        run = Signal()
        m.d.comb += self.busy.eq(self.start | load | run)
        with m.If(self.start):
            m.d.sync += [idx.eq(0), load.eq(1), run.eq(0)]
        with m.Elif(load):
            a = a_in[idx]
            m.d.sync += [a_sh.eq(a[:width]), b_sh.eq(b_in[idx]), acc.eq(0), load.eq(0),
                         run.eq(1), ovf.eq(0),
                         a_big.eq(a[width:] != 0 if a_bits > width else 0)]
        with m.Elif(run):
            with m.If(b_sh == 0):
                with m.Switch(idx):
                    for i, (name, _, _, bits) in enumerate(self.products):
                        with m.Case(i):
                            big = ovf | (acc[bits:] != 0) if bits < width else ovf
                            m.d.sync += getattr(self, name).eq(Mux(big, (1 << bits) - 1,
                                                                   acc[:bits]))
                m.d.sync += [idx.eq(idx + 1), run.eq(0), load.eq(idx != n - 1)]
            with m.Else():
                with m.If(b_sh[0]):
                    total = acc + a_sh  # width + 1 bits: the top one is the carry out
                    m.d.sync += [acc.eq(total[:width]), ovf.eq(ovf | a_big | total[width])]
                m.d.sync += [a_sh.eq(a_sh << 1), b_sh.eq(b_sh >> 1),
                             a_big.eq(a_big | a_sh[width - 1])]
        return m
