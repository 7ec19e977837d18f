"""Flip-flops of a synthesised netlist counted by register, for finding where the area goes.

yosys's statistics give one flip-flop total per module; the board builds flatten the design, so
that is one figure for everything. This reads the netlist yosys hands to nextpnr (the build
folder's ``NAME.json``, iCE40 or ECP5), names every flip-flop by the net it drives (the most
readable name of that net: fewest ``$``, then shortest; the cell's name where the net has only
generated names) and counts them per register, with
per-index copies folded together (``par_bias_3`` and ``par_bias_5`` both count as
``par_bias_N``, bit indices dropped), or per module path (``--by module``: ``acc.post_N``,
``bridge``, ...). Names are what synthesis left: a register merged with an equal one counts
under the name yosys kept, and a register driving only logic may carry a generated suffix.

``--unpacked`` (iCE40) counts only the flip-flops that take a logic cell of their own: an
iCE40 logic cell holds a LUT and a flip-flop fed by that LUT, and nextpnr packs the two only
if the LUT drives nothing else, so a flip-flop loaded straight from another register, a block
RAM, a DSP or a port, or from a LUT that also drives other cells, costs a cell (with a
pass-through LUT) beside the logic. On a small part those are a large share of the cells.

    python -m sluice.boards.regs build/boards/NAME/NAME.json [--by register|module] [--top N]
        [--unpacked]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

from sluice.boards.depth import apply_to_netlist, top_module
from sluice.errors import SluiceError

#: flip-flop cell types: the ECP5's and the iCE40's (SB_DFF, SB_DFFE, SB_DFFESR, ...)
FF_TYPES = re.compile(r"^(TRELLIS_FF|SB_DFF\w*)$")


def _net_names(module: dict) -> dict:
    """bit -> the most readable name of a net holding it (fewest ``$``, then shortest)."""
    best = {}
    for name, net in module.get("netnames", {}).items():
        key = (name.count("$"), len(name))
        for b in net.get("bits", ()):
            if isinstance(b, int) and (b not in best or key < best[b][0]):
                best[b] = (key, name)
    return {b: n for b, (_, n) in best.items()}


def fold(name: str) -> str:
    """A register's name with per-index copies folded: ``_3`` -> ``_N``, bit indices and
    yosys's ``$number`` suffixes dropped."""
    name = re.sub(r"\$\d+", "", name)
    name = re.sub(r"\[\d+\]", "", name)
    return re.sub(r"_\d+(?=(_|$|\.))", "_N", name).strip()


def _lut_fanout(module: dict) -> tuple[set, collections.Counter]:
    """The bits an SB_LUT4 drives, and every bit's count of cell inputs it reaches."""
    lut_out, loads = set(), collections.Counter()
    for cell in module.get("cells", {}).values():
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            out = dirs.get(port) == "output" if dirs else port in ("O", "Q", "CO")
            for b in bits:
                if not isinstance(b, int):
                    continue
                if not out:
                    loads[b] += 1
                elif cell.get("type") == "SB_LUT4":
                    lut_out.add(b)
    return lut_out, loads


def count(netlist: dict, by: str = "register", what: str = "netlist",
          unpacked: bool = False) -> collections.Counter:
    """Flip-flops per folded register name (``by="register"``) or per module path
    (``by="module"``: the name up to its last dot, folded; top-level registers count as
    ``(top)``); with ``unpacked``, only the iCE40 flip-flops that take a logic cell of their
    own (their D input not from an SB_LUT4 that drives nothing else)."""
    if by not in ("register", "module"):
        raise SluiceError(f"--by: {by!r} is not one of register, module")
    module = top_module(netlist, what)
    names = _net_names(module)
    if unpacked:
        lut_out, loads = _lut_fanout(module)
    out = collections.Counter()
    for cname, cell in module.get("cells", {}).items():
        if not FF_TYPES.match(cell.get("type", "")):
            continue
        if unpacked:
            d = cell.get("connections", {}).get("D", [None])[0]
            if d in lut_out and loads[d] == 1:
                continue
        q = cell.get("connections", {}).get("Q", [])
        name = names.get(q[0]) if q and isinstance(q[0], int) else None
        if not name or name.startswith("$"):  # only a generated net name: the cell's
            name = cname
        name = fold(name)
        if by == "module":
            name = name.rsplit(".", 1)[0] if "." in name else "(top)"
        out[name] += 1
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sluice.boards.regs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("netlist", help="the build folder's NAME.json (yosys's output for nextpnr)")
    ap.add_argument("--by", default="register", choices=("register", "module"),
                    help="count per register name (default) or per module path")
    ap.add_argument("--top", type=int, default=40, help="rows to list (default 40; 0: all)")
    ap.add_argument("--unpacked", action="store_true",
                    help="iCE40: only the flip-flops that take a logic cell of their own")
    args = ap.parse_args(argv)
    counts, rc = apply_to_netlist("regs", args.netlist,
                                  lambda n: count(n, args.by, args.netlist, args.unpacked))
    if rc:
        return rc
    rows = counts.most_common(args.top or None)
    for name, n in rows:
        print(f"{n:7d}  {name}")
    what = "flip-flops with a logic cell of their own" if args.unpacked else "flip-flops"
    print(f"{sum(counts.values()):7d}  {what} in all ({len(counts)} {args.by} names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
