"""The ECP5's MULT18X18D with its own registers, for the board builds.

At 8 x 8 on the ULX3S 85F the 76 DSP blocks span the die, and placement kept the fabric
registers around a multiply beside the logic they serve, not beside the DSP block, so the route
in (5 ns), the multiply (3.9 ns) and the route out (4.3 ns) shared one cycle however many
fabric registers surrounded the multiply (73 MHz). The block's own input and output registers
give the routes in and out a cycle each, with the multiply between two registers inside the
block. Elaboration for an ECP5 platform (``sluice build`` for a ULX3S) uses them; simulation and
``sluice verilog`` (no platform) keep ``a * b`` between fabric registers, with the same integers
and latency (``tests/boards/test_ecp5_dsp.py`` simulates both forms side by side in Icarus,
the block by a model of its registered multiply, since yosys ships only a black box).
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Signal, signed


def platform_family(platform) -> str:
    """The FPGA family elaboration is for, lower case (Amaranth's Lattice platforms say
    ``"ecp5"`` and ``"iCE40"``); ``""`` without a platform (simulation, ``sluice verilog``)."""
    return str(getattr(platform, "family", "") or "").lower()


def ecp5_registered_dsp(platform) -> bool:
    """Whether elaboration for ``platform`` instantiates registered MULT18X18D blocks."""
    return platform_family(platform) == "ecp5"


def mult18x18d(m, a, b, name: str, *, width: int, in_regs: bool):
    """The 36-bit product ``a * b`` (each at most 18 bits as a signed value: an unsigned
    operand of up to 17 bits, a signed one of up to 18) through a MULT18X18D added to ``m`` as
    submodule ``name``, its output registered and, with ``in_regs``, its inputs too: the
    product of the operands presented at cycle t is on the result at t + 2 (t + 1 without
    ``in_regs``). Returns its low ``width`` bits as a signed value."""
    a18, b18 = Signal(signed(18), name=f"{name}_a"), Signal(signed(18), name=f"{name}_b")
    p = Signal(36, name=f"{name}_p")
    m.d.comb += [a18.eq(a), b18.eq(b)]
    ports = {f"i_A{i}": a18[i] for i in range(18)}
    ports.update({f"i_B{i}": b18[i] for i in range(18)})
    ports.update({f"i_C{i}": 0 for i in range(18)})
    ports.update({f"o_P{i}": p[i] for i in range(36)})
    reg_in = "CLK0" if in_regs else "NONE"
    # every register on CLK0 (nextpnr times a registered block from CLK0 only), CE0 high,
    # the resets tied off; A and B signed (an unsigned operand is zero-extended to 18 bits)
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK=reg_in, p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK=reg_in, p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
        p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED",
        p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
        p_RESETMODE="SYNC",
        i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
        i_CLK0=ClockSignal(), i_CLK1=0, i_CLK2=0, i_CLK3=0,
        i_CE0=1, i_CE1=0, i_CE2=0, i_CE3=0, i_RST0=0, i_RST1=0, i_RST2=0, i_RST3=0,
        **ports)
    return p[:width].as_signed()
