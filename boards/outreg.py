"""Block-RAM output registers for ECP5 builds: a pass over yosys's JSON netlist.

An ECP5 block RAM (DP16KD) read without its output register (``REGMODE NOREG``, all yosys
infers) puts its data out 5.83 ns after the clock edge, the slowest clock-to-out on the part: at
8 x 8 on the ULX3S 85F with 8-byte activation words that, and the route to the register behind
it, set the clock (86-92 MHz, ``boards/README.md``). The block has an output register of its own
(``REGMODE OUTREG``) that yosys does not infer. This pass moves into it every fabric flip-flop
that is a block-RAM read port's only load, bit for bit, where that leaves the design's function
unchanged:

- the port reads 18 bits or fewer on its own data pins (DO*A* or DO*B*), or is the read port
  of yosys's 36-bit pseudo-dual-port mapping (port B 36 bits wide, its word on DOA and DOB;
  both ports' register settings are then set alike, whichever controls which half); its reset
  input is tied to 0 and its clock not inverted (both ports' in 36-bit mode, on one clock);
- every used data pin of the port drives exactly one load, the data input of a flip-flop on the
  port's clock (not inverted), with no set or reset (LSR tied off or unused), initial value 0,
  and all of them with the same clock enable (or none): that enable becomes the port's output
  clock enable (OCE).

The block's data latch holds the word read at the last enabled clock edge, as its data pins did
without the output register; the output register takes it at every clock edge its OCE is high,
as the flip-flop took its data pins at every edge its enable was high. So each absorbed
flip-flop's output is the same signal at every cycle, and the rest of the netlist is untouched.
A port with any other load on its data (logic, two flip-flops, a top-level port) stays as it is.
``tests/boards/test_outreg.py`` checks the pass on netlists of small designs.
"""

from __future__ import annotations

import json
from pathlib import Path

from sluice.fileio import atomic_write_text

BRAM = "DP16KD"
FF = "TRELLIS_FF"
PORT_BITS = 18  # a true dual-port DP16KD port's data pins: DO{A,B}0..17


def _param(cell, name, default=""):
    """A cell parameter as a string, stripped (yosys pads some string parameters with a space)."""
    return str(cell["parameters"].get(name, default)).strip()


def _int_param(cell, name) -> int:
    """An integer parameter (yosys's JSON writes them as 32-bit binary strings)."""
    v = _param(cell, name, "0")
    return int(v, 2) if set(v) <= {"0", "1"} else int(v)


def _loads(module) -> dict:
    """net bit -> [(cell name, port)] of every input pin on it; top-level output ports count as
    a load named ``None``."""
    loads: dict = {}
    for name, cell in module["cells"].items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if dirs.get(port) in ("input", "inout"):
                for b in bits:
                    if isinstance(b, int):
                        loads.setdefault(b, []).append((name, port))
    for pname, port in module.get("ports", {}).items():
        if port["direction"] in ("output", "inout"):
            for b in port["bits"]:
                if isinstance(b, int):
                    loads.setdefault(b, []).append((None, pname))
    return loads


def _tied_low(bits) -> bool:
    return bits in (["0"], [])


def _wide(c) -> bool:
    """Whether ``c`` is in pseudo-dual-port mode: yosys maps its 36-bit PDPW16KD onto a DP16KD
    with port B 36 bits wide."""
    return _int_param(c, "DATA_WIDTH_B") > PORT_BITS


def _read_pins(c, side) -> list[str] | None:
    """The data pins of ``c``'s port ``side``, or None for a port that reads nothing of its own:
    in pseudo-dual-port mode (``_wide``) port B reads all 36 bits, on DOA0..17 and DOB0..17, and
    port A only writes."""
    wide = _wide(c)
    if side == "B":
        return [f"DOB{i}" for i in range(PORT_BITS)] + ([f"DOA{i}" for i in range(PORT_BITS)]
                                                          if wide else [])
    return None if wide or _int_param(c, "DATA_WIDTH_A") > PORT_BITS else \
        [f"DOA{i}" for i in range(PORT_BITS)]


def _sides(c, side) -> str:
    """The ports whose output-register settings a read on ``side`` sets: both in pseudo-dual-port
    mode (each half of the 36-bit word leaves through one port's pins; both ports then get the
    same register mode, clock enable and clock, whichever controls which half)."""
    return "AB" if side == "B" and _wide(c) else side


