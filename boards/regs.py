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

    python -m sluice.boards.regs build/boards/NAME/NAME.json [--by register|module] [--top N]
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


def count(netlist: dict, by: str = "register", what: str = "netlist") -> collections.Counter:
    """Flip-flops per folded register name (``by="register"``) or per module path
    (``by="module"``: the name up to its last dot, folded; top-level registers count as
    ``(top)``)."""
    if by not in ("register", "module"):
        raise SluiceError(f"--by: {by!r} is not one of register, module")
    module = top_module(netlist, what)
    names = _net_names(module)
    out = collections.Counter()
    for cname, cell in module.get("cells", {}).items():
        if not FF_TYPES.match(cell.get("type", "")):
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
    args = ap.parse_args(argv)
    counts, rc = apply_to_netlist("regs", args.netlist,
                                  lambda n: count(n, args.by, args.netlist))
    if rc:
        return rc
    rows = counts.most_common(args.top or None)
    for name, n in rows:
        print(f"{n:7d}  {name}")
    print(f"{sum(counts.values()):7d}  flip-flops in all ({len(counts)} {args.by} names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
