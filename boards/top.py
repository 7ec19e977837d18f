"""Board top level: the UART bridge joined to the accelerator, for simulation and for FPGAs.

Ports of the bridge and the accelerator share their names (``axil_*``, ``s_axis_*``,
``m_axis_*``), so they are joined by name; the accelerator sits behind a reset that the bridge's
RESET command drives.

Resets: the bridge is reset by ``BoardTop.rst`` (and the ``sync`` domain's own reset, where the
domain has one), the accelerator only by the bridge's ``acc_rst`` register, which is also set
while the bridge is in reset. With the ECP5 PLL the ``sync`` domain is reset-less and ``rst`` is
the PLL's lock, synchronised: the accelerator's reset net then leaves one flip-flop with no logic
in front of its thousands of loads (with the domain's reset ORed in, that OR in front of the
net was the 8 x 8 ECP5 build's critical path at 100 MHz).
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Elaboratable, Module, ResetInserter, Signal

from sluice.boards.bridge import UARTBridge

BRIDGED_PORTS = tuple(
    ["axil_" + s for s in ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready",
                           "bresp", "bvalid", "bready", "araddr", "arvalid", "arready", "rdata",
                           "rresp", "rvalid", "rready")]
    + ["s_axis_" + s for s in ("tdata", "tvalid", "tready", "tlast")]
    + ["m_axis_" + s for s in ("tdata", "tvalid", "tready", "tlast")])


def join_by_name(m: Module, bridge, acc, names=BRIDGED_PORTS):
    """Connect ``bridge.<name>`` and ``acc.<name>`` in the direction the bridge declares."""
    from amaranth.lib.wiring import Out

    for name in names:
        b, a = getattr(bridge, name), getattr(acc, name)
        if bridge.signature.members[name].flow == Out:
            m.d.comb += a.eq(b)
        else:
            m.d.comb += b.eq(a)


def make_accelerator(params):
    """The accelerator component for ``params`` (``sluice.hw.top.Sluice``; ``params.gating``
    False gives the dense-only build)."""
    from sluice.hw.top import Sluice

    return Sluice(params)


class BoardTop(Elaboratable):
    """UART bridge + accelerator.

    With a ``platform`` (an FPGA build) the UART pins come from the platform's ``uart`` resource
    and the LEDs show ``done`` and link activity; without one (simulation), ``rx``/``tx`` are
    plain signals of this object. With ``pll`` (ECP5), the design runs in a ``sync`` domain from
    the PLL, held in reset until it locks.
    """

    def __init__(self, params, *, divisor, in_buf_bytes=512, out_depth=32, accelerator=None,
                 pll=None):
        self.params = params
        self.pll = pll  # a boards.pll.PllConfig: the sync domain from the ECP5 PLL
        self.divisor = divisor
        self.bridge = UARTBridge(divisor=divisor, stream_bytes=params.stream_bytes,
                                 out_bits=params.out_bits, in_buf_bytes=in_buf_bytes,
                                 out_depth=out_depth)
        self.acc = accelerator if accelerator is not None else make_accelerator(params)
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)
        self.rst = Signal()  # resets the bridge, and through acc_rst the accelerator

    def elaborate(self, platform):
        m = Module()
        bridge = self.bridge
        m.submodules.bridge = ResetInserter({"sync": self.rst})(bridge)
        m.submodules.acc = ResetInserter({"sync": bridge.acc_rst})(self.acc)
        join_by_name(m, bridge, self.acc)
        members = self.acc.signature.members if hasattr(self.acc, "signature") else {}
        if "done" in members:
            m.d.comb += bridge.done.eq(self.acc.done)

        if platform is None:
            m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx)]
            return m

        from amaranth.build import ResourceError
        from amaranth.lib import io

        def pin(name, direction, number=0):
            """A resource's pin through an explicit I/O buffer (``dir="-"``, Amaranth 0.5's
            form; requesting with a direction is deprecated)."""
            port = platform.request(name, number, dir="-")
            m.submodules[f"io_{name}_{number}"] = buf = io.Buffer(direction, port)
            return buf

        if self.pll is not None:  # the sync domain from the PLL, not the platform's oscillator
            from sluice.boards.pll import Ecp5Pll

            osc = pin(platform.default_clk, "i")
            m.domains.sync = ClockDomain("sync", reset_less=True)
            m.submodules.pll = pll = Ecp5Pll(self.pll, osc.i)
            m.d.comb += self.rst.eq(pll.rst)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.io_uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.io_uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [bridge.rx.eq(rx.i), tx.o.eq(bridge.tx)]
        try:  # ULX3S: the FTDI's TX buffer must be enabled explicitly
            m.d.comb += pin("uart_tx_enable", "o").o.eq(1)
        except ResourceError:  # boards without it
            pass
        try:
            led_done = pin("led", "o", 0)
            led_rx = pin("led", "o", 1)
            m.d.comb += [led_done.o.eq(bridge.done), led_rx.o.eq(~rx.i)]
        except ResourceError:  # boards with fewer LEDs
            pass
        return m
