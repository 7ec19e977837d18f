"""Estimated register-to-register delays of a synthesised ECP5 netlist, before place and route.

nextpnr reports one critical path per clock, after a route that takes up to two hours for the
8 x 8 build on the 85F; this walks the netlist yosys hands to nextpnr (the build folder's
``NAME.json``) and estimates every endpoint's arrival time with a fixed delay per cell and per
net between slices, so every slow path class shows up in seconds, grouped by the register (or
block RAM / DSP input) it ends in. The delays are the ECP5 speed-6 figures nextpnr reported on
the routed 8 x 8 critical path (clock-to-out 0.52 ns, LUT4 0.24, PFUMX/L6MUX21 0.17-0.26, a
carry cell's entry 0.45 and exit 0.44), with every net that leaves a slice charged the average
routed net delay of that path (``NET_NS``), and a net to or from a DSP block what the routed
4 x 8 critical path spent on those (``DSP_NET_NS``). The figures are estimates for ranking
paths; only a routed build's Fmax is a measurement.

    python -m sluice.boards.depth build/boards/NAME/NAME.json [--top N] [--over NS] [--path NAME]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import NamedTuple

from sluice.errors import SluiceError

NET_NS = 0.8        # a net between slices (the routed 8 x 8 critical path averaged 0.79)
CLK_Q_NS = 0.52     # TRELLIS_FF clock to out
LUT_NS = 0.24
MUX_NS = 0.22       # PFUMX, L6MUX21
CARRY_IN_NS = 0.45  # a CCU2C's A/B/C/D input to its carry out
CARRY_NS = 0.03     # carry in to carry out, per CCU2C
CARRY_OUT_NS = 0.44  # carry in to sum out
BRAM_NS = 3.9       # DP16KD clock to data out (no output register)
LUTRAM_NS = 0.5     # TRELLIS_DPR16X4 read address to data out
MULT_NS = 3.9       # MULT18X18D, unregistered (as nextpnr reported it on the 4 x 8 build)
# a net out of a MULT18X18D, or into one from a driver with other sinks too: the DSP blocks
# sit in a few fixed rows, and the routed 4 x 8 critical path had 3.24-3.67 ns into an
# element's multiplier from a register shared with the systolic pass-through and 3.62-4.09 ns
# out of it; a register that feeds only its DSP block is placed beside it (NET_NS)
DSP_NET_NS = 3.5

# inputs fed from the same slice without a routed net
_LOCAL = {("PFUMX", "ALUT"), ("PFUMX", "BLUT"), ("L6MUX21", "D0"), ("L6MUX21", "D1"),
          ("CCU2C", "CIN")}
_ENDPOINT_TYPES = {"TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4", "TRELLIS_IO"}


def _mult_regs(c) -> tuple[bool, bool]:
    """(inputs registered, output registered) of a MULT18X18D cell (the board builds use the
    block's own registers, ``hw/ecp5.py``): a registered side is a path end like a
    flip-flop's (its clock-to-out taken as a flip-flop's: the estimate has no figure of its
    own for the block's registers)."""
    prm = c.get("parameters", {})
    return (prm.get("REG_INPUTA_CLK", "NONE") != "NONE",
            any(prm.get(k, "NONE") != "NONE" for k in ("REG_OUTPUT_CLK", "REG_PIPELINE_CLK")))


def _net(sink_type, sink_port, driver_type, fanout=1):
    """The delay charged to a net: none inside a slice, more out of a DSP block and into one
    from a driver with other sinks."""
    if (sink_type, sink_port) in _LOCAL:
        return 0.0
    if driver_type == "MULT18X18D" or sink_type == "MULT18X18D" and fanout > 1:
        return DSP_NET_NS
    return NET_NS


def _stem(name):
    """A register's name without yosys's bit and mapping suffixes: ``acc.x_TRELLIS_FF_Q_5`` ->
    ``acc.x``."""
    return re.sub(r"(_TRELLIS_FF_Q|_DP16KD|_TRELLIS_DPR16X4|_SB_DFF[A-Z]*_Q|\$).*$", "", name)


def top_module(netlist, path):
    """The top module of a yosys JSON netlist (the one with the ``top`` attribute)."""
    mods = netlist.get("modules", {})
    tops = [m for m, v in mods.items() if v.get("attributes", {}).get("top")]
    if len(tops) != 1:
        raise SluiceError(f"{path}: not a synthesised netlist (no single top module)")
    return mods[tops[0]]


def cell_src(cell):
    """A cell's first source location outside the techmap libraries (``top.py:123``)."""
    for loc in cell.get("attributes", {}).get("src", "").split("|"):
        if loc and not loc.startswith("/share/"):
            return loc.rsplit("/", 1)[-1]
    return ""


def connectivity(cells):
    """(driver, sinks) of a flattened module's cells: net bit -> (cell, output port), and net
    bit -> the set of cells it feeds (a sign bit on several pins of one DSP: one)."""
    driver, sinks = {}, {}
    for name, c in cells.items():
        for port, d in c.get("port_directions", {}).items():
            for bit in c["connections"].get(port, []):
                if not isinstance(bit, int):
                    continue
                if d == "output":
                    driver[bit] = (name, port)
                elif d == "input":
                    sinks.setdefault(bit, set()).add(name)
    return driver, sinks


class Endpoint(NamedTuple):
    ns: float    # estimated worst arrival, ns after the clock edge
    inputs: int  # register bits (and block RAM inputs) under this name
    src: str     # where the register is defined
    path: list   # the worst path, (cell, source, arrival ns) from its start


def arrivals(netlist, path="netlist"):
    """``{endpoint name: Endpoint}`` for every register, block RAM and LUT RAM input."""
    cells = top_module(netlist, path)["cells"]
    driver, sinks = connectivity(cells)
    fanout = {bit: len(names) for bit, names in sinks.items()}
    memo = {}
    via = {}  # (cell, output port) -> the (cell, output port) its worst input came from

    def start(name, c):
        t = c["type"]
        if t == "TRELLIS_FF":
            return CLK_Q_NS
        if t == "DP16KD":
            return BRAM_NS
        return 0.0  # IO, constants

    def out_time(name, port):
        key = (name, port)
        if key in memo:
            return memo[key]
        memo[key] = 0.0  # combinational loops (none expected) end here
        c = cells[name]
        t = c["type"]
        if t in ("TRELLIS_FF", "DP16KD", "TRELLIS_IO", "SGSR"):
            memo[key] = start(name, c)
            return memo[key]
        if t == "MULT18X18D" and _mult_regs(c)[1]:
            memo[key] = CLK_Q_NS
            return memo[key]

        def inp(ports, delay):
            """(the worst arrival at ``ports`` plus ``delay``, the driver it came from)"""
            worst, came = 0.0, None
            for p in ports:
                for bit in c["connections"].get(p, []):
                    if isinstance(bit, int) and bit in driver:
                        dn, dp = driver[bit]
                        a = out_time(dn, dp) + _net(t, p, cells[dn]["type"], fanout[bit])
                        if came is None or a > worst:
                            worst, came = a, (dn, dp)
            return worst + delay, came

        inputs = [p for p in c["connections"] if c["port_directions"].get(p) == "input"]
        if t == "LUT4":
            v, came = inp("ABCD", LUT_NS)
        elif t == "PFUMX":
            v, came = inp(("ALUT", "BLUT", "C0"), MUX_NS)
        elif t == "L6MUX21":
            v, came = inp(("D0", "D1", "SD"), MUX_NS)
        elif t == "CCU2C":  # the later of the data inputs' and the carry's arrival
            v, came = max(inp(("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1"), CARRY_IN_NS),
                          inp(("CIN",), CARRY_NS if port == "COUT" else CARRY_OUT_NS),
                          key=lambda r: r[0])
        elif t == "TRELLIS_DPR16X4":
            v, came = inp([p for p in inputs if p.startswith("RAD")], LUTRAM_NS)
        else:
            v, came = inp(inputs, MULT_NS if t == "MULT18X18D" else 0.0)
        if came is not None:
            via[key] = came
        memo[key] = v
        return v

    def src_of(name):
        return cell_src(cells[name])

    def trace(key):
        """The worst path into ``key``, first cell first, as ``(cell, src, arrival)``."""
        out, seen = [], set()
        while key is not None and key not in seen:  # a loop through a cut input ends it
            seen.add(key)
            out.append((key[0], src_of(key[0]), memo.get(key, 0.0)))
            key = via.get(key)
        return out[::-1]

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 200000))
    worst = {}
    for name, c in cells.items():
        # a DSP block with its own output register ends the paths into it: at its input
        # registers, or through its multiply into the output register
        in_reg, out_reg = _mult_regs(c) if c["type"] == "MULT18X18D" else (False, False)
        if c["type"] not in _ENDPOINT_TYPES and not out_reg:
            continue
        extra = MULT_NS if out_reg and not in_reg else 0.0
        for p, d in c.get("port_directions", {}).items():
            if d != "input" or p.startswith("CLK"):
                continue
            for bit in c["connections"].get(p, []):
                if not isinstance(bit, int) or bit not in driver:
                    continue
                arr = (out_time(*driver[bit]) + extra
                       + _net(c["type"], p, cells[driver[bit][0]]["type"], fanout[bit]))
                stem = _stem(name)
                old = worst.get(stem)
                if old is None:
                    worst[stem] = [arr, 1, src_of(name), driver[bit]]
                else:
                    old[1] += 1
                    if arr > old[0]:
                        old[0], old[3] = arr, driver[bit]
    return {k: Endpoint(ns, n, src, trace(key)) for k, (ns, n, src, key) in worst.items()}


