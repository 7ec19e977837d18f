"""A design clock above the board's oscillator: the ECP5 PLL (EHXPLLL).

``ecp5_pll(fin_hz, fout_hz)`` picks the dividers the way Project Trellis's ``ecppll`` does
(reference divider, feedback divider, output divider; the phase-frequency detector within
3.125-400 MHz, the VCO within 400-800 MHz, the exact frequency preferred, then the VCO nearest
600 MHz), but refuses a frequency it cannot make exactly: the UART divides the design clock by
an integer, and the reports quote the clock nextpnr was constrained to.

``Ecp5Pll`` is the Amaranth wrapper: the board's oscillator in, the clock of the parent's
``sync`` domain out, and ``rst``: high until the PLL has locked (asserted at once on a loss of
lock, released two clocks after lock), for a reset-less ``sync`` domain whose parts each take
the reset they need (``boards.top``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import AsyncFFSynchronizer

from sluice.errors import SluiceError

PFD_HZ = (3_125_000, 400_000_000)
VCO_HZ = (400_000_000, 800_000_000)
VCO_PREFERRED_HZ = 600_000_000


@dataclass(frozen=True)
class PllConfig:
    fin_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def fout_hz(self) -> Fraction:
        return Fraction(self.fin_hz * self.clkfb_div, self.clki_div)

    @property
    def vco_hz(self) -> Fraction:
        return self.fout_hz * self.clkop_div

    def as_dict(self) -> dict:
        return {"clki_div": self.clki_div, "clkfb_div": self.clkfb_div,
                "clkop_div": self.clkop_div, "fin_mhz": self.fin_hz / 1e6,
                "fout_mhz": float(self.fout_hz) / 1e6, "vco_mhz": float(self.vco_hz) / 1e6}


def ecp5_pll(fin_hz: float, fout_hz: float) -> PllConfig:
    """The EHXPLLL dividers that make ``fout_hz`` from ``fin_hz`` exactly (CLKOP feedback)."""
    fin, want = Fraction(round(fin_hz)), Fraction(fout_hz).limit_denominator(1000)
    best, best_key = None, None
    for ref in range(1, 129):
        pfd = fin / ref
        if not PFD_HZ[0] <= pfd <= PFD_HZ[1]:
            continue
        for fb in range(1, 81):
            fout = pfd * fb
            lo = max(1, -(-VCO_HZ[0] // fout))  # the output dividers that put the VCO in range
            hi = min(128, VCO_HZ[1] // fout)
            near = VCO_PREFERRED_HZ // fout  # of those, the one with the VCO nearest 600 MHz
            for out in sorted({min(max(near, lo), hi), min(max(near + 1, lo), hi)}):
                if lo > hi:
                    break
                key = (abs(fout - want), abs(fout * out - VCO_PREFERRED_HZ))
                if best_key is None or key < best_key:  # ties: the first, as ecppll
                    best, best_key = PllConfig(int(fin), ref, fb, out), key
    if best is None or best.fout_hz != want:
        near = f"; the nearest is {float(best.fout_hz) / 1e6:g} MHz" if best else ""
        raise SluiceError(f"--clock-mhz: {float(want) / 1e6:g} MHz is not reachable exactly "
                          f"from the {fin_hz / 1e6:g} MHz oscillator with the ECP5 PLL{near}")
    return best


class Ecp5Pll(Elaboratable):
    """EHXPLLL from ``clk_in`` to the clock of ``domain`` (which the parent defines), its reset
    held until LOCK (synchronised).

    The output phase is irrelevant with CLKOP as the feedback (the PLL aligns CLKOP with CLKI);
    CLKOP_CPHASE is set half-way through the output divider's count, as ``ecppll`` does."""

    def __init__(self, config: PllConfig, clk_in, domain: str = "sync"):
        self.config = config
        self.clk_in = clk_in
        self.domain = domain
        self.clk = Signal()  # CLKOP
        self.locked = Signal()
        self.rst = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.d.comb += ClockSignal(self.domain).eq(self.clk)
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{c.fin_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{float(c.fout_hz) / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=c.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=c.clkop_div,
            p_CLKOP_CPHASE=(c.clkop_div - 1) // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=c.clkfb_div,
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, o_CLKOP=self.clk, i_CLKFB=self.clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=self.locked)
        m.submodules.reset = AsyncFFSynchronizer(~self.locked, self.rst, o_domain=self.domain)
        # no clock constraint of its own: nextpnr derives CLKOP's from the oscillator's
        # constraint and the dividers (a constraint on this net is dropped by synthesis's
        # renaming, with a warning; the 60 MHz build's report shows the derived 60.00 MHz)
        return m
