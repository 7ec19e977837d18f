"""Resource and timing figures from a build: nextpnr's log (and yosys's), as JSON and Markdown.

Parsed from the text nextpnr writes with ``--log`` (amaranth names it ``<name>.tim``): the
``Device utilisation`` table (``CELL: used/available pct%``) and the last ``Max frequency for
clock`` line of each clock (the post-route figure); plus the cell counts of yosys's final
``stat`` for the LUT/FF split on iCE40, whose logic cells (``ICESTORM_LC``) hold a LUT and a
flip-flop each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sluice.fileio import atomic_write_text

_UTIL = re.compile(r"^Info:\s+([A-Za-z0-9_$]+):\s+(\d+)\s*/\s*(\d+)\s+(\d+)%\s*$")
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([0-9.]+) MHz\s+\((PASS|FAIL) at "
                   r"([0-9.]+) MHz\)")

# cell names -> report categories, per family
CATEGORIES = {
    "ecp5": {"TRELLIS_COMB": "lut", "TRELLIS_FF": "ff", "DP16KD": "bram",
             "MULT18X18D": "dsp", "TRELLIS_RAMW": "lutram", "TRELLIS_IO": "io"},
    "ice40": {"ICESTORM_LC": "logic_cells", "ICESTORM_RAM": "bram", "ICESTORM_DSP": "dsp",
              "ICESTORM_SPRAM": "spram", "SB_IO": "io"},
}


def parse_nextpnr_log(text: str) -> dict:
    """``{"utilisation": {cell: {"used", "available"}}, "fmax": {clock: {...}}}``.

    The last utilisation table and the last Fmax line per clock win (nextpnr prints estimates
    before routing and the final figures after it).
    """
    util, fmax = {}, {}
    in_table = False
    for line in text.splitlines():
        if "Device utilisation:" in line:
            util, in_table = {}, True
            continue
        if in_table:
            mt = _UTIL.match(line.strip() if line.startswith("Info:") else line)
            if mt:
                util[mt.group(1)] = {"used": int(mt.group(2)), "available": int(mt.group(3))}
                continue
            if line.strip() in ("Info:", ""):
                continue
            in_table = False
        mf = _FMAX.search(line)
        if mf:
            fmax[mf.group(1)] = {"achieved_mhz": float(mf.group(2)), "pass": mf.group(3) == "PASS",
                                 "constraint_mhz": float(mf.group(4))}
    return {"utilisation": util, "fmax": fmax}


# nextpnr's JSON timing report (``--report FILE --detailed-timing-report``), written beside the
# log by every build: the arrival time at every register and block input, per clock
TIMING_JSON = "{name}.timing.json"
_FF_SUFFIX = re.compile(r"_(TRELLIS_FF|SB_DFF\w*)_Q(_\d+)?$")


def _port_kind(port: str) -> str:
    """A cell port's name without its bit index: ``DI0`` -> ``DI``, ``ADB12`` -> ``ADB``."""
    return port.rstrip("0123456789")


def _register_name(cell: str, port: str) -> str:
    """A timing endpoint's register, from nextpnr's cell name: a flip-flop's cell is named
    after the net it drives (``acc.step_off_2_TRELLIS_FF_Q_4``: a bit of ``acc.step_off_2``), a
    block RAM or DSP input is named with its port. Indices become ``N`` so that the bits and the
    copies of one register group together (``acc.step_off_N``, ``acc.res_buf_N.N.N.ADB``)."""
    ff = _FF_SUFFIX.sub("", cell)
    head, _, last = ff.rpartition(".")
    name = (head + "." if head else "") + re.sub(r"_\d+", "_N", last)
    if ff == cell:  # not a flip-flop: a block's input port
        name = re.sub(r"([_.])\d+", r"\1N", cell) + "." + _port_kind(port)
    return name


