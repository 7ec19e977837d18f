"""The elements of an ECP5 board build (a MULT18X18D with its own input and output registers)
against the elements every simulation runs (``a * w`` between fabric registers): both forms
simulated side by side in Icarus on random steps, every output compared every cycle.

The same for the post-processing unit (its requantisation multiplies with registered operands
and product, its residual multiplies with a registered product).

The MULT18X18D is simulated by the model below of the part of the block Sluice uses (signed A
and B, registered on CLK0 or not, their product registered on CLK0: the product of the operands
presented at cycle t on P at t + 2, or t + 1). That is the block as Lattice documents it with
those registers on CLK0 and the pipeline register off; yosys ships only a black box for it. The
model rejects any other register setting, so a change of the instance's parameters fails here
rather than on a board."""

import shutil
import subprocess

import pytest
from amaranth.back import verilog

from sluice.hw.ecp5 import ecp5_registered_dsp
from sluice.hw.pe import PE
from sluice.hw.postproc import PostProc

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None,
                                reason="iverilog is not installed")

MODEL = """
module MULT18X18D #(
    parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0",
    parameter REG_INPUTA_RST = "RST0", parameter REG_INPUTB_CLK = "NONE",
    parameter REG_INPUTB_CE = "CE0", parameter REG_INPUTB_RST = "RST0",
    parameter REG_INPUTC_CLK = "NONE", parameter REG_PIPELINE_CLK = "NONE",
    parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0",
    parameter REG_OUTPUT_RST = "RST0", parameter CLK0_DIV = "ENABLED",
    parameter CLK1_DIV = "ENABLED", parameter CLK2_DIV = "ENABLED",
    parameter CLK3_DIV = "ENABLED", parameter HIGHSPEED_CLK = "NONE", parameter GSR = "ENABLED",
    parameter CAS_MATCH_REG = "FALSE", parameter SOURCEB_MODE = "B_SHIFT",
    parameter MULT_BYPASS = "DISABLED", parameter RESETMODE = "SYNC"
) (%s);
    %s
    wire [17:0] A = {%s};
    wire [17:0] B = {%s};
    reg signed [17:0] a_r, b_r;
    reg signed [35:0] p_r;
    localparam IN_REGS = REG_INPUTA_CLK == "CLK0";
    wire signed [17:0] a_op = IN_REGS ? a_r : A;
    wire signed [17:0] b_op = IN_REGS ? b_r : B;
    assign {%s} = p_r;
    initial begin
        if (REG_INPUTA_CLK != REG_INPUTB_CLK || (REG_INPUTA_CLK != "CLK0"
            && REG_INPUTA_CLK != "NONE") || REG_OUTPUT_CLK != "CLK0"
            || REG_PIPELINE_CLK != "NONE" || MULT_BYPASS != "DISABLED") begin
            $display("MODEL: unsupported register setting"); $finish_and_return(3);
        end
    end
    always @(posedge CLK0) if (CE0 && !RST0) begin
        if (!SIGNEDA || !SIGNEDB || SOURCEA || SOURCEB) begin
            $display("MODEL: unsigned or cascaded operands"); $finish_and_return(3);
        end
        a_r <= A; b_r <= B; p_r <= a_op * b_op;
    end
endmodule
"""


def _model() -> str:
    a = [f"A{i}" for i in range(17, -1, -1)]
    b = [f"B{i}" for i in range(17, -1, -1)]
    c = [f"C{i}" for i in range(17, -1, -1)]
    p = [f"P{i}" for i in range(35, -1, -1)]
    ctl = ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"] + [
        f"{s}{i}" for s in ("CLK", "CE", "RST") for i in range(4)]
    inputs = a + b + c + ctl
    decl = f"input {', '.join(inputs)};\n    output {', '.join(p)};"
    return MODEL % (", ".join(inputs + p), decl, ", ".join(a), ", ".join(b), ", ".join(p))


