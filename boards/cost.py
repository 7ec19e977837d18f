"""Where a synthesised netlist's logic sits: each LUT, carry and wide-multiplexer cell charged
to the registers and memory or DSP inputs its output reaches.

yosys's ``stat`` counts cells per module, and a board build's netlist is flattened (so it is
one module). This walks the netlist yosys hands to nextpnr (the build folder's ``NAME.json``)
forward from every combinational cell (ECP5 LUT4, CCU2C, PFUMX, L6MUX21; iCE40 SB_LUT4,
SB_CARRY) through other combinational cells to the first register, block RAM, LUT RAM, DSP
block or pin on each path, and charges the cell to those endpoints, split evenly where it
reaches several: its cone. Endpoints are grouped by name with the indices written ``*``
(``acc.next_abase_5`` -> ``acc.next_abase_*``, ``acc.skew_q12_3`` -> ``acc.skew_q*_*``; a
name's first part keeps its digits, ``acc.d1_psum_0`` -> ``acc.d1_psum_*``; ``--by register``
keeps them all), unnamed registers by the source line that made them. With ``--against`` a
second netlist (the dense-only partner of a gated build, ``sluice build --dense-only``) is
charged the same way and the table lists the differences: where a build's extra logic sits.

    python -m sluice.boards.cost build/boards/NAME/NAME.json [--against OTHER.json] [--top N]
        [--by field|register]

Registers that yosys merged (the same inputs) are counted once, under the surviving name;
their other names stay in the netlist as names of the register's output net. With
``--against`` the first netlist's registers are listed under such a name where the second
netlist uses it and not the surviving one (then the second's likewise against the first's):
in the 85F's 8 x 8 yosys keeps `gate_psum` for the merged `d1_psum`, which the table lists as
`d1_psum`, like the dense-only build's. A register renamed without an alias (a module's
output taken up by another name) still shows as logic moved between two names; and a shared
cone is split between its endpoints, so read a table's large opposite entries together.

"logic" is LUT4 + 2 x CCU2C on the ECP5 (a carry cell holds two LUTs' worth) and SB_LUT4 on
the iCE40 (its carry sits beside a LUT); the multiplexers (PFUMX, L6MUX21) share slices with
the LUTs and are listed apart. Counts are synthesis counts, before place and route.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

from sluice.boards.depth import (_stem, apply_to_netlist, cell_src, connectivity,
                                 read_netlist, top_module)
from sluice.errors import SluiceError

LUTS = {"LUT4", "SB_LUT4"}
CARRIES = {"CCU2C", "SB_CARRY"}
MUXES = {"PFUMX", "L6MUX21"}
COMB = LUTS | CARRIES | MUXES
FF_PREFIXES = ("TRELLIS_FF", "SB_DFF")
IGNORED = {"$scopeinfo"}


def endpoint_name(name, cell, by="field"):
    """The group a non-combinational cell is counted under: its name without yosys's mapping
    suffixes (and, ``by`` field, with indices as ``*``); an unnamed register by its source
    line."""
    stem = _stem(name)
    last = stem.rsplit(".", 1)[-1]
    if not last or "$" in stem:
        prefix = stem[:stem.rfind(".") + 1] if "." in stem else ""
        stem = f"{prefix}<{cell_src(cell) or cell['type']}>"
    if by == "field":  # an index: digits after "_" or ".", or a letter and digits after "_"
        stem = re.sub(r"(?<=_)([A-Za-z]?)\d+(?=[_.]|$)", r"\1*", stem)
        stem = re.sub(r"(?<=[_.])\d+(?=[_.]|$)", "*", stem)
    return stem


def _cells(netlist, path):
    return {n: c for n, c in top_module(netlist, path)["cells"].items()
            if c["type"] not in IGNORED}


def endpoint_groups(netlist, path="netlist", by="field", prefer=None):
    """``{cell: group}`` for the non-combinational cells (:func:`endpoint_name`). With
    ``prefer`` (another netlist's groups), a cell whose group is not among them takes the
    first of its aliases' groups that is: the names of its output nets other than the
    cell's own (a merged register's other names), yosys's generated names left out."""
    if by not in ("field", "register"):
        raise SluiceError(f"--by: {by!r} must be field or register")
    cells = _cells(netlist, path)
    group = {n: endpoint_name(n, c, by) for n, c in cells.items() if c["type"] not in COMB}
    if prefer is None:
        return group
    prefer = set(prefer)
    names = defaultdict(list)  # net bit -> the user names on it
    for name, net in top_module(netlist, path).get("netnames", {}).items():
        if net.get("hide_name") or "$" in name or _stem(name) != name:
            continue
        for bit in net.get("bits", []):
            if isinstance(bit, int):
                names[bit].append(name)
    for n, g in group.items():
        if g in prefer:
            continue
        c = cells[n]
        alias = sorted({endpoint_name(a, c, by)
                        for p, d in c.get("port_directions", {}).items() if d == "output"
                        for b in c["connections"].get(p, []) if isinstance(b, int)
                        for a in names.get(b, ())} & prefer)
        if alias:
            group[n] = alias[0]
    return group