def slow_endpoints(timing: dict, top: int = 12) -> dict:
    """The register inputs whose paths take longer than their clock's period, grouped by
    register: ``{"pins": n, "registers": m, "groups": [{"register", "pins", "worst_ns"}, ...]}``,
    worst first, ``top`` groups. ``timing`` is nextpnr's JSON report with the detailed net
    timings. An endpoint's delay there is the arrival at the input, without the input's setup
    time (0 for an ECP5 flip-flop's data and clock-enable inputs, 0.42 ns for its set/reset
    input), so a build could miss its clock with no input listed; the setup times of the
    critical paths' last inputs are added to every input of the same kind (``LSR``, ``CE``,
    ``DI``, a block's port name without its index), which makes the worst input's delay the
    critical path's (1 / Fmax)."""
    period = {f"posedge {clk}": 1000.0 / c["constraint"]
              for clk, c in timing.get("fmax", {}).items() if c.get("constraint")}
    setup: dict = {}
    for cp in timing.get("critical_paths", []):
        for seg in cp.get("path", []):
            if seg.get("type") == "setup":
                kind = _port_kind(seg["to"]["port"])
                setup[kind] = max(setup.get(kind, 0.0), seg["delay"])
    groups: dict = {}
    pins = 0
    for net in timing.get("detailed_net_timings", []):
        for ep in net.get("endpoints", []):
            limit = period.get(ep.get("event"))
            worst = ep["delay"][1] + setup.get(_port_kind(ep["port"]), 0.0)
            if limit is None or worst <= limit:
                continue
            pins += 1
            g = groups.setdefault(_register_name(ep["cell"], ep["port"]), [0, 0.0])
            g[0] += 1
            g[1] = max(g[1], worst)
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1][1], kv[0]))[:top]
    return {"pins": pins, "registers": len(groups),
            "groups": [{"register": k, "pins": v[0], "worst_ns": round(v[1], 2)}
                       for k, v in ranked]}


def over_capacity(util: dict) -> list[str]:
    """Human lines for every cell type used beyond what the part has."""
    out = []
    for cell, u in util.items():
        if u["used"] > u["available"]:
            pct = 100.0 * u["used"] / max(u["available"], 1)
            out.append(f"{cell} {u['used']}/{u['available']} ({pct:.0f}%, "
                       f"{u['used'] - u['available']} over)")
    return out


def nextpnr_errors(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("ERROR:")]


def yosys_conflicts(text: str) -> list[str]:
    """The nets of a yosys log's "Driver-driver conflict" warnings: a net left with two
    drivers, which yosys resolves by keeping one (a constant, in the case seen here), so the
    netlist no longer computes what the design does."""
    return re.findall(r"Driver-driver conflict for (\S+ \[\d+\]|\S+) between", text)


def parse_yosys_stat(text: str) -> dict:
    """Cell counts of the last ``Printing statistics`` block of a yosys log."""
    blocks = text.split("Printing statistics.")
    if len(blocks) < 2:
        return {}
    cells = {}
    for line in blocks[-1].splitlines():
        s = line.strip()
        m1 = re.match(r"^(\$?[A-Za-z_][\w$]*)\s+(\d+)$", s)  # older: "SB_LUT4   1234"
        m2 = re.match(r"^(\d+)\s+(?:[0-9.]+\s+)?(\$?[A-Za-z_][\w$]*)$", s)  # newer: "1234 SB_LUT4"
        if m1 and not m1.group(1).startswith("Number"):
            cells[m1.group(1)] = int(m1.group(2))
        elif m2:
            cells[m2.group(2)] = int(m2.group(1))
    return cells


def summarise(family: str, nextpnr: dict, yosys_cells: dict | None = None) -> dict:
    """Report categories (lut, ff, bram, dsp, ...) with used/available, and the Fmax."""
    res = {}
    for cell, cat in CATEGORIES[family].items():
        if cell in nextpnr["utilisation"]:
            res[cat] = dict(nextpnr["utilisation"][cell], cell=cell)
    if family == "ice40" and yosys_cells:
        lc = res.get("logic_cells", {}).get("available")
        res["lut"] = {"used": yosys_cells.get("SB_LUT4", 0), "available": lc, "cell": "SB_LUT4"}
        ffs = sum(v for k, v in yosys_cells.items() if k.startswith("SB_DFF"))
        res["ff"] = {"used": ffs, "available": lc, "cell": "SB_DFF*"}
    clocks = nextpnr["fmax"]
    return {"resources": res, "clocks": clocks, "fmax_mhz": verdict(clocks)["fmax_mhz"]}


