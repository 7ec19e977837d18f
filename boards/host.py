"""Host side of the UART bridge: frames, a byte transport, and running a layer on a board.

``Link`` speaks the bridge protocol (``boards/protocol.py``) over any *transport*: an object with
``write(bytes)`` and ``read(n) -> bytes`` (fewer than ``n`` bytes means a timeout).
``SerialTransport`` opens a real port with pyserial; ``sluice.boards.simlink.SimTransport``
talks to the bridge in the Amaranth simulator. ``run_layer`` drives one layer file through the
same host sequence the cocotb testbenches use (``sluice.sim.host``: layer -> jobs of register
writes and input beats; output words -> ``y`` and ``gate``).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

from sluice.boards import protocol as P
from sluice.errors import SluiceError
from sluice.hw.params import ID_GATING_BIT, ID_STACKING_BIT, VERSION


class BridgeError(SluiceError):
    """The board answered with an error status, garbage, or not at all."""


# ---------------------------------------------------------------------------------------------
# transports


class SerialTransport:
    """A serial port through pyserial (8N1, no flow control)."""

    def __init__(self, port: str, baud: int, timeout: float = 1.0):
        try:
            import serial  # pyserial
        except ImportError:
            raise SluiceError(f"--port {port}: the Python module 'serial' (pyserial) is not "
                              "installed; pip install pyserial") from None
        try:
            self._s = serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1,
                                    timeout=timeout, rtscts=False, xonxoff=False)
        except (serial.SerialException, OSError) as e:
            raise SluiceError(f"--port {port}: cannot open the serial port: {e}") from None
        self._s.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._s.write(data)
        self._s.flush()

    def read(self, n: int) -> bytes:
        return self._s.read(n)

    def close(self) -> None:
        self._s.close()


# ---------------------------------------------------------------------------------------------
# the protocol


@dataclass
class LinkState:
    in_free: int = 0  # free bytes in the board's input ring buffer
    out_avail: int = 0  # output words waiting in the board's FIFO (after this reply)
    done: bool = False  # the accelerator's done output
    rx_error: bool = False  # the board lost a byte since the previous reply


@dataclass
class BridgeInfo:
    version: int
    stream_bytes: int
    word_bytes: int
    in_buf_bytes: int


class Link:
    """One bridge: framed commands, replies checked (sync, CRC, status), retried when the board
    says the command frame arrived damaged (it was then not executed)."""

    def __init__(self, transport, *, retries: int = 3, max_push: int | None = None):
        self.t = transport
        self.retries = retries
        self.state = LinkState()
        self.info: BridgeInfo | None = None
        self.max_push = max_push
        self.frames = 0
        self.retried = 0

    # -- frames
    def _read_exact(self, n: int, what: str) -> bytes:
        data = self.t.read(n)
        if len(data) != n:
            raise BridgeError(f"no reply from the board ({what}: got {len(data)} of {n} bytes); "
                              "check the port, the baud rate and that the bitstream is loaded")
        return data

    def _reply(self) -> tuple[int, bytes]:
        for _ in range(64):  # skip line noise before the sync byte
            b = self._read_exact(1, "sync")
            if b[0] == P.SYNC_REPLY:
                break
        else:
            raise BridgeError("no reply sync byte (0x5A) within 64 bytes")
        head = self._read_exact(3, "header")
        n = head[1] | head[2] << 8
        body = self._read_exact(n + 1, "payload")
        if P.crc8(head + body[:-1]) != body[-1]:
            raise BridgeError("reply CRC mismatch (line noise or wrong baud rate)")
        payload = body[:-1]
        if len(payload) < P.LINK_STATE_BYTES:
            raise BridgeError(f"reply too short ({len(payload)} bytes)")
        flags = payload[3]
        self.state = LinkState(in_free=payload[0] | payload[1] << 8, out_avail=payload[2],
                               done=bool(flags >> P.FLAG_DONE & 1),
                               rx_error=bool(flags >> P.FLAG_RX_ERROR & 1))
        return head[0], payload[P.LINK_STATE_BYTES:]

    def command(self, cmd: int, payload: bytes = b"") -> bytes:
        """Send one command; return the reply's data (after the link state)."""
        for attempt in range(self.retries + 1):
            self.t.write(P.encode_command(cmd, payload))
            self.frames += 1
            status, data = self._reply()
            if status == P.ST_OK:
                return data
            if status in (P.ST_CHECKSUM, P.ST_TIMEOUT) and attempt < self.retries:
                self.retried += 1
                continue  # the board did not execute it: safe to send again
            name = P.COMMANDS.get(cmd, f"0x{cmd:02x}")
            raise BridgeError(f"board refused {name}: "
                              f"{P.STATUS_NAMES.get(status, f'status 0x{status:02x}')}")
        raise AssertionError("unreachable")

    # -- commands
    def ping(self) -> BridgeInfo:
        d = self.command(P.CMD_PING)
        if len(d) != 4:
            raise BridgeError(f"PING reply has {len(d)} data bytes, expected 4")
        self.info = BridgeInfo(version=d[0], stream_bytes=d[1], word_bytes=d[2],
                               in_buf_bytes=1 << d[3])
        if self.info.version != P.PROTOCOL_VERSION:
            raise BridgeError(f"bridge protocol version {d[0]}, this host speaks "
                              f"{P.PROTOCOL_VERSION}")
        return self.info

    def write(self, addr: int, value: int) -> None:
        self.command(P.CMD_WRITE, bytes([addr]) + (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def read(self, addr: int) -> int:
        d = self.command(P.CMD_READ, bytes([addr]))
        if len(d) != 4:
            raise BridgeError(f"READ reply has {len(d)} data bytes, expected 4")
        return int.from_bytes(d, "little")

    def write_reg(self, name: str, value: int) -> None:
        from sluice.hw.params import REG

        self.write(REG[name].addr, value)

    def read_reg(self, name: str) -> int:
        from sluice.hw.params import REG

        return self.read(REG[name].addr)

    def push(self, data: bytes) -> None:
        self.command(P.CMD_PUSH, data)

    def pop(self, max_words: int = P.MAX_POP) -> list[int]:
        """Up to ``max_words`` raw output words (TDATA, and TLAST at bit ``out_bits``)."""
        wb = self.info.word_bytes
        d = self.command(P.CMD_POP, bytes([min(max_words, P.MAX_POP)]))
        if len(d) % wb:
            raise BridgeError(f"POP reply of {len(d)} bytes is not whole {wb}-byte words")
        return [int.from_bytes(d[i:i + wb], "little") for i in range(0, len(d), wb)]

    def reset(self) -> None:
        self.command(P.CMD_RESET)


# ---------------------------------------------------------------------------------------------
# running jobs and layers


def beats_to_bytes(beats, stream_bytes: int) -> bytes:
    return b"".join(int(b).to_bytes(stream_bytes, "little") for b in beats)


class BoardRunner:
    """Runs accelerator jobs over a :class:`Link` for an accelerator with ``params``."""

    def __init__(self, link: Link, params, *, runner_name: str = "board",
                 max_idle_polls: int = 2000, reset: bool = True):
        self.link = link
        self.params = params
        self.runner_name = runner_name
        self.max_idle_polls = max_idle_polls
        info = link.ping()
        if reset:  # whatever an earlier session left half-done (a job, buffered beats) goes
            link.reset()
        ident = link.read_reg("ID")
        if ident >> 24 != VERSION:  # the register map or stream format has changed since
            raise BridgeError(f"the board's accelerator speaks register map version "
                              f"{ident >> 24}, this host version {VERSION} (hw/REGMAP.md): "
                              f"rebuild and program the bitstream (sluice build --board NAME "
                              f"--program)")
        if not ident >> ID_GATING_BIT & 1 and params.gating:  # a --dense-only bitstream
            params = self.params = dataclasses.replace(params, gating=False)
        # with or without the walker's jump over the rows between stacked images (board
        # builds leave it out unless built with --stacking 1): the host's jobs follow it
        stacking = bool(ident >> ID_STACKING_BIT & 1)
        if stacking != params.stacking:
            params = self.params = dataclasses.replace(params, stacking=stacking)
        if info.stream_bytes != params.stream_bytes:
            raise BridgeError(f"the board's stream is {info.stream_bytes} bytes wide, the host "
                              f"expects {params.stream_bytes} (--rows/--cols of the bitstream?)")
        if info.word_bytes != P.word_bytes(params.out_bits):
            raise BridgeError(f"the board's output words are {info.word_bytes} bytes, the host "
                              f"expects {P.word_bytes(params.out_bits)} (--rows/--cols?)")
        rows, cols = ident >> 8 & 0xFF, ident & 0xFF
        if (rows, cols) != (params.rows, params.cols):
            raise BridgeError(f"the board's accelerator is {rows}x{cols}, the host was told "
                              f"{params.rows}x{params.cols} (pass --rows {rows} --cols {cols})")

    def _split(self, raw: int) -> tuple[int, int]:
        ob = self.params.out_bits
        return raw & ((1 << ob) - 1), raw >> ob & 1

    def run_job(self, writes, beats) -> tuple[list[int], dict, int, int]:
        """One job: ``writes`` (``(addr, value)``, the last one CTRL.START), then ``beats``
        streamed in while the result words are drained, up to the TLAST terminator.

        Returns ``(words, counters, status, error)``; ``words`` excludes the terminator, as in
        ``sluice.hw.simulate``.
        """
        from sluice.hw.params import COUNTERS, REG, STATUS_FIELDS

        bit = {name: lsb for name, lsb, _, _ in STATUS_FIELDS}
        link, B = self.link, self.params.stream_bytes
        data = beats_to_bytes(beats, B)
        cap = link.info.in_buf_bytes if link.max_push is None else link.max_push
        for addr, value in writes:
            link.write(addr, value)
        status = link.read(REG["STATUS"].addr)
        if status & (1 << bit["ERROR"]) and not status & (1 << bit["BUSY"]):
            return [], {}, status, link.read(REG["ERROR"].addr)  # refused: no stream traffic
        sent, words, ended, idle = 0, [], False, 0
        while not ended:
            moved = False
            room = min(link.state.in_free, cap, len(data) - sent) // B * B
            if room:
                link.push(data[sent:sent + room])
                sent += room
                moved = True
            if link.state.out_avail or sent == len(data) or not room:
                for raw in link.pop():
                    moved = True
                    w, last = self._split(raw)
                    if last:
                        ended = True  # the terminating word carries no results
                        break
                    words.append(w)
            if moved:
                idle = 0
                continue
            idle += 1
            if idle > self.max_idle_polls:
                status = link.read(REG["STATUS"].addr)
                raise BridgeError(f"the accelerator stopped: {sent} of {len(data)} input bytes "
                                  f"sent, {len(words)} words out, no TLAST "
                                  f"(STATUS=0x{status:x}, "
                                  f"ERROR=0x{link.read(REG['ERROR'].addr):x})")
        for _ in range(self.max_idle_polls):
            status = link.read(REG["STATUS"].addr)
            if not status & (1 << bit["BUSY"]):
                break
        else:
            raise BridgeError(f"the accelerator stayed busy after TLAST (STATUS=0x{status:x})")
        if sent != len(data):
            raise BridgeError(f"TLAST after {sent} of {len(data)} input bytes")
        error = link.read(REG["ERROR"].addr)
        counters = {name.lower(): link.read(REG[name].addr) for name, _ in COUNTERS}
        return words, counters, status, error

    def run_layer(self, layer, *, dense: bool = False):
        """Every job of ``layer`` on the board; returns a ``Result`` (SPEC section 5)."""
        from sluice.model.layerfile import Result

        host = host_sequence()
        jobs = host.layer_jobs(layer, self.params, dense=dense)
        y, gate = host.new_outputs(layer)
        total = {}
        for n, job in enumerate(jobs):
            words, counters, status, error = self.run_job(job.writes, job.beats)
            if error:
                raise BridgeError(f"{layer.name}: job {n} refused by the accelerator, "
                                  f"ERROR=0x{error:x}")
            host.decode_words(layer, job, words, y, gate, self.params)
            for k, v in counters.items():
                total[k] = total.get(k, 0) + v
        cycles = total.pop("cycles", 0)
        return Result(y=y, gate=gate, cycles=cycles, runner=self.runner_name,
                      rows=self.params.rows, cols=self.params.cols, counters=total)


def host_sequence():
    """The shared host sequence (``sluice.sim.host``): ``layer_jobs``, ``new_outputs``,
    ``decode_words``."""
    try:
        return importlib.import_module("sluice.sim.host")
    except ModuleNotFoundError as e:
        if e.name != "sluice.sim.host":
            raise
        raise SluiceError("the host sequence sluice.sim.host is not part of this build; "
                          "board runs need it") from None