def charge(netlist, path="netlist", by="field", group=None):
    """``{group: counts}``: per endpoint group the logic charged to it (``lut``, ``carry``,
    ``mux``, fractional where cells are shared) and its own cells (``ff`` and, by type, the
    block RAMs, LUT RAMs and DSP blocks); ``(unreached)`` holds cells whose outputs reach no
    endpoint. ``group``: the endpoints' groups (:func:`endpoint_groups`, by default its
    names)."""
    cells = _cells(netlist, path)
    _, sinks = connectivity(cells)
    if group is None:
        group = endpoint_groups(netlist, path, by)
    counts = defaultdict(lambda: defaultdict(float))
    for n, c in cells.items():
        if n in group:
            kind = "ff" if c["type"].startswith(FF_PREFIXES) else c["type"]
            counts[group[n]][kind] += 1
    # per combinational cell: the combinational cells and the endpoint groups it feeds
    comb_next, end_next = {}, {}
    for n, c in cells.items():
        if c["type"] in COMB:
            nxt = {s for p, d in c.get("port_directions", {}).items() if d == "output"
                   for b in c["connections"].get(p, []) if isinstance(b, int)
                   for s in sinks.get(b, ())}
            comb_next[n] = [s for s in nxt if s not in group and s != n]
            end_next[n] = {group[s] for s in nxt if s in group}
    reach = {}  # cell -> the endpoint groups its outputs reach

    def reached(n):
        """Post-order walk, iterative (carry chains and adder trees are deep); a
        combinational loop, which synthesis does not make, is cut where it closes."""
        stack, open_ = [(n, False)], set()
        while stack:
            node, done = stack.pop()
            if node in reach or (not done and node in open_):
                continue
            if not done:
                open_.add(node)
                stack.append((node, True))
                stack.extend((s, False) for s in comb_next[node] if s not in reach)
                continue
            got = set(end_next[node])
            for s in comb_next[node]:
                got |= reach.get(s, frozenset())
            reach[node] = frozenset(got)
            open_.discard(node)
        return reach[n]

    for n, c in cells.items():
        if c["type"] not in COMB:
            continue
        kind = "lut" if c["type"] in LUTS else "carry" if c["type"] in CARRIES else "mux"
        ends = reached(n) or frozenset(["(unreached)"])
        for e in ends:
            counts[e][kind] += 1 / len(ends)
    return {k: dict(v) for k, v in counts.items()}


def logic(v, family_carry=2):
    """LUT4 plus two per ECP5 carry cell (an iCE40 carry is counted by its LUT)."""
    return v.get("lut", 0.0) + family_carry * v.get("carry", 0.0)


def _carry_weight(netlist, path):
    types = {c["type"] for c in top_module(netlist, path)["cells"].values()}
    return 0 if "SB_CARRY" in types else 2


def differences(a, b, top=12, fewer=4, carry_weight=2):
    """The ``top`` groups by how much more logic ``a`` charges them than ``b`` (a gated
    build against its dense-only partner), then the ``fewer`` with the most less logic in
    ``a`` (mostly the same registers under another name there: merged or renamed), each
    ``{"field", "logic": [a, b], "ff": [a, b]}`` rounded to whole cells, for the build
    report."""
    names = set(a) | set(b)

    def pair(k, f):
        return [round(f(a.get(k, {}))), round(f(b.get(k, {})))]
    rows = [{"field": k, "logic": pair(k, lambda v: logic(v, carry_weight)),
             "ff": pair(k, lambda v: v.get("ff", 0.0))} for k in names]
    rows.sort(key=lambda r: (-(r["logic"][0] - r["logic"][1]), r["field"]))
    more = rows[:top]
    less = [r for r in reversed(rows[top:]) if r["logic"][0] < r["logic"][1]][:fewer]
    return more + less