def _simulate(tmp_path, source: str, extra=(), defines=()) -> dict:
    """Compile and run a self-checking testbench (with ``extra`` source files and ``defines``);
    its ``DONE k=v ...`` line as integers, asserting no mismatch was counted."""
    src, out = tmp_path / "tb.v", tmp_path / "tb.vvp"
    src.write_text(source)
    subprocess.run(["iverilog", "-g2012", *(f"-D{d}" for d in defines), "-o", str(out),
                    str(src), *map(str, extra)], check=True, capture_output=True, text=True)
    run = subprocess.run(["vvp", "-n", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    done = [line for line in run.stdout.splitlines() if line.startswith("DONE")]
    assert done, run.stdout
    fields = {k: int(v) for k, v in (kv.split("=") for kv in done[0].split()[1:])}
    assert fields["errors"] == 0, run.stdout
    return fields


class _ECP5:
    family = "ecp5"


TB = """
module tb;
    reg clk = 0, rst = 1;
    reg signed [7:0] a_in, w_in;
    reg valid_in, first_in, last_in;
    reg [1:0] en_in;
    wire signed [31:0] psum_g, psum_d;
    wire [7:0] a_g, a_d, w_g, w_d;
    wire v_g, v_d, f_g, f_d, l_g, l_d;
    wire [1:0] e_g, e_d;
    pe_gen g(.clk(clk), .rst(rst), .a_in(a_in), .w_in(w_in), .valid_in(valid_in),
             .first_in(first_in), .last_in(last_in), .en_in(en_in), .psum(psum_g),
             .a_out(a_g), .w_out(w_g), .valid_out(v_g), .first_out(f_g), .last_out(l_g),
             .en_out(e_g));
    pe_dsp d(.clk(clk), .rst(rst), .a_in(a_in), .w_in(w_in), .valid_in(valid_in),
             .first_in(first_in), .last_in(last_in), .en_in(en_in), .psum(psum_d),
             .a_out(a_d), .w_out(w_d), .valid_out(v_d), .first_out(f_d), .last_out(l_d),
             .en_out(e_d));
    integer i, errors = 0, passes = 0, seed = 7;
    always #5 clk = ~clk;
    initial begin
        {a_in, w_in, valid_in, first_in, last_in, en_in} = 0;
        repeat (3) @(negedge clk);
        rst = 0;
        for (i = 0; i < 4000; i = i + 1) begin
            @(negedge clk);
            if (i > 8 && {psum_g, a_g, w_g, v_g, f_g, l_g, e_g} !==
                         {psum_d, a_d, w_d, v_d, f_d, l_d, e_d}) begin
                errors = errors + 1;
                if (errors < 5) $display("cycle %0d: psum %0d vs %0d", i, psum_g, psum_d);
            end
            if (last_in && valid_in) passes = passes + 1;
            a_in = $random(seed); w_in = $random(seed);
            valid_in = ($random(seed) & 7) != 0;
            first_in = ($random(seed) & 7) == 0;
            last_in = ($random(seed) & 7) == 0;
            en_in = $random(seed);
        end
        $display("DONE errors=%0d passes=%0d psum=%0d", errors, passes, psum_g);
        $finish;
    end
endmodule
"""


def test_registered_dsp_element_matches_the_fabric_element(tmp_path):
    assert ecp5_registered_dsp(_ECP5()) and not ecp5_registered_dsp(None)
    gen = verilog.convert(PE(cols=2, col=1), name="pe_gen")
    dsp = verilog.convert(PE(cols=2, col=1), name="pe_dsp", platform=_ECP5())
    assert "MULT18X18D" in dsp and "MULT18X18D" not in gen
    fields = _simulate(tmp_path, gen + dsp + _model() + TB)
    assert fields["passes"] > 100 and fields["psum"] != 0  # sums really compared


TB_POST = """
module tb;
    reg clk = 0, rst = 1;
    reg signed [32:0] acc;
    reg signed [31:0] base, bias, res_mult, mult;
    reg signed [7:0] residual;
    reg has_res, relu;
    reg [5:0] res_shift, shift;
    wire signed [7:0] y_g, y_d;
    post_gen g(.clk(clk), .rst(rst), .acc(acc), .base(base), .bias(bias), .residual(residual),
               .has_res(has_res), .res_mult(res_mult), .res_shift(res_shift), .mult(mult),
               .shift(shift), .relu(relu), .y(y_g));
    post_dsp d(.clk(clk), .rst(rst), .acc(acc), .base(base), .bias(bias), .residual(residual),
               .has_res(has_res), .res_mult(res_mult), .res_shift(res_shift), .mult(mult),
               .shift(shift), .relu(relu), .y(y_d));
    integer i, errors = 0, nonzero = 0, seed = 11;
    always #5 clk = ~clk;
    initial begin
        {acc, base, bias, residual, has_res, relu, res_shift, shift, res_mult, mult} = 0;
        repeat (3) @(negedge clk);
        rst = 0;
        for (i = 0; i < 4000; i = i + 1) begin
            @(negedge clk);
            if (i > 20 && y_g !== y_d) begin
                errors = errors + 1;
                if (errors < 5) $display("cycle %0d: y %0d vs %0d", i, y_g, y_d);
            end
            if (i > 20 && y_g != 0) nonzero = nonzero + 1;
            // sums, parameters and shifts in the ranges layer files use, and at their limits
            acc = $signed($random(seed)) >>> ($random(seed) & 15);
            base = $signed($random(seed)) >>> ($random(seed) & 31);
            bias = $signed($random(seed)) >>> 12;
            residual = $random(seed);
            has_res = $random(seed);
            relu = $random(seed);
            res_mult = $random(seed) & 32'h7fffffff;
            mult = $random(seed) & 32'h7fffffff;
            res_shift = 20 + ($random(seed) & 15);
            shift = 28 + ($random(seed) & 31);
        end
        $display("DONE errors=%0d nonzero=%0d", errors, nonzero);
        $finish;
    end
endmodule
"""


def test_registered_dsp_postproc_matches_the_fabric_postproc(tmp_path):
    gen = verilog.convert(PostProc(), name="post_gen")
    dsp = verilog.convert(PostProc(), name="post_dsp", platform=_ECP5())
    assert dsp.count("MULT18X18D ") == 6 and "MULT18X18D" not in gen
    fields = _simulate(tmp_path, gen + dsp + _model() + TB_POST)
    assert fields["nonzero"] > 1000  # results really compared
