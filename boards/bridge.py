"""UART bridge: the host's link to the accelerator's AXI4-Lite registers and AXI4-Stream ports.

The host sends framed commands (``boards/protocol.py``, ``boards/README.md``); the bridge

* runs AXI4-Lite writes and reads as a bus master (``axil_*``, named like the accelerator's
  slave ports, directions flipped),
* stores PUSH payloads in an input ring buffer (``in_buf_bytes``, one block RAM) and feeds them
  to the accelerator's input stream (``s_axis_*``) a beat at a time. A PUSH frame is written to
  the ring speculatively and only *committed* (made visible to the stream) when its CRC checks,
  so a corrupted frame never reaches the accelerator; the reply says how much space is free,
  so the host never overruns the ring (a UART has no flow control),
* collects the accelerator's output stream (``m_axis_*``) in a FIFO of ``out_depth`` words that
  the host empties with POP,
* pulses ``acc_rst`` on RESET.

Every reply carries the link state (free input space, waiting output words, flags), so the host
needs no extra polling while it streams a layer.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sluice.boards import protocol as P
from sluice.boards.uart import UARTRx, UARTTx
from sluice.hw.fifo import BufferedFIFO
from sluice.hw.params import ADDR_BITS, CTRL_WAIT_MAX


def crc8_next(crc, byte):
    """CRC-8 (poly 0x07) of ``crc`` updated with ``byte``, as a flat XOR network.

    The update is linear over GF(2) in ``v = crc ^ byte``; output bit j is the XOR of the bits
    ``v[i]`` whose unit vector sets bit j (computed here with the Python reference).
    """
    v = crc ^ byte
    bits = []
    for j in range(8):
        terms = [v[i] for i in range(8) if P.crc8_update(0, 1 << i) >> j & 1]
        x = terms[0]
        for t in terms[1:]:
            x = x ^ t
        bits.append(x)
    return Cat(*bits)


def _log2(n: int) -> int:
    return (n - 1).bit_length()


# cycles the bridge waits for an AXI4-Lite answer before replying with an error; it must
# outlast the accelerator's longest CTRL handshake (the register file holds CTRL until the
# descriptor's products have settled: CTRL_WAIT_MAX)
AXI_TIMEOUT = 1024
assert AXI_TIMEOUT > 2 * CTRL_WAIT_MAX


class UARTBridge(wiring.Component):
    """UART (``rx``/``tx``) to AXI4-Lite master + AXI4-Stream master/slave.

    Parameters
    ----------
    divisor : int
        Clocks per UART bit (``clk_freq // baud``), at least 4.
    stream_bytes : int
        Input stream beat width in bytes (``HwParams.stream_bytes``).
    out_bits : int
        Output stream TDATA width (``HwParams.out_bits``).
    in_buf_bytes : int
        Input ring buffer size (power of two); the most a single PUSH can carry.
    out_depth : int
        Output FIFO depth in words.
    """

    def __init__(self, *, divisor, stream_bytes, out_bits, in_buf_bytes=512, out_depth=32,
                 axi_timeout=AXI_TIMEOUT, frame_timeout_bytes=64):
        if in_buf_bytes & (in_buf_bytes - 1) or in_buf_bytes < 2 * stream_bytes:
            raise ValueError(f"in_buf_bytes={in_buf_bytes} must be a power of two "
                             f">= 2 * stream_bytes")
        if in_buf_bytes > 32768:
            raise ValueError("in_buf_bytes must be <= 32768 (16-bit free-space field)")
        self._divisor = divisor
        self._sb = stream_bytes
        self._out_bits = out_bits
        self._in_buf = in_buf_bytes
        self._out_depth = out_depth
        self._axi_timeout = axi_timeout
        self._frame_timeout = frame_timeout_bytes * 10 * divisor
        self.word_bytes = P.word_bytes(out_bits)
        #: the block RAMs by name, filled by ``elaborate`` (for the collision test)
        self.memories = {}
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            # AXI4-Lite master (the accelerator's slave ports, flipped)
            "axil_awaddr": Out(ADDR_BITS), "axil_awvalid": Out(1), "axil_awready": In(1),
            "axil_wdata": Out(32), "axil_wstrb": Out(4), "axil_wvalid": Out(1),
            "axil_wready": In(1),
            "axil_bresp": In(2), "axil_bvalid": In(1), "axil_bready": Out(1),
            "axil_araddr": Out(ADDR_BITS), "axil_arvalid": Out(1), "axil_arready": In(1),
            "axil_rdata": In(32), "axil_rresp": In(2), "axil_rvalid": In(1),
            "axil_rready": Out(1),
            # input stream, bridge -> accelerator
            "s_axis_tdata": Out(8 * stream_bytes), "s_axis_tvalid": Out(1),
            "s_axis_tready": In(1), "s_axis_tlast": Out(1),
            # output stream, accelerator -> bridge
            "m_axis_tdata": In(out_bits), "m_axis_tvalid": In(1), "m_axis_tready": Out(1),
            "m_axis_tlast": In(1),
            "done": In(1),
            "acc_rst": Out(1),
        })

    def elaborate(self, platform):  # noqa: C901 - one parser/executor FSM, read top to bottom
        m = Module()
        B, N, W = self._sb, self._in_buf, self.word_bytes
        pbits = _log2(N) + 1  # ring pointers carry one wrap bit

        m.submodules.uart_rx = urx = UARTRx(divisor=self._divisor)
        m.submodules.uart_tx = utx = UARTTx(divisor=self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        rx_byte = urx.o.payload
        rx_ok = Signal()
        m.d.comb += rx_ok.eq(urx.o.valid & urx.o.ready)

        rx_error = Signal()  # sticky until the next reply
        with m.If(urx.framing_error | urx.overrun):
            m.d.sync += rx_error.eq(1)

        # ------------------------------------------------------------ input ring buffer
        # (its read/write collisions are don't-care, hw.params.NO_COLLISION_MEMORIES: a byte is
        # read only once committed, and a PUSH writes only into free space, so the byte a read
        # uses is never the one being written; tests/boards/test_bridge.py checks it)
        m.submodules.in_ring = ring = Memory(shape=8, depth=N, init=[])
        self.memories["in_ring"] = ring
        ring_wp = ring.write_port()
        ring_rp = ring.read_port()
        wr_ptr = Signal(pbits)
        commit_ptr = Signal(pbits)
        rd_ptr = Signal(pbits)
        in_used = Signal(pbits)
        in_free = Signal(pbits)
        m.d.comb += [in_used.eq(wr_ptr - rd_ptr), in_free.eq(N - in_used)]
        m.d.comb += [ring_wp.addr.eq(wr_ptr[:pbits - 1]), ring_wp.data.eq(rx_byte),
                     ring_wp.en.eq(0)]

        beat = Signal(8 * B)
        nbytes = Signal(range(B + 1))
        rd_pending = Signal()
        flush = Signal()  # RESET: empty ring, beat and output FIFO (rst_cnt != 0)
        # TVALID from a register (nbytes == B), not a compare: it fans out across the
        # accelerator's loader (the compare was the start of an 8 x 8 ECP5 critical path)
        full = Signal()
        m.d.comb += [self.s_axis_tdata.eq(beat), self.s_axis_tvalid.eq(full),
                     self.s_axis_tlast.eq(0)]
        m.d.comb += ring_rp.addr.eq(rd_ptr[:pbits - 1])
        # a byte read from the ring is registered as read, then written into the beat (the
        # block RAM's output -> the beat's byte select -> its registers was an 8 x 8 ECP5 path);
        # without a reset (it is used only when byte_valid says so), so that `sluice build
        # --outreg` moves it into the block RAM's output register (with the reset it stayed a
        # fabric register, 5.83 ns behind the block: the 85F 8 x 8's slowest path with seed 5)
        byte_q = Signal(8, reset_less=True)
        byte_valid = Signal()
        can_read = (nbytes + rd_pending + byte_valid < B) & (rd_ptr != commit_ptr)
        m.d.sync += [byte_q.eq(ring_rp.data), byte_valid.eq(rd_pending)]
        with m.If(byte_valid):
            m.d.sync += [beat.word_select(nbytes[:_log2(B)], 8).eq(byte_q),
                         nbytes.eq(nbytes + 1), full.eq(nbytes == B - 1)]
        m.d.sync += rd_pending.eq(0)
        with m.If(can_read & ~rd_pending):
            m.d.sync += [rd_pending.eq(1), rd_ptr.eq(rd_ptr + 1)]
        with m.If(self.s_axis_tvalid & self.s_axis_tready):
            m.d.sync += [nbytes.eq(0), full.eq(0)]
        # (a beat is only full when no byte is on its way, so the two nbytes updates never
        # meet)

        # ------------------------------------------------------------ output FIFO
        m.submodules.out_fifo = ofifo = BufferedFIFO(width=self._out_bits + 1,
                                                     depth=self._out_depth)
        m.d.comb += [ofifo.w_data.eq(Cat(self.m_axis_tdata, self.m_axis_tlast)),
                     ofifo.w_en.eq(self.m_axis_tvalid & ~flush),
                     self.m_axis_tready.eq(ofifo.w_rdy & ~flush),
                     ofifo.r_en.eq(0)]

        # ------------------------------------------------------------ frame parser state
        cmd = Signal(8)
        length = Signal(16)
        count = Signal(16)
        crc = Signal(8)
        arg = Signal(40)  # addr + data for WRITE, addr for READ, max words for POP
        status = Signal(8)
        push_ok = Signal()
        # the frame's inter-byte timeout, and in AXI_W/AXI_AR the AXI4-Lite answer's (one
        # counter: a frame is complete before its command runs)
        timer = Signal(range(max(self._frame_timeout, self._axi_timeout) + 1))
        m.d.comb += urx.o.ready.eq(0)

        known = Signal()
        len_ok = Signal()
        m.d.comb += known.eq((cmd == P.CMD_PING) | (cmd == P.CMD_WRITE) | (cmd == P.CMD_READ) |
                             (cmd == P.CMD_PUSH) | (cmd == P.CMD_POP) | (cmd == P.CMD_RESET))
        # length check on the completed LEN (``length`` is written in LEN_HI, checked after)
        with m.Switch(cmd):
            with m.Case(P.CMD_PING, P.CMD_RESET):
                m.d.comb += len_ok.eq(length == 0)
            with m.Case(P.CMD_WRITE):
                m.d.comb += len_ok.eq(length == 5)
            with m.Case(P.CMD_READ, P.CMD_POP):
                m.d.comb += len_ok.eq(length == 1)
            with m.Case(P.CMD_PUSH):
                m.d.comb += len_ok.eq((length != 0) & (length[:_log2(B)] == 0))
            with m.Default():
                m.d.comb += len_ok.eq(1)

        # ------------------------------------------------------------ reply sender state
        rp_len = Signal(16)
        rp_idx = Signal(4)
        rp_state = Signal(32)  # link state snapshot: in_free (16), out_avail (8), flags (8)
        rp_data = Signal(32)  # READ data / PING info
        rp_ndata = Signal()  # 4 data bytes (rp_data) after the link state
        rp_words = Signal(8)  # POP: words to send
        rp_wbyte = Signal(range(W + 1))
        rp_crc = Signal(8)
        rp_fresh = Signal()  # REPLY's first cycle: take the link state and the length
        out_level = Signal(range(self._out_depth + 1))
        m.d.comb += out_level.eq(ofifo.r_level)
        m.d.comb += [utx.i.valid.eq(0), utx.i.payload.eq(0)]

        hdr = Array([Const(P.SYNC_REPLY, 8), status, rp_len[:8], rp_len[8:],
                     rp_state[0:8], rp_state[8:16], rp_state[16:24], rp_state[24:32],
                     rp_data[0:8], rp_data[8:16], rp_data[16:24], rp_data[24:32],
                     Const(0, 8), Const(0, 8), Const(0, 8), Const(0, 8)])
        hdr_byte = Signal(8)
        hdr_ok = Signal()  # hdr_byte is the byte to send now (see REPLY)
        # the next byte to send, registered: a header byte (hdr[rp_idx]) or, while the words
        # are sent (in_words), a byte of the output FIFO's head word (valid once it shows one)
        in_words = Signal()
        fifo_word = Cat(ofifo.r_data, Const(0, 8 * W - len(ofifo.r_data)))
        m.d.sync += [hdr_byte.eq(Mux(in_words, fifo_word.word_select(rp_wbyte[:_log2(W)], 8),
                                     hdr[rp_idx])),
                     hdr_ok.eq(~in_words | ofifo.r_rdy)]

        def start_reply(code, ndata=0):
            """Begin a reply with status ``code`` and ``ndata`` (0 or 1: 4 bytes of ``rp_data``);
            POP's words are in ``rp_words``/``pop_bytes`` (0 for every other command). The
            fields every reply shares (length, link state) are set in one place, REPLY's first
            cycle (``rp_fresh``), not by each caller: one set of multiplexers instead of ten."""
            return [status.eq(code), rp_ndata.eq(ndata), rp_idx.eq(0), hdr_ok.eq(0),
                    rp_fresh.eq(1)]

        # ------------------------------------------------------------ AXI4-Lite master
        m.d.comb += [self.axil_awaddr.eq(arg[:ADDR_BITS]), self.axil_araddr.eq(arg[:ADDR_BITS]),
                     self.axil_wdata.eq(arg[8:40]), self.axil_wstrb.eq(0xF)]

        pop_bytes = Signal(16)
        rst_cnt = Signal(3)
        # the accelerator's reset leaves a register (a cycle later and a cycle longer than the
        # count): it fans out to the whole accelerator, and with the count's compare in front
        # of that net it was the 4 x 4 ECP5 build's critical path; set while the bridge itself
        # is in reset, so it is the accelerator's only reset (``boards.top``)
        # flush (rst_cnt != 0, as a register: set with the count, cleared as it leaves 1)
        # gates the accelerator's output-stream TREADY, which feeds its output FIFO's level:
        # with the compare in front (bridge count -> flush -> TREADY -> the FIFO's level) it
        # was the 8 x 8 ECP5 critical path of one seed, 11.0 ns
        acc_rst_q = Signal(init=1)
        m.d.sync += acc_rst_q.eq(flush)
        m.d.comb += self.acc_rst.eq(acc_rst_q)

        with m.FSM() as fsm:
            # ---------------- receive a frame
            with m.State("SYNC"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(rx_ok & (rx_byte == P.SYNC_CMD)):
                    m.d.sync += [crc.eq(0), timer.eq(0), rp_words.eq(0), pop_bytes.eq(0)]
                    m.next = "CMD"
            for state, nxt in (("CMD", "LEN_LO"), ("LEN_LO", "LEN_HI")):
                with m.State(state):
                    m.d.comb += urx.o.ready.eq(1)
                    m.d.sync += timer.eq(timer + 1)
                    with m.If(rx_ok):
                        m.d.sync += [crc.eq(crc8_next(crc, rx_byte)), timer.eq(0)]
                        if state == "CMD":
                            m.d.sync += cmd.eq(rx_byte)
                        else:
                            m.d.sync += length[:8].eq(rx_byte)
                        m.next = nxt
                    with m.Elif(timer == self._frame_timeout):
                        m.next = "TIMEOUT"
            with m.State("LEN_HI"):
                m.d.comb += urx.o.ready.eq(1)
                m.d.sync += timer.eq(timer + 1)
                with m.If(rx_ok):
                    m.d.sync += [crc.eq(crc8_next(crc, rx_byte)), timer.eq(0),
                                 length[8:].eq(rx_byte), count.eq(0)]
                    m.next = "CHECK_LEN"
                with m.Elif(timer == self._frame_timeout):
                    m.next = "TIMEOUT"
            with m.State("CHECK_LEN"):
                # one cycle: classify the frame (the next byte is >= 4 clocks away)
                m.d.sync += push_ok.eq(0)
                with m.If(~known):
                    m.d.sync += status.eq(P.ST_COMMAND)
                with m.Elif(~len_ok):
                    m.d.sync += status.eq(P.ST_LENGTH)
                with m.Elif((cmd == P.CMD_PUSH) & (length > in_free)):
                    m.d.sync += status.eq(P.ST_FULL)
                with m.Else():
                    m.d.sync += [status.eq(P.ST_OK), push_ok.eq(cmd == P.CMD_PUSH)]
                with m.If(length == 0):
                    m.next = "CRC"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += urx.o.ready.eq(1)
                m.d.sync += timer.eq(timer + 1)
                with m.If(rx_ok):
                    m.d.sync += [crc.eq(crc8_next(crc, rx_byte)), timer.eq(0),
                                 count.eq(count + 1)]
                    with m.If(count < 5):
                        m.d.sync += arg.word_select(count[:3], 8).eq(rx_byte)
                    with m.If(push_ok):
                        m.d.comb += ring_wp.en.eq(1)
                        m.d.sync += wr_ptr.eq(wr_ptr + 1)
                    with m.If(count == length - 1):
                        m.next = "CRC"
                with m.Elif(timer == self._frame_timeout):
                    m.next = "TIMEOUT"
            with m.State("CRC"):
                m.d.comb += urx.o.ready.eq(1)
                m.d.sync += timer.eq(timer + 1)
                with m.If(rx_ok):
                    with m.If(rx_byte != crc):
                        m.d.sync += [wr_ptr.eq(commit_ptr)]  # roll back a PUSH payload
                        m.d.sync += start_reply(P.ST_CHECKSUM)
                        m.next = "REPLY"
                    with m.Elif(status != P.ST_OK):
                        m.d.sync += start_reply(status)
                        m.next = "REPLY"
                    with m.Else():
                        m.next = "EXEC"
                with m.Elif(timer == self._frame_timeout):
                    m.next = "TIMEOUT"
            with m.State("TIMEOUT"):
                m.d.sync += [wr_ptr.eq(commit_ptr)]
                m.d.sync += start_reply(P.ST_TIMEOUT)
                m.next = "REPLY"

            # ---------------- execute
            with m.State("EXEC"):
                m.d.sync += timer.eq(0)
                with m.Switch(cmd):
                    with m.Case(P.CMD_PING):
                        m.d.sync += rp_data.eq(Cat(Const(P.PROTOCOL_VERSION, 8), Const(B, 8),
                                                   Const(W, 8), Const(_log2(N), 8)))
                        m.d.sync += start_reply(P.ST_OK, ndata=1)
                        m.next = "REPLY"
                    with m.Case(P.CMD_WRITE):
                        m.d.sync += [self.axil_awvalid.eq(1), self.axil_wvalid.eq(1)]
                        m.next = "AXI_W"
                    with m.Case(P.CMD_READ):
                        m.d.sync += self.axil_arvalid.eq(1)
                        m.next = "AXI_AR"
                    with m.Case(P.CMD_PUSH):
                        m.d.sync += commit_ptr.eq(wr_ptr)
                        m.d.sync += start_reply(P.ST_OK)
                        m.next = "REPLY"
                    with m.Case(P.CMD_POP):
                        # words to send: registered first (keeps min -> length off one path)
                        m.d.sync += rp_words.eq(Mux(arg[:8] < out_level, arg[:8], out_level))
                        m.next = "POP"
                    with m.Case(P.CMD_RESET):
                        m.d.sync += [rst_cnt.eq(7), flush.eq(1), wr_ptr.eq(0),
                                     commit_ptr.eq(0), rd_ptr.eq(0), nbytes.eq(0), full.eq(0)]
                        m.next = "RESETTING"
            with m.State("POP"):
                # pop_k * W as shifts and adds (a constant multiply; no DSP on the path)
                m.d.sync += pop_bytes.eq(sum(rp_words << i for i in range(W.bit_length())
                                             if W >> i & 1))
                m.next = "POP_REPLY"
            with m.State("POP_REPLY"):
                m.d.sync += start_reply(P.ST_OK)
                m.next = "REPLY"
            with m.State("RESETTING"):
                # hold the accelerator in reset and drain the output FIFO
                m.d.comb += ofifo.r_en.eq(1)
                with m.If(rst_cnt != 0):
                    m.d.sync += [rst_cnt.eq(rst_cnt - 1), flush.eq(rst_cnt != 1)]
                with m.Elif(~ofifo.r_rdy):
                    m.d.sync += [rd_ptr.eq(0), nbytes.eq(0), full.eq(0)]
                    m.d.sync += start_reply(P.ST_OK)
                    m.next = "REPLY"
            with m.State("AXI_W"):
                m.d.sync += timer.eq(timer + 1)
                with m.If(self.axil_awvalid & self.axil_awready):
                    m.d.sync += self.axil_awvalid.eq(0)
                with m.If(self.axil_wvalid & self.axil_wready):
                    m.d.sync += self.axil_wvalid.eq(0)
                m.d.comb += self.axil_bready.eq(~self.axil_awvalid & ~self.axil_wvalid)
                with m.If(self.axil_bready & self.axil_bvalid):
                    m.d.sync += start_reply(Mux(self.axil_bresp == 0, P.ST_OK, P.ST_AXI))
                    m.next = "REPLY"
                with m.Elif(timer == self._axi_timeout):
                    m.d.sync += [self.axil_awvalid.eq(0), self.axil_wvalid.eq(0)]
                    m.d.sync += start_reply(P.ST_AXI)
                    m.next = "REPLY"
            with m.State("AXI_AR"):
                m.d.sync += timer.eq(timer + 1)
                with m.If(self.axil_arvalid & self.axil_arready):
                    m.d.sync += self.axil_arvalid.eq(0)
                m.d.comb += self.axil_rready.eq(~self.axil_arvalid)
                with m.If(self.axil_rready & self.axil_rvalid):
                    m.d.sync += rp_data.eq(self.axil_rdata)
                    m.d.sync += start_reply(Mux(self.axil_rresp == 0, P.ST_OK, P.ST_AXI),
                                            ndata=1)
                    m.next = "REPLY"
                with m.Elif(timer == self._axi_timeout):
                    m.d.sync += self.axil_arvalid.eq(0)
                    m.d.sync += start_reply(P.ST_AXI)
                    m.next = "REPLY"

            # ---------------- send the reply
            # header: SYNC STATUS LEN_LO LEN_HI, then 4 link-state bytes, then rp_ndata bytes
            # of rp_data, then rp_words words from the output FIFO, then the CRC.
            # The header byte rp_idx selects is registered (`hdr_byte`, valid in `hdr_ok` a
            # cycle after rp_idx or the reply's fields change): the 16-way select in front of
            # the CRC update was the bridge's longest path. A byte takes 10 UART bits, so the
            # cycle this costs per byte is nothing.
            with m.State("REPLY"):
                with m.If(rp_fresh):
                    # the link state (the words POP sends no longer count as waiting); the
                    # SYNC byte goes out a cycle later (hdr_ok), and the fields are first read
                    # for the byte after it
                    avail = Signal(range(self._out_depth + 1), name="avail_after")
                    m.d.comb += avail.eq(out_level - rp_words)
                    m.d.sync += [rp_fresh.eq(0),
                                 rp_len.eq(P.LINK_STATE_BYTES + Mux(rp_ndata, 4, 0) + pop_bytes),
                                 rp_wbyte.eq(0),
                                 rp_state[0:16].eq(in_free),
                                 rp_state[16:24].eq(Mux(avail > 255, 255, avail)),
                                 rp_state[24:32].eq(Cat(self.done, rx_error)),
                                 rp_crc.eq(0), rx_error.eq(0)]
                m.d.comb += [utx.i.valid.eq(hdr_ok), utx.i.payload.eq(hdr_byte)]
                with m.If(hdr_ok & utx.i.ready):
                    with m.If(rp_idx != 0):
                        m.d.sync += rp_crc.eq(crc8_next(rp_crc, hdr_byte))
                    m.d.sync += [rp_idx.eq(rp_idx + 1), hdr_ok.eq(0)]
                    with m.If(rp_idx == Mux(rp_ndata, 11, 7)):
                        with m.If(rp_words != 0):
                            m.next = "REPLY_WBYTES"
                        with m.Else():
                            m.next = "REPLY_CRC"
            with m.State("REPLY_WBYTES"):
                # the output FIFO's head word, a byte at a time (registered in hdr_byte as the
                # header's bytes are; the FIFO's output register holds the word until the
                # last byte pops it, and hdr_ok waits for the next word to be there)
                m.d.comb += [utx.i.valid.eq(hdr_ok), utx.i.payload.eq(hdr_byte)]
                with m.If(hdr_ok & utx.i.ready):
                    m.d.sync += [rp_crc.eq(crc8_next(rp_crc, hdr_byte)),
                                 rp_wbyte.eq(rp_wbyte + 1), hdr_ok.eq(0)]
                    with m.If(rp_wbyte == W - 1):
                        m.d.comb += ofifo.r_en.eq(1)
                        m.d.sync += [rp_wbyte.eq(0), rp_words.eq(rp_words - 1)]
                        with m.If(rp_words == 1):
                            m.next = "REPLY_CRC"
            with m.State("REPLY_CRC"):
                m.d.comb += [utx.i.valid.eq(1), utx.i.payload.eq(rp_crc)]
                with m.If(utx.i.ready):
                    m.next = "SYNC"
        m.d.comb += in_words.eq(fsm.ongoing("REPLY_WBYTES"))
        return m