def verdict(clocks: dict) -> dict:
    """nextpnr's timing verdict over every clock (``parse_nextpnr_log(...)["fmax"]``), each
    against its own constraint: ``fmax_mhz`` (the slowest clock's Fmax, None without any),
    ``failed`` (the clocks that miss their constraint), ``timing_met`` (some clock was
    reported and none failed) and ``margin`` (the worst achieved/required ratio, 0 without
    clocks: what ranks seeds)."""
    failed = {n: c for n, c in clocks.items() if not c["pass"]}
    return {"fmax_mhz": min((c["achieved_mhz"] for c in clocks.values()), default=None),
            "failed": failed, "timing_met": bool(clocks) and not failed,
            "margin": min((c["achieved_mhz"] / c["constraint_mhz"] for c in clocks.values()),
                          default=0.0)}


def markdown(report: dict) -> str:
    r = report
    lines = [f"# Build report: {r['name']}", "",
             f"- board: `{r['board']}` ({r['device']}), family {r['family']}",
             f"- accelerator: {r['params']['rows']} x {r['params']['cols']} array, "
             f"act_depth {r['params']['act_depth']}, wgt_depth {r['params']['wgt_depth']}, "
             f"pix_depth {r['params']['pix_depth']}, skip_cols {r['params']['skip_cols']}"
             + (", gating left out (dense only)" if r.get("dense_only") else "")
             + (" (loopback stand-in in its place: bridge + register file only)"
                if r.get("loopback") else ""),
             f"- UART: {r['baud']} baud ({r['divisor']} clocks per bit at "
             f"{r['clk_mhz']:g} MHz)",
             *([f"- design clock: {r['clk_mhz']:g} MHz from the {r['osc_mhz']:g} MHz "
                f"oscillator by the PLL (CLKI_DIV {r['pll']['clki_div']}, CLKFB_DIV "
                f"{r['pll']['clkfb_div']}, CLKOP_DIV {r['pll']['clkop_div']}, VCO "
                f"{r['pll']['vco_mhz']:g} MHz)"] if r.get("pll") else []),
             *([f"- timing: {'met' if r['timing_met'] else '**FAILED**'} (nextpnr, every "
                "clock against its constraint)"] if "timing_met" in r else []),
             f"- command: `{r['command']}`",
             "- wall time: " + (f"{r['seconds']:.0f} s" if r.get("seconds") is not None
                                else "unknown"),
             "", "| resource | cell | used | available | % |", "|---|---|---|---|---|"]
    for cat, u in r["resources"].items():
        pct = f"{100.0 * u['used'] / u['available']:.1f}" if u.get("available") else ""
        lines.append(f"| {cat} | {u['cell']} | {u['used']} | {u.get('available', '')} | {pct} |")
    lines += ["", "| clock | Fmax (MHz) | constraint (MHz) | |", "|---|---|---|---|"]
    for clk, c in r["clocks"].items():
        lines.append(f"| `{clk}` | {c['achieved_mhz']:.2f} | {c['constraint_mhz']:.2f} | "
                     f"{'PASS' if c['pass'] else 'FAIL'} |")
    if r.get("seed_sweep"):
        lines += ["", "## Seed sweep", "",
                  "nextpnr placed and routed the one synthesised netlist with each seed in "
                  "turn until one met timing (or none was left); the bitstream is the best "
                  "seed's (the command's `--seed`):", "",
                  "| seed | Fmax (MHz) | timing | seconds |", "|---|---|---|---|"]
        lines += [f"| {t['seed']} | " + (f"{t['fmax_mhz']:.2f}" if t["fmax_mhz"] else "n/a")
                  + f" | {'met' if t['timing_met'] else 'FAILED'} | {t['seconds']:.0f} |"
                  for t in r["seed_sweep"]]
    slow = r.get("slow_endpoints")
    if slow and slow["pins"]:
        lines += ["", "## Paths longer than the clock period", "",
                  f"{slow['pins']} register inputs in {slow['registers']} registers (nextpnr's "
                  "detailed timing report, `" + TIMING_JSON.format(name=r["name"]) + "`); the "
                  "worst registers:", "", "| register | inputs over | worst path (ns) |",
                  "|---|---|---|"]
        lines += [f"| `{g['register']}` | {g['pins']} | {g['worst_ns']:.2f} |"
                  for g in slow["groups"]]
    if r.get("gating_cost"):
        g = r["gating_cost"]
        lines += ["", "## Cost of gating", "",
                  f"Against the dense-only build of the same array (`{g['dense_report']}`):", "",
                  "| resource | gated | dense only | overhead |", "|---|---|---|---|"]
        for cat, v in g["resources"].items():
            lines.append(f"| {cat} | {v['gated']} | {v['dense']} | {v['overhead_pct']:+.1f}% |")
        if g.get("fmax"):
            lines.append(f"| Fmax (MHz) | {g['fmax']['gated']:.2f} | {g['fmax']['dense']:.2f} | "
                         f"{g['fmax']['overhead_pct']:+.1f}% |")
        if g.get("where"):
            lines += ["", "Where the gated build's extra logic sits: each LUT and carry cell of "
                      "the two netlists charged to the registers and memory or DSP inputs it "
                      "reaches (`python -m sluice.boards.cost GATED.json --against DENSE.json`; "
                      "logic = LUT4 + 2 x CCU2C on the ECP5, SB_LUT4 on the iCE40; a "
                      "register yosys merged counts under the name the other build uses where "
                      "the netlist keeps it, else under the surviving one, so the last rows, "
                      "fields with less logic in the gated build, are mostly registers named "
                      "otherwise there, to be read against the first):", "",
                      "| register field | logic, gated | dense only | flip-flops, gated | "
                      "dense only |", "|---|---|---|---|---|"]
            lines += [f"| `{w['field']}` | {w['logic'][0]} | {w['logic'][1]} | {w['ff'][0]} | "
                      f"{w['ff'][1]} |" for w in g["where"]]
    lines.append("")
    return "\n".join(lines)


