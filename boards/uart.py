"""A plain 8N1 UART: receiver and transmitter with a fixed clocks-per-bit divisor.

The divisor is an elaboration parameter (``clk_freq // baud``), so the same code runs at
3 Mbaud on a 12 MHz iCEBreaker (divisor 4) and at a tiny divisor in simulation. The receiver
synchronises ``rx`` with two flip-flops, finds the middle of the start bit and samples every
``divisor`` cycles from there; a byte whose stop bit is low is dropped and counted as a framing
error. A UART cannot be held off, so a byte that completes while the previous one is still
waiting on ``o.ready`` is dropped and flagged as an overrun.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


def _check_divisor(divisor: int) -> int:
    if int(divisor) != divisor or divisor < 4:
        raise ValueError(f"UART divisor {divisor!r} must be an integer >= 4 clocks per bit")
    return int(divisor)


class UARTRx(wiring.Component):
    """Serial ``rx`` in, bytes out on the ``o`` stream.

    ``framing_error`` and ``overrun`` pulse for one cycle when a byte is lost.
    """

    def __init__(self, *, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx_meta = Signal(init=1)
        rx_s = Signal(init=1)
        m.d.sync += [rx_meta.eq(self.rx), rx_s.eq(rx_meta)]

        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx_s):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~rx_s):  # still low in the middle: a real start bit
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx_s)), timer.eq(d - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~rx_s):
                        m.d.sync += self.framing_error.eq(1)
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    # back to IDLE in the middle of the stop bit: IDLE waits for the next edge
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Bytes in on the ``i`` stream, serial ``tx`` out (idle high)."""

    def __init__(self, *, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        left = Signal(range(11))  # bits still to send, start + 8 data + stop
        shreg = Signal(10, init=0x3FF)
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), left.eq(10),
                             timer.eq(d - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), left.eq(left - 1), timer.eq(d - 1)]
        return m
