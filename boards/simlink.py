"""A byte transport into the Amaranth simulator: the host talks to a simulated UART.

``SimTransport(dut, divisor=...)`` puts a host-side UART (this package's own ``UARTTx`` and
``UARTRx``) on the ``rx``/``tx`` pins of ``dut`` (a :class:`~sluice.boards.top.BoardTop`, or any
design with those two signals) and advances the simulation only while the host waits for bytes,
so the synchronous host code (:class:`~sluice.boards.host.Link`) runs unchanged.
"""

from __future__ import annotations

from collections import deque

from amaranth.hdl import Module
from amaranth.sim import Simulator

from sluice.boards.uart import UARTRx, UARTTx


class SimTransport:
    def __init__(self, dut, *, divisor: int, timeout_cycles: int = 20000, vcd: str | None = None):
        m = Module()
        m.submodules.dut = dut
        m.submodules.host_tx = self._htx = htx = UARTTx(divisor=divisor)
        m.submodules.host_rx = self._hrx = hrx = UARTRx(divisor=divisor)
        m.d.comb += [dut.rx.eq(htx.tx), hrx.rx.eq(dut.tx)]
        self.divisor = divisor
        self.timeout_cycles = timeout_cycles
        self.cycles = 0
        self._out = deque()
        self._in = bytearray()
        self.sim = Simulator(m)
        self.sim.add_clock(1e-8)
        self.sim.add_testbench(self._line)
        self._vcd = None
        if vcd:
            self._vcd = self.sim.write_vcd(vcd)
            self._vcd.__enter__()

    async def _line(self, ctx):
        htx, hrx = self._htx, self._hrx
        ctx.set(hrx.o.ready, 1)
        valid = False
        while True:
            if not valid and self._out:
                ctx.set(htx.i.payload, self._out.popleft())
                ctx.set(htx.i.valid, 1)
                valid = True
            _, _, tx_ready, rx_valid, rx_data = await ctx.tick().sample(
                htx.i.ready, hrx.o.valid, hrx.o.payload)
            self.cycles += 1
            if valid and tx_ready:
                valid = False
                ctx.set(htx.i.valid, 0)
            if rx_valid:
                self._in.append(rx_data)

    def write(self, data: bytes) -> None:
        self._out.extend(data)

    def read(self, n: int) -> bytes:
        # allow for the bytes still queued to the board plus the reply itself
        budget = self.timeout_cycles + (len(self._out) + n) * 11 * self.divisor
        start = self.cycles
        while len(self._in) < n and self.cycles - start < budget:
            self.sim.advance()
        out = bytes(self._in[:n])
        del self._in[:n]
        return out

    def run(self, cycles: int) -> None:
        """Let the simulation run ``cycles`` clock cycles with nothing expected."""
        end = self.cycles + cycles
        while self.cycles < end:
            self.sim.advance()

    def close(self) -> None:
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None