def gating_cost(gated: dict, dense: dict, where: list | None = None) -> dict:
    """Side by side figures of a gated build and the dense-only build of the same array;
    ``where``: the register fields with the most extra logic (``cost.netlist_differences``)."""
    res = {}
    for cat in ("lut", "ff", "logic_cells", "bram", "dsp"):
        a = gated["resources"].get(cat, {}).get("used")
        b = dense["resources"].get(cat, {}).get("used")
        if a is not None and b is not None:
            res[cat] = {"gated": a, "dense": b,
                        "overhead_pct": 100.0 * (a - b) / b if b else 0.0}
    out = {"dense_report": dense["name"], "resources": res}
    if gated.get("fmax_mhz") and dense.get("fmax_mhz"):
        out["fmax"] = {"gated": gated["fmax_mhz"], "dense": dense["fmax_mhz"],
                       "overhead_pct": 100.0 * (gated["fmax_mhz"] - dense["fmax_mhz"])
                       / dense["fmax_mhz"]}
    if where:
        out["where"] = where
    return out


write_atomic = atomic_write_text  # the name this module's callers use


def write_reports(report: dict, out_dir) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    j = out_dir / f"{report['name']}.report.json"
    md = out_dir / f"{report['name']}.report.md"
    write_atomic(j, json.dumps(report, indent=1) + "\n")
    write_atomic(md, markdown(report))
    return j, md
