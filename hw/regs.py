"""AXI4-Lite register slave built from the register map in ``sluice.hw.params``.

Writes need AWVALID and WVALID together (both are accepted in the same cycle, one response on
B); reads answer two cycles after ARVALID is accepted (RVALID), and wait while a write is
accepted. Byte strobes are ignored (registers are written whole). Unmapped addresses read as
zero and ignore writes; responses are always OKAY.

The descriptor registers are read back from a copy of their writes in a small memory
(``desc_mem``, one block RAM on iCE40, LUT RAM on ECP5) instead of through the read
multiplexer: on an iCE40 a 16-bit register costs about 10 LUTs of multiplexer per bit read
back, about 200 of the iCEBreaker's logic cells for the 15 registers. A register not written
since reset reads 0, as its flip-flops do (a bit per register says which were written).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sluice.hw.params import ADDR_BITS, COUNTERS, DESCRIPTOR, DIM_BITS, REG


def axil_members():
    """AXI4-Lite slave ports, flat (``axil_awaddr`` ... ``axil_rready``) for plain Verilog."""
    return {
        "axil_awaddr": In(ADDR_BITS), "axil_awvalid": In(1), "axil_awready": Out(1),
        "axil_wdata": In(32), "axil_wstrb": In(4), "axil_wvalid": In(1), "axil_wready": Out(1),
        "axil_bresp": Out(2), "axil_bvalid": Out(1), "axil_bready": In(1),
        "axil_araddr": In(ADDR_BITS), "axil_arvalid": In(1), "axil_arready": Out(1),
        "axil_rdata": Out(32), "axil_rresp": Out(2), "axil_rvalid": Out(1), "axil_rready": In(1),
    }


class RegisterFile(wiring.Component):
    """Descriptor registers out, status/counters in, ``start`` pulse out.

    ``settle``: a write of CTRL is accepted (AWREADY/WREADY) only ``settle`` cycles or more
    after the last descriptor write and after ``desc_busy`` (the serial products of the
    descriptor, which ``desc_write`` restarts) has fallen, so logic registered up to ``settle``
    levels behind the descriptor or the products has settled when ``start`` pulses (the
    AXI4-Lite handshake simply waits).
    """

    def __init__(self, *, ident: int, settle: int = 0, field_bits=None):
        self._ident = ident  # ID register value (params.id_value)
        self._settle = settle
        # {name: bits} of the descriptor registers held in fewer than DIM_BITS flip-flops, with
        # a ``<name>_over`` port each (``params.desc_ranges``); the others keep DIM_BITS
        self._bits = dict(field_bits or {})
        members = axil_members()
        for name, _ in DESCRIPTOR:
            members[name.lower()] = Out(self._bits.get(name, DIM_BITS))
            if name in self._bits:  # a value above the field's bits was written
                members[name.lower() + "_over"] = Out(1)
        members["start"] = Out(1)
        members["desc_write"] = Out(1)  # a register other than CTRL is written this cycle
        members["desc_busy"] = In(1)
        members["busy"] = In(1)
        members["done"] = In(1)
        members["error"] = In(32)
        for name, _ in COUNTERS:
            members["cnt_" + name.lower()] = In(32)
        super().__init__(members)
        # the descriptor's read-back copy (its read and write ports are never enabled in one
        # cycle, so its collisions are don't-care: hw.params.NO_COLLISION_MEMORIES)
        self.desc_mem = Memory(shape=DIM_BITS, depth=1 << (len(DESCRIPTOR) - 1).bit_length(),
                               init=[])
        #: the memories by name (the top level's collision test looks at them)
        self.memories = {"desc_mem": self.desc_mem}

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.start.eq(0)

        # write channel
        do_write = Signal()
        not_ctrl = self.axil_awaddr != REG["CTRL"].addr
        m.d.comb += self.desc_write.eq(do_write & not_ctrl)
        ok = 1
        if self._settle > 1:
            wait = Signal(range(self._settle))
            ok = (wait == 0) | not_ctrl
            with m.If(wait != 0):
                m.d.sync += wait.eq(wait - 1)
            with m.If(self.desc_write | self.desc_busy):
                m.d.sync += wait.eq(self._settle - 1)
        m.d.comb += do_write.eq(self.axil_awvalid & self.axil_wvalid & ~self.axil_bvalid & ok)
        m.d.comb += [self.axil_awready.eq(do_write), self.axil_wready.eq(do_write),
                     self.axil_bresp.eq(0), self.axil_rresp.eq(0)]
        # descriptor register i is at DESC_BASE + 4 i
        addrs = [REG[name].addr for name, _ in DESCRIPTOR]
        assert addrs == [addrs[0] + 4 * i for i in range(len(addrs))]

        def desc_index(addr):
            """(is a descriptor register's address, its index)"""
            hit = (addr[:2] == 0) & (addr >= addrs[0]) & (addr <= addrs[-1])
            return hit, (addr - addrs[0])[2:]

        m.submodules.desc_mem = mem = self.desc_mem
        wp, rp = mem.write_port(), mem.read_port()
        written = Signal(len(DESCRIPTOR))  # registers written since reset
        w_hit, w_idx = desc_index(self.axil_awaddr)
        m.d.comb += [wp.addr.eq(w_idx), wp.data.eq(self.axil_wdata[:DIM_BITS]),
                     wp.en.eq(do_write & w_hit)]
        with m.If(do_write & w_hit):
            m.d.sync += written.bit_select(w_idx, 1).eq(1)
        with m.If(do_write):
            m.d.sync += self.axil_bvalid.eq(1)
            with m.Switch(self.axil_awaddr):
                with m.Case(REG["CTRL"].addr):
                    m.d.sync += self.start.eq(self.axil_wdata[0])
                for name, _ in DESCRIPTOR:
                    with m.Case(REG[name].addr):
                        n = self._bits.get(name, DIM_BITS)
                        m.d.sync += getattr(self, name.lower()).eq(self.axil_wdata[:n])
                        if name in self._bits:
                            m.d.sync += getattr(self, name.lower() + "_over").eq(
                                self.axil_wdata[n:DIM_BITS] != 0)
        with m.Elif(self.axil_bvalid & self.axil_bready):
            m.d.sync += self.axil_bvalid.eq(0)

        # read channel: the address is taken (ARREADY) in a cycle without a write; the next
        # cycle the memory's word is there and RDATA takes it for a descriptor register (the
        # other registers' value was taken with the address)
        r_wait = Signal()  # the address was taken last cycle: RVALID next
        r_desc = Signal()  # ... and it is a descriptor register's, written since reset
        do_read = self.axil_arvalid & ~self.axil_rvalid & ~r_wait & ~do_write
        r_hit, r_idx = desc_index(self.axil_araddr)
        m.d.comb += [self.axil_arready.eq(do_read), rp.addr.eq(r_idx), rp.en.eq(do_read)]
        m.d.sync += r_wait.eq(do_read)
        with m.If(do_read):
            m.d.sync += r_desc.eq(r_hit & written.bit_select(r_idx, 1))
            with m.Switch(self.axil_araddr):
                with m.Case(REG["ID"].addr):
                    m.d.sync += self.axil_rdata.eq(self._ident)
                with m.Case(REG["STATUS"].addr):
                    m.d.sync += self.axil_rdata.eq(
                        self.busy | (self.done << 1) | ((self.error != 0) << 2))
                with m.Case(REG["ERROR"].addr):
                    m.d.sync += self.axil_rdata.eq(self.error)
                for name, _ in COUNTERS:
                    with m.Case(REG[name].addr):
                        m.d.sync += self.axil_rdata.eq(getattr(self, "cnt_" + name.lower()))
                with m.Default():
                    m.d.sync += self.axil_rdata.eq(0)
        with m.If(r_wait):
            m.d.sync += self.axil_rvalid.eq(1)
            with m.If(r_desc):
                m.d.sync += self.axil_rdata.eq(rp.data)
        with m.Elif(self.axil_rvalid & self.axil_rready):
            m.d.sync += self.axil_rvalid.eq(0)
        return m