def read_netlist(path):
    """The yosys JSON netlist at ``path``; SluiceError naming the file when it cannot be read."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SluiceError(f"{path}: {e}") from None


def apply_to_netlist(prog: str, path: str, fn):
    """``fn(netlist)`` on the yosys JSON netlist at ``path``: (its result, None), or (None, 2)
    after a one-line ``PROG: error: ...`` on stderr when the file cannot be read or used."""
    try:
        return fn(read_netlist(path)), None
    except SluiceError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
    return None, 2


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sluice.boards.depth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("netlist", help="the build folder's NAME.json (yosys's output for nextpnr)")
    ap.add_argument("--top", type=int, default=30, help="endpoint groups to list (default 30)")
    ap.add_argument("--path", metavar="NAME",
                    help="print the worst estimated path into this endpoint, cell by cell")
    ap.add_argument("--over", type=float, default=None,
                    help="count the endpoint groups estimated slower than this many ns")
    args = ap.parse_args(argv)
    res, rc = apply_to_netlist("depth", args.netlist, lambda n: arrivals(n, args.netlist))
    if rc:
        return rc
    rows = sorted(res.items(), key=lambda kv: -kv[1].ns)
    if args.path:
        hits = [r for r in rows if r[0] == args.path] or [r for r in rows if args.path in r[0]]
        if not hits:
            print(f"depth: error: --path {args.path}: no endpoint of that name", file=sys.stderr)
            return 2
        stem, e = hits[0]
        print(f"{stem} ({e.src}): {e.ns:.2f} ns estimated")
        for cell, src, ns in e.path:
            print(f"{ns:7.2f}  {cell}  ({src})")
        return 0
    print(f"{'est ns':>7} {'inputs':>6}  endpoint (where it is defined)")
    for stem, e in rows[:args.top]:
        print(f"{e.ns:7.2f} {e.inputs:6d}  {stem}  ({e.src})")
    if args.over is not None:
        slow = [r for r in rows if r[1].ns > args.over]
        print(f"{len(slow)} endpoint names ({sum(r[1].inputs for r in slow)} inputs) over "
              f"{args.over} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
