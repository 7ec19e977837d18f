"""Frame encoding and the CRC the gateware and the host share."""

from sluice.boards import protocol as P


def test_crc8_check_value():
    # CRC-8 (poly 0x07, init 0, no reflection): the catalogue check value of "123456789"
    assert P.crc8(b"123456789") == 0xF4
    assert P.crc8(b"") == 0


def test_encode_command():
    f = P.encode_command(P.CMD_WRITE, bytes([0x10, 1, 2, 3, 4]))
    assert f[0] == P.SYNC_CMD and f[1] == P.CMD_WRITE and f[2:4] == b"\x05\x00"
    assert f[4:9] == bytes([0x10, 1, 2, 3, 4])
    assert f[-1] == P.crc8(f[1:-1])


def test_word_bytes_hold_tlast():
    assert P.word_bytes(40) == 6
    assert P.word_bytes(56) == 8
    assert P.word_bytes(63) == 8
    assert P.word_bytes(64) == 9