def _absorbable(module, loads, bram, side):
    """(``{data pin: flip-flop name}``, the flip-flops' clock enable net or ``"1"``) for the
    flip-flops that ``bram``'s port ``side`` can take into its output register, with every used
    data pin in it; None where the port must stay as it is (see the module docstring) or reads
    nothing."""
    cells = module["cells"]
    c = cells[bram]
    conn = c["connections"]
    pins = _read_pins(c, side)
    if pins is None:
        return None
    sides = _sides(c, side)
    clk = conn.get(f"CLK{side}")
    for s in sides:
        if (_param(c, f"REGMODE_{s}", "NOREG") != "NOREG"
                or not _tied_low(conn.get(f"RST{s}", ["0"]))
                or _param(c, f"CLK{s}MUX", f"CLK{s}") != f"CLK{s}" or conn.get(f"CLK{s}") != clk):
            return None
    taken, enables = {}, set()
    for pin in pins:
        bits = conn.get(pin, [])
        if len(bits) != 1 or not isinstance(bits[0], int):
            continue  # unconnected or constant
        ld = loads.get(bits[0], [])
        if not ld:
            continue  # a data pin nobody reads
        if len(ld) != 1 or ld[0][0] is None or ld[0][1] != "DI":
            return None
        ff = cells[ld[0][0]]
        fc = ff["connections"]
        if ff["type"] != FF or fc.get("CLK") != clk or _param(ff, "CLKMUX", "CLK") != "CLK":
            return None
        if not (_param(ff, "LSRMUX", "LSR") == "0" or _tied_low(fc.get("LSR", ["0"]))):
            return None
        if _param(ff, "REGSET", "RESET") != "RESET":
            return None
        cemux = _param(ff, "CEMUX", "CE")
        ce = fc.get("CE", ["1"])
        if cemux == "1" or (cemux == "CE" and ce == ["1"]):
            enables.add("1")
        elif cemux == "CE" and len(ce) == 1 and isinstance(ce[0], int):
            enables.add(ce[0])
        else:
            return None
        taken[pin] = ld[0][0]
    if not taken or len(enables) != 1:
        return None
    return taken, enables.pop()


def _used(c, side, loads) -> bool:
    """Whether anything reads port ``side``'s data pins."""
    return any(isinstance(b, int) and loads.get(b)
               for pin in (_read_pins(c, side) or []) for b in c["connections"].get(pin, []))


def absorb(netlist: dict) -> dict:
    """Move flip-flops into block-RAM output registers in every module of a yosys JSON netlist,
    in place. Returns ``{"ports": n, "flip_flops": n, "kept": n}``: the block-RAM read ports
    given an output register, the flip-flops removed, the read ports left without one (their
    data has another load)."""
    stats = {"ports": 0, "flip_flops": 0, "kept": 0}
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        brams = [n for n, c in cells.items() if c["type"] == BRAM]
        if not brams:
            continue
        loads = _loads(module)
        for bram in brams:
            for side in "AB":
                found = _absorbable(module, loads, bram, side)
                if found is None:
                    stats["kept"] += _used(cells[bram], side, loads)
                    continue
                taken, enable = found
                c = cells[bram]
                for s in _sides(c, side):
                    c["parameters"][f"REGMODE_{s}"] = "OUTREG"
                    c["connections"][f"OCE{s}"] = [enable]
                for pin, ff_name in taken.items():
                    ff = cells.pop(ff_name)
                    c["connections"][pin] = list(ff["connections"]["Q"])
                stats["ports"] += 1
                stats["flip_flops"] += len(taken)
    return stats


def absorb_file(path: Path) -> dict:
    """:func:`absorb` on a yosys JSON file, rewritten in place (atomically)."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    stats = absorb(netlist)
    atomic_write_text(path, json.dumps(netlist))
    return stats


def stats_path(netlist: Path) -> Path:
    """Where :func:`main` writes the pass's counts for ``NAME.json``: ``NAME.outreg.json``."""
    netlist = Path(netlist)
    return netlist.with_name(netlist.stem + ".outreg.json")


def main(argv=None) -> int:
    """``python -m sluice.boards.outreg NETLIST.json``: the pass on a yosys JSON netlist, in
    place (a board build's script runs it between yosys and nextpnr), its counts in
    ``NETLIST.outreg.json``. Exit status 2 with a one-line error for a file it cannot use."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sluice.boards.outreg NETLIST.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        stats = absorb_file(path)
    except FileNotFoundError:
        print(f"{path}: no such netlist", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError) as e:
        print(f"{path}: not a yosys JSON netlist ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    atomic_write_text(stats_path(path), json.dumps(stats) + "\n")
    print(f"{path.name}: {stats['flip_flops']} flip-flops into the output registers of "
          f"{stats['ports']} block-RAM read ports ({stats['kept']} kept without)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
