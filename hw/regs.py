"""AXI4-Lite register slave built from the register map in ``sluice.hw.params``.

Writes need AWVALID and WVALID together (both are accepted in the same cycle, one response on
B); reads answer one cycle after ARVALID. Byte strobes are ignored (registers are written whole).
Unmapped addresses read as zero and ignore writes; responses are always OKAY.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
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

    def __init__(self, *, ident: int, settle: int = 0):
        self._ident = ident  # ID register value (params.id_value)
        self._settle = settle
        members = axil_members()
        for name, _ in DESCRIPTOR:
            members[name.lower()] = Out(DIM_BITS)
        members["start"] = Out(1)
        members["desc_write"] = Out(1)  # a register other than CTRL is written this cycle
        members["desc_busy"] = In(1)
        members["busy"] = In(1)
        members["done"] = In(1)
        members["error"] = In(32)
        for name, _ in COUNTERS:
            members["cnt_" + name.lower()] = In(32)
        super().__init__(members)

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
        with m.If(do_write):
            m.d.sync += self.axil_bvalid.eq(1)
            with m.Switch(self.axil_awaddr):
                with m.Case(REG["CTRL"].addr):
                    m.d.sync += self.start.eq(self.axil_wdata[0])
                for name, _ in DESCRIPTOR:
                    with m.Case(REG[name].addr):
                        m.d.sync += getattr(self, name.lower()).eq(self.axil_wdata[:DIM_BITS])
        with m.Elif(self.axil_bvalid & self.axil_bready):
            m.d.sync += self.axil_bvalid.eq(0)

        # read channel
        do_read = self.axil_arvalid & ~self.axil_rvalid
        m.d.comb += self.axil_arready.eq(do_read)
        with m.If(do_read):
            m.d.sync += self.axil_rvalid.eq(1)
            with m.Switch(self.axil_araddr):
                with m.Case(REG["ID"].addr):
                    m.d.sync += self.axil_rdata.eq(self._ident)
                with m.Case(REG["STATUS"].addr):
                    m.d.sync += self.axil_rdata.eq(
                        self.busy | (self.done << 1) | ((self.error != 0) << 2))
                with m.Case(REG["ERROR"].addr):
                    m.d.sync += self.axil_rdata.eq(self.error)
                for name, _ in DESCRIPTOR:
                    with m.Case(REG[name].addr):
                        m.d.sync += self.axil_rdata.eq(getattr(self, name.lower()))
                for name, _ in COUNTERS:
                    with m.Case(REG[name].addr):
                        m.d.sync += self.axil_rdata.eq(getattr(self, "cnt_" + name.lower()))
                with m.Default():
                    m.d.sync += self.axil_rdata.eq(0)
        with m.Elif(self.axil_rvalid & self.axil_rready):
            m.d.sync += self.axil_rvalid.eq(0)
        return m
