"""The UART on its own: the wire format (8N1, LSB first) and the receiver's error handling."""

from amaranth.hdl import Module
from amaranth.sim import Simulator

from sluice.boards.uart import UARTRx, UARTTx

DIV = 4


def _bits(byte):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def test_tx_wire_format():
    dut = UARTTx(divisor=DIV)
    seen = []

    async def tb(ctx):
        ctx.set(dut.i.payload, 0xA6)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for _ in range(12 * DIV):
            seen.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen[:10 * DIV] == [b for b in _bits(0xA6) for _ in range(DIV)]
    assert all(seen[10 * DIV:])  # idle high afterwards


def _drive_rx(bytes_and_stop, glitch=False):
    dut = UARTRx(divisor=DIV)
    got, errors = [], []

    async def tb(ctx):
        async def tick(n=1):
            for _ in range(n):
                await ctx.tick()
                if ctx.get(dut.o.valid):
                    got.append(ctx.get(dut.o.payload))
                if ctx.get(dut.framing_error):
                    errors.append(len(got))

        ctx.set(dut.o.ready, 1)
        ctx.set(dut.rx, 1)
        await tick(5)
        if glitch:  # a 1-cycle low pulse is not a start bit
            ctx.set(dut.rx, 0)
            await tick()
            ctx.set(dut.rx, 1)
            await tick(3 * DIV)
        for byte, stop in bytes_and_stop:
            bits = _bits(byte)
            bits[-1] = stop
            for b in bits:
                ctx.set(dut.rx, b)
                await tick(DIV)
            ctx.set(dut.rx, 1)
            await tick(2 * DIV)

    m = Module()
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got, errors


def test_rx_bytes_and_framing_error():
    got, errors = _drive_rx([(0x00, 1), (0xFF, 1), (0x5A, 0), (0x81, 1)], glitch=True)
    # valid is held for one cycle per byte (ready is always high)
    assert got == [0x00, 0xFF, 0x81]
    assert errors == [2]  # one framing error, after the first two good bytes
