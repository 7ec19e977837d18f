"""The UART bridge in simulation, in front of the loopback stand-in (real register file, a
known stream function): register access, streaming with back-pressure both ways, every error
reply, resynchronisation and RESET. The bytes cross a simulated UART at 4 clocks per bit."""

import dataclasses
import random

import pytest

from sluice.boards import protocol as P
from sluice.boards.host import BoardRunner, BridgeError, Link
from sluice.boards.loopback import LoopbackAccelerator, loopback_word
from sluice.boards.simlink import SimTransport
from sluice.boards.top import BoardTop
from sluice.hw.params import REG, VERSION, HwParams, id_value

PARAMS = HwParams(rows=2, cols=2, act_depth=256, wgt_depth=64, pix_depth=16, skip_cols=2,
                  stream_width=4)
IN_BUF = 32  # small, so a job needs many PUSH frames and the ring wraps


@pytest.fixture(scope="module")
def link():
    top = BoardTop(PARAMS, divisor=4, in_buf_bytes=IN_BUF, out_depth=4,
                   accelerator=LoopbackAccelerator(PARAMS))
    lk = Link(SimTransport(top, divisor=4))
    lk.ping()
    return lk


def raw(link, frame: bytes):
    """Send raw bytes, return (status, data) of the reply."""
    link.t.write(frame)
    return link._reply()


def test_ping_and_registers(link):
    info = link.ping()
    assert (info.version, info.stream_bytes, info.in_buf_bytes) == (1, PARAMS.stream_bytes, IN_BUF)
    assert info.word_bytes == P.word_bytes(PARAMS.out_bits)
    assert link.state.in_free == IN_BUF and link.state.out_avail == 0
    ident = link.read_reg("ID")
    assert (ident >> 8 & 0xFF, ident & 0xFF) == (2, 2)
    for value in (0x1234, 0xBEEF, 7):
        link.write_reg("W_IN", value)
        assert link.read_reg("W_IN") == value
    assert link.read(0xFC) == 0  # unmapped: reads as zero


def test_stream_job_with_backpressure(link):
    rng = random.Random(5)
    beats = [rng.getrandbits(32) for _ in range(23)]
    runner = BoardRunner(link, PARAMS, runner_name="test")
    frames = link.frames
    words, counters, status, error = runner.run_job(
        [(REG["C_IN"].addr, len(beats)), (REG["CTRL"].addr, 1)], beats)
    assert words == [loopback_word(b, i, PARAMS) for i, b in enumerate(beats)]
    assert error == 0 and not status & 1  # not busy
    assert counters["cycles"] > 2 * len(beats)  # the stand-in takes a beat every other cycle
    assert link.frames - frames > len(beats) * 4 // IN_BUF  # the ring was refilled many times
    assert link.state.in_free == IN_BUF


def test_output_words_of_other_widths():
    """Output words that are not 8 bytes (a 2 x 4 array's 12-byte words, a 3 x 3's 9: the
    bridge sends the FIFO's head word a byte at a time, the word's byte picked by its index)
    come back whole, several per POP reply."""
    for rows, cols, skip, wb in ((2, 4, 2, 12), (3, 3, 3, 9)):
        params = HwParams(rows=rows, cols=cols, act_depth=256, wgt_depth=64, pix_depth=16,
                          skip_cols=skip, stream_width=4)
        assert P.word_bytes(params.out_bits) == wb
        top = BoardTop(params, divisor=4, in_buf_bytes=IN_BUF, out_depth=8,
                       accelerator=LoopbackAccelerator(params))
        lk = Link(SimTransport(top, divisor=4))
        lk.ping()
        rng = random.Random(rows)
        beats = [rng.getrandbits(32) for _ in range(12)]
        runner = BoardRunner(lk, params, runner_name="test")
        words, *_ = runner.run_job([(REG["C_IN"].addr, len(beats)), (REG["CTRL"].addr, 1)],
                                   beats)
        assert words == [loopback_word(b, i, params) for i, b in enumerate(beats)]