def charge_pair(a, b, path_a="netlist", path_b="other netlist", by="field"):
    """:func:`charge` of two netlists named against each other: ``a``'s registers under an
    alias that ``b`` uses where their own name is not ``b``'s, then ``b``'s against ``a``'s
    names so chosen (:func:`endpoint_groups`)."""
    ga = endpoint_groups(a, path_a, by, prefer=set(endpoint_groups(b, path_b, by).values()))
    gb = endpoint_groups(b, path_b, by, prefer=set(ga.values()))
    return charge(a, path_a, by, ga), charge(b, path_b, by, gb)


def netlist_differences(gated_path, dense_path, top=12):
    """:func:`differences` of two netlist files (the build's ``NAME.json``), or None when
    either is missing; a file that cannot be used raises SluiceError naming it."""
    from pathlib import Path

    if not (Path(gated_path).exists() and Path(dense_path).exists()):
        return None
    a, b = (read_netlist(p) for p in (gated_path, dense_path))
    counts = charge_pair(a, b, str(gated_path), str(dense_path))
    return differences(*counts, top=top, carry_weight=_carry_weight(b, str(dense_path)))


def table(a, b=None, top=30, carry_weight=2):
    """The report's lines: groups by logic (or by its difference against ``b``), totals last."""
    def row(v):
        blocks = sum(n for k, n in v.items() if k not in ("lut", "carry", "mux", "ff"))
        return (logic(v, carry_weight), v.get("lut", 0.0), v.get("carry", 0.0),
                v.get("mux", 0.0), v.get("ff", 0.0), blocks)
    names = set(a) | set(b or {})
    zero = (0.0,) * 6
    ra = {k: row(a[k]) if k in a else zero for k in names}
    rb = {k: row(b[k]) if b and k in b else zero for k in names}
    key = (lambda k: -(ra[k][0] - rb[k][0])) if b is not None else (lambda k: -ra[k][0])
    keys = sorted(names, key=lambda k: (key(k), k))
    tot_a = [sum(ra[k][i] for k in names) for i in range(6)]
    tot_b = [sum(rb[k][i] for k in names) for i in range(6)]
    out = []
    if b is None:
        out.append(f"{'logic':>8} {'LUT4':>8} {'carry':>7} {'mux':>6} {'FF':>6} {'blocks':>6}  "
                   "endpoint group")
        fmt = "{:8.0f} {:8.0f} {:7.0f} {:6.0f} {:6.0f} {:6.0f}  "
        for k in keys[:top]:
            out.append(fmt.format(*ra[k]) + k)
        out.append(fmt.format(*tot_a) + f"(all {len(names)} groups)")
    else:
        out.append(f"{'logic':>8} {'against':>8} {'diff':>7} {'FF':>6} {'against':>7} "
                   f"{'diff':>6}  endpoint group")
        for k in keys[:top]:
            out.append(f"{ra[k][0]:8.0f} {rb[k][0]:8.0f} {ra[k][0] - rb[k][0]:+7.0f} "
                       f"{ra[k][4]:6.0f} {rb[k][4]:7.0f} {ra[k][4] - rb[k][4]:+6.0f}  {k}")
        out.append(f"{tot_a[0]:8.0f} {tot_b[0]:8.0f} {tot_a[0] - tot_b[0]:+7.0f} "
                   f"{tot_a[4]:6.0f} {tot_b[4]:7.0f} {tot_a[4] - tot_b[4]:+6.0f}  "
                   f"(all {len(names)} groups)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sluice.boards.cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("netlist", help="the build folder's NAME.json (yosys's output for nextpnr)")
    ap.add_argument("--against", metavar="OTHER.json",
                    help="a second netlist (e.g. the dense-only partner): list the differences")
    ap.add_argument("--top", type=int, default=30, help="groups to list (default 30)")
    ap.add_argument("--by", default="field", choices=("field", "register"),
                    help="group endpoints by field (indices as *, the default) or by register")
    args = ap.parse_args(argv)
    if args.top < 1:
        print(f"cost: error: --top: {args.top} must be at least 1", file=sys.stderr)
        return 2

    def work(na):  # (the second netlist's errors name it, like the first's)
        weight = _carry_weight(na, args.netlist)
        if not args.against:
            return charge(na, args.netlist, args.by), None, weight
        nb = read_netlist(args.against)
        return (*charge_pair(na, nb, args.netlist, args.against, args.by), weight)
    res, rc = apply_to_netlist("cost", args.netlist, work)
    if rc:
        return rc
    a, b, weight = res
    print("\n".join(table(a, b, args.top, weight)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
