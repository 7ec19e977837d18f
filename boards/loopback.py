"""A stand-in accelerator for link tests: the real register file, a trivial stream function.

Same ports as ``sluice.hw.top.Sluice`` (plus ``done``). Writing CTRL.START starts a job of
``C_IN`` input beats; each beat comes back as one output word, ``word = (beat | index << 8 *
stream_bytes) mod 2^out_bits``, then a zero word with TLAST terminates the job (as the real
accelerator does). The input is taken only every other cycle and
the output waits in a 4-word FIFO, so the bridge sees back-pressure both ways. ``CYCLES``
counts the job's cycles. Used by the bridge tests and for bringing up a board's link
(``sluice build --board NAME --loopback``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from sluice.hw.fifo import BufferedFIFO
from sluice.hw.params import COUNTERS, DIM_BITS, id_value
from sluice.hw.regs import RegisterFile, axil_members
from sluice.hw.top import port_members


def loopback_word(beat: int, index: int, params) -> int:
    """What the loopback answers for input ``beat`` number ``index`` (the test's oracle)."""
    return (beat | index << 8 * params.stream_bytes) & ((1 << params.out_bits) - 1)


class LoopbackAccelerator(wiring.Component):
    """``in_period``: cycles per input beat taken (2: every other cycle; tests slow it down to
    keep the bridge's input ring full while frames arrive). ``in_random`` (n > 0): instead, a
    beat is taken in the cycles whose 16-bit LFSR has its low n bits zero (one in 2^n, at
    no fixed phase to the UART's bytes; the bridge's collision test)."""

    def __init__(self, params, *, in_period=2, in_random=0):
        self.params = params
        self.in_period = in_period
        self.in_random = in_random
        members = port_members(params)
        members["done"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.regs = regs = RegisterFile(ident=id_value(p))
        for name, member in axil_members().items():
            if member.flow == Out:
                m.d.comb += getattr(self, name).eq(getattr(regs, name))
            else:
                m.d.comb += getattr(regs, name).eq(getattr(self, name))
        busy = Signal()
        index = Signal(DIM_BITS)
        phase = Signal(range(self.in_period))  # the beat is taken at in_period - 1
        cycles = Signal(32)
        m.d.comb += [regs.busy.eq(busy), regs.done.eq(self.done), regs.error.eq(0),
                     regs.cnt_cycles.eq(cycles)]
        for name, _ in COUNTERS[1:]:
            m.d.comb += getattr(regs, "cnt_" + name.lower()).eq(0)

        m.submodules.fifo = fifo = BufferedFIFO(width=p.out_bits + 1, depth=4)
        m.d.comb += [self.m_axis_tdata.eq(fifo.r_data[:p.out_bits]),
                     self.m_axis_tlast.eq(fifo.r_data[p.out_bits]),
                     self.m_axis_tvalid.eq(fifo.r_rdy), fifo.r_en.eq(self.m_axis_tready)]
        last = index == regs.c_in - 1
        term = Signal()  # the data words are done: send the TLAST terminator next
        word = Signal(p.out_bits)
        m.d.comb += word.eq(Cat(self.s_axis_tdata, index))  # truncates or zero-extends
        take = phase == self.in_period - 1
        if self.in_random:
            lfsr = Signal(16, init=0xACE1)  # x^16 + x^14 + x^13 + x^11 + 1, maximal length
            m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
            take = lfsr[:self.in_random] == 0
        m.d.comb += [self.s_axis_tready.eq(busy & ~term & take & fifo.w_rdy),
                     fifo.w_data.eq(Mux(term, Cat(Const(0, p.out_bits), 1), word)),
                     fifo.w_en.eq((self.s_axis_tvalid & self.s_axis_tready) |
                                  (term & fifo.w_rdy))]
        m.d.sync += phase.eq(Mux(phase == self.in_period - 1, 0, phase + 1))
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(regs.start & ~busy):
            m.d.sync += [busy.eq(1), index.eq(0), self.done.eq(0), cycles.eq(0)]
        with m.If(self.s_axis_tvalid & self.s_axis_tready):
            m.d.sync += index.eq(index + 1)
            with m.If(last):
                m.d.sync += term.eq(1)
        with m.If(term & fifo.w_rdy):
            m.d.sync += [term.eq(0), busy.eq(0), self.done.eq(1)]
        return m