def test_error_replies_and_resync(link):
    link.write_reg("H_IN", 5)
    bad = bytearray(P.encode_command(P.CMD_WRITE, bytes([REG["H_IN"].addr, 9, 0, 0, 0])))
    bad[-1] ^= 0x40
    assert raw(link, bytes(bad))[0] == P.ST_CHECKSUM
    assert link.read_reg("H_IN") == 5  # a damaged frame is never executed

    assert raw(link, P.encode_command(0x7F))[0] == P.ST_COMMAND
    assert raw(link, P.encode_command(P.CMD_READ, b"\x00\x00"))[0] == P.ST_LENGTH
    assert raw(link, P.encode_command(P.CMD_PUSH, bytes(6)))[0] == P.ST_LENGTH  # not whole beats
    assert raw(link, P.encode_command(P.CMD_PUSH, bytes(2 * IN_BUF)))[0] == P.ST_FULL
    assert link.state.in_free == IN_BUF  # refused pushes leave nothing behind

    # noise before a frame is skipped; a frame cut short times out and is dropped
    assert raw(link, b"\x00\x13" + P.encode_command(P.CMD_PING))[0] == P.ST_OK
    assert raw(link, bytes([P.SYNC_CMD, P.CMD_WRITE, 5, 0, 0x10]))[0] == P.ST_TIMEOUT
    assert link.ping().version == P.PROTOCOL_VERSION

    with pytest.raises(BridgeError, match="unknown command"):
        link.command(0x42)


def test_a_bitstream_of_another_register_map_version_is_refused(link):
    """A bitstream built before the register map or stream format changed (ID's VERSION
    field) would take a job's beats in another order: the host refuses it, naming the fix."""
    class OldId:
        def __init__(self, version):
            self.version = version

        def ping(self):
            return link.info

        def reset(self):
            pass

        def read_reg(self, name):
            assert name == "ID"
            return id_value(PARAMS) & 0xFFFFFF | self.version << 24

    with pytest.raises(BridgeError, match=f"version {VERSION - 1}, this host version "
                                          f"{VERSION}.*rebuild"):
        BoardRunner(OldId(VERSION - 1), PARAMS)
    BoardRunner(OldId(VERSION), PARAMS)  # the same ID with the current version is accepted
    # the host follows the bitstream's ID bit 17 (the walker's jump over the rows between
    # stacked images), whichever way it was told
    for built in (False, True):
        class Id(OldId):
            def read_reg(self, name):
                return id_value(dataclasses.replace(PARAMS, stacking=built))

        for told in (False, True):
            runner = BoardRunner(Id(VERSION), dataclasses.replace(PARAMS, stacking=told))
            assert runner.params.stacking is built


def test_bad_checksum_is_retried(link):
    class Flaky:
        """Corrupts the CRC of the first frame written."""

        def __init__(self, t):
            self.t, self.hit = t, False

        def write(self, data):
            if not self.hit:
                self.hit = True
                data = data[:-1] + bytes([data[-1] ^ 1])
            self.t.write(data)

        def read(self, n):
            return self.t.read(n)

    flaky = Link(Flaky(link.t))
    flaky.info = link.info
    flaky.write_reg("STRIDE", 2)
    assert flaky.retried == 1
    assert link.read_reg("STRIDE") == 2


def test_reset_empties_the_link(link):
    link.write_reg("C_IN", 100)
    link.write_reg("CTRL", 1)
    link.push(bytes(range(16)))
    link.t.run(400)
    assert link.read_reg("STATUS") & 1  # busy, waiting for more beats
    link.reset()
    assert link.state.in_free == IN_BUF and link.state.out_avail == 0
    assert link.read_reg("STATUS") & 1 == 0
    assert link.pop() == []


