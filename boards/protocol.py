"""The UART bridge protocol: constants shared by the gateware (``bridge.py``) and the host
(``host.py``). The frame format is described in ``boards/README.md``.

Host -> board:  ``0xA5  CMD  LEN_lo LEN_hi  PAYLOAD[LEN]  CRC``
Board -> host:  ``0x5A  STATUS  LEN_lo LEN_hi  PAYLOAD[LEN]  CRC``

CRC is CRC-8 (polynomial x^8 + x^2 + x + 1, i.e. 0x07, initial value 0, no reflection, no final
xor) over every byte after the sync byte up to the end of the payload. Every reply payload starts
with the 4-byte link state (``IN_FREE`` lo/hi, ``OUT_AVAIL``, ``FLAGS``), then the command's data.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
SYNC_CMD = 0xA5
SYNC_REPLY = 0x5A

# commands
CMD_PING = 0x00  # LEN 0; reply data: version, stream_bytes, word_bytes, log2(in_buf_bytes)
CMD_WRITE = 0x01  # LEN 5: addr, data (4 bytes LE); AXI4-Lite write
CMD_READ = 0x02  # LEN 1: addr; reply data: 4 bytes LE
CMD_PUSH = 0x03  # LEN n * stream_bytes (1 <= n, LEN <= IN_FREE): input-stream beats, LE
CMD_POP = 0x04  # LEN 1: max words; reply data: k <= max output words of word_bytes each
CMD_RESET = 0x05  # LEN 0: reset the accelerator and empty the bridge's buffers
COMMANDS = {CMD_PING: "PING", CMD_WRITE: "WRITE", CMD_READ: "READ", CMD_PUSH: "PUSH",
            CMD_POP: "POP", CMD_RESET: "RESET"}

# reply status codes
ST_OK = 0x00
ST_CHECKSUM = 0x01  # the frame's CRC was wrong; the command was not executed
ST_COMMAND = 0x02  # unknown command; not executed
ST_LENGTH = 0x03  # LEN is not valid for the command; not executed
ST_FULL = 0x04  # PUSH larger than the free space of the input buffer; not executed
ST_AXI = 0x05  # the AXI4-Lite transaction timed out or answered SLVERR/DECERR
ST_TIMEOUT = 0x06  # the frame stopped arriving part-way (inter-byte timeout); dropped
STATUS_NAMES = {ST_OK: "OK", ST_CHECKSUM: "bad checksum", ST_COMMAND: "unknown command",
                ST_LENGTH: "bad length", ST_FULL: "input buffer full", ST_AXI: "AXI4-Lite error",
                ST_TIMEOUT: "frame timeout"}

LINK_STATE_BYTES = 4
# FLAGS bits
FLAG_DONE = 0  # the accelerator's done output
FLAG_RX_ERROR = 1  # a byte was lost (framing error or overrun) since the last reply

MAX_POP = 255


def crc8_update(crc: int, byte: int) -> int:
    crc ^= byte
    for _ in range(8):
        crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = crc8_update(crc, b)
    return crc


def word_bytes(out_bits: int) -> int:
    """Bytes per output word on the wire: TDATA and TLAST (bit ``out_bits``), little-endian."""
    return (out_bits + 1 + 7) // 8


def encode_command(cmd: int, payload: bytes = b"") -> bytes:
    body = bytes([cmd, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    return bytes([SYNC_CMD]) + body + bytes([crc8(body)])
