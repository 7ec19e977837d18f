"""iCE40 DSP blocks instantiated directly: two array elements per SB_MAC16.

The iCE40 UP5K has 8 SB_MAC16 blocks. Synthesis maps each element's 8 x 8 multiply to a block
of its own (in its 8 x 8 mode, half of it unused), so a 2 x 2 array took 4 and the
post-processing's requantising and residual multiplies 6 more: 10 of 8. In its 8 x 8 mode
(``MODE_8x8``) one block holds two independent signed 8 x 8 multipliers, the top one on
``A[15:8] * B[15:8]``, the bottom one on ``A[7:0] * B[7:0]``, each with a product register
(``TOP_8x8_MULT_REG``, ``BOT_8x8_MULT_REG``) and routed straight to the outputs
(``TOPOUTPUT_SELECT``/``BOTOUTPUT_SELECT`` 2: ``O[31:16]`` and ``O[15:0]``). The array
(``hw/pe.py``) gives each pair of elements one block: half the blocks, and each element's
first product register is the block's (yosys's models, ``cells_sim.v``, are what
``tests/boards/test_ice40_dsp.py`` simulates the synthesised array with).

yosys 0.70's ``ice40_dsp`` pass (``synth_ice40 -dsp``, which maps the post-processing's
multiplies) also takes existing SB_MAC16 cells as its own and rewrites them for the 16 x 16
mode (``MODE_8x8`` 0, its outputs the 16 x 16 product's, the register behind the block packed
into it): a netlist that no longer computes the two products. So the array instantiates a
stand-in, ``MAC16_STAND_IN``, a black box with SB_MAC16's ports and parameters
(``MAC16_STAND_IN_V``, read before synthesis), renamed to SB_MAC16 after it
(``MAC16_AFTER_SYNTH``); ``sluice build`` and the test's flow do both.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Signal


#: the cell type the array instantiates, renamed to SB_MAC16 after synthesis
MAC16_STAND_IN = "sluice_SB_MAC16"
#: the yosys commands that rename it (after ``synth_ice40``: Amaranth's ``script_after_synth``)
#: and count the cells again (the build's reports read the log's last statistics)
MAC16_AFTER_SYNTH = f"chtype -set SB_MAC16 t:{MAC16_STAND_IN}; stat"
#: SB_MAC16's parameters the stand-in declares: name -> bits
_MAC16_PARAMS = {"NEG_TRIGGER": 1, "C_REG": 1, "A_REG": 1, "B_REG": 1, "D_REG": 1,
                 "TOP_8x8_MULT_REG": 1, "BOT_8x8_MULT_REG": 1, "PIPELINE_16x16_MULT_REG1": 1,
                 "PIPELINE_16x16_MULT_REG2": 1, "TOPOUTPUT_SELECT": 2, "TOPADDSUB_LOWERINPUT": 2,
                 "TOPADDSUB_UPPERINPUT": 1, "TOPADDSUB_CARRYSELECT": 2, "BOTOUTPUT_SELECT": 2,
                 "BOTADDSUB_LOWERINPUT": 2, "BOTADDSUB_UPPERINPUT": 1, "BOTADDSUB_CARRYSELECT": 2,
                 "MODE_8x8": 1, "A_SIGNED": 1, "B_SIGNED": 1}
#: the pair's settings (every other parameter 0): two signed 8 x 8 products, each registered,
#: on the outputs
_PAIR = {"MODE_8x8": 1, "A_SIGNED": 1, "B_SIGNED": 1, "TOP_8x8_MULT_REG": 1,
         "BOT_8x8_MULT_REG": 1, "TOPOUTPUT_SELECT": 2, "BOTOUTPUT_SELECT": 2}
#: SB_MAC16's one-bit control inputs, all tied to 0 by the pair
_MAC16_TIED = ("AHOLD", "BHOLD", "CHOLD", "DHOLD", "IRSTTOP", "IRSTBOT", "ORSTTOP", "ORSTBOT",
               "OLOADTOP", "OLOADBOT", "ADDSUBTOP", "ADDSUBBOT", "OHOLDTOP", "OHOLDBOT", "CI",
               "ACCUMCI", "SIGNEXTIN")
#: the file name it is read from (``platform.add_file``)
MAC16_STAND_IN_FILE = f"{MAC16_STAND_IN}.v"
#: the stand-in as a Verilog black box (SB_MAC16's ports and parameters), read before synthesis
MAC16_STAND_IN_V = f"""(* blackbox *)
module {MAC16_STAND_IN} (
    input CLK, CE,
    input [15:0] C, A, B, D,
    input {", ".join(_MAC16_TIED)},
    output [31:0] O,
    output CO, ACCUMCO, SIGNEXTOUT
);
""" + "".join(f"    parameter {p} = 0;\n" for p in _MAC16_PARAMS) + "endmodule\n"


def mac16_8x8_pair(m, a_top, b_top, a_bot, b_bot, name: str):
    """The products ``a_top * b_top`` and ``a_bot * b_bot`` (signed 8 bits each) through one
    SB_MAC16 (its stand-in, see above) added to ``m`` as submodule ``name``, each product
    registered in the block: the operands presented at cycle t give the products at t + 1.
    Returns (top, bottom) as signed 16-bit values."""
    o = Signal(32, name=f"{name}_o")
    params = {f"p_{p}": Const(_PAIR.get(p, 0), bits) for p, bits in _MAC16_PARAMS.items()}
    zeros = {f"i_{p}": 0 for p in _MAC16_TIED}
    m.submodules[name] = Instance(
        MAC16_STAND_IN, **params, **zeros,
        i_CLK=ClockSignal(), i_CE=1, i_C=Const(0, 16), i_D=Const(0, 16),
        i_A=Cat(a_bot, a_top), i_B=Cat(b_bot, b_top), o_O=o)
    return o[16:32].as_signed(), o[0:16].as_signed()