def test_rst_resets_bridge_and_accelerator():
    """``BoardTop.rst`` (the PLL's lock on ECP5, where the ``sync`` domain is reset-less) resets
    the bridge and, through the bridge's ``acc_rst`` register, the accelerator: ``acc_rst`` is
    high while ``rst`` is and for the clock after, and a register written before reads back as
    its reset value after."""
    top = BoardTop(PARAMS, divisor=4, in_buf_bytes=IN_BUF, out_depth=4,
                   accelerator=LoopbackAccelerator(PARAMS))
    t = SimTransport(top, divisor=4)
    pulse, seen = [False], []

    async def reset_pin(ctx):
        while True:
            await ctx.tick()
            if pulse[0]:
                ctx.set(top.rst, 1)
                for _ in range(4):
                    seen.append(ctx.get(top.bridge.acc_rst))
                    await ctx.tick()
                ctx.set(top.rst, 0)
                for _ in range(3):
                    seen.append(ctx.get(top.bridge.acc_rst))
                    await ctx.tick()
                pulse[0] = False

    t.sim.add_testbench(reset_pin)
    lk = Link(t)
    lk.ping()
    lk.write_reg("C_IN", 100)
    assert lk.read_reg("C_IN") == 100
    pulse[0] = True
    t.run(20)
    assert not pulse[0]
    # sampled before each clock edge: rst is set before the first sample, acc_rst follows an
    # edge later, stays up for the edge after rst falls, then drops
    assert seen == [0, 1, 1, 1, 1, 0, 0]
    lk.ping()
    assert lk.read_reg("C_IN") == 0


@pytest.mark.parametrize("control", [False, True])
def test_input_ring_reads_never_use_a_colliding_write(control):
    """The input ring's read/write collisions are declared don't-care in board builds
    (``hw.params.NO_COLLISION_MEMORIES``): a stream job through a small ring (refilled by many
    PUSH frames while the stand-in takes beats slowly, at random cycles) comes out exact with
    the read data complemented after every same-address read and write; reads whose byte goes
    into a beat do meet PUSH writes (counted, at least one); as a control, complementing the
    data after every read that meets any write breaks the job, so their data reaches the
    stream."""
    # 16-byte beats (16 reads per beat taken), a beat taken one cycle in 2^9 at random: the
    # ring keeps committed bytes while the next PUSH frames arrive (a byte per 40 cycles), and
    # a beat's reads fall inside them at no fixed phase (with a fixed period they fell between
    # a frame's bytes, or met them by chance once a run)
    params = dataclasses.replace(PARAMS, stream_width=16)
    top = BoardTop(params, divisor=4, in_buf_bytes=64, out_depth=64,
                   accelerator=LoopbackAccelerator(params, in_random=9))
    t = SimTransport(top, divisor=4)
    seen = {"writes": 0, "same": 0, "used": 0}

    async def corrupt(ctx):
        ring = top.bridge.memories["in_ring"]
        (w,), (r,) = ring.write_ports, ring.read_ports
        met = False  # the last edge had a write; its read is used if the address moves on
        addr = None
        async for _, _, w_en, w_addr, r_addr in ctx.tick().sample(w.en, w.addr, r.addr):
            seen["used"] += met and r_addr != addr
            met, addr = bool(w_en), r_addr
            if w_en:  # (the read port is always enabled)
                seen["writes"] += 1
                seen["same"] += w_addr == r_addr
                if control or w_addr == r_addr:
                    ctx.set(r.data, ctx.get(r.data) ^ 0xFF)

    t.sim.add_testbench(corrupt)
    lk = Link(t)
    lk.ping()
    rng = random.Random(9)
    beats = [rng.getrandbits(128) for _ in range(64)]
    runner = BoardRunner(lk, params, runner_name="test")
    words, *_ = runner.run_job([(REG["C_IN"].addr, len(beats)), (REG["CTRL"].addr, 1)], beats)
    want = [loopback_word(b, i, params) for i, b in enumerate(beats)]
    assert (words != want) if control else (words == want)
    assert seen["writes"] > 100 and seen["used"] >= 1, seen
