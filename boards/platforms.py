"""Boards Sluice builds for: an amaranth-boards platform, a default accelerator size, a UART rate.

Adding a board is one :func:`register` call with the platform's ``module:Class`` in
amaranth-boards, its FPGA family (``ice40`` or ``ecp5``, which pick the YoWASP tools), the
default array and buffer sizes that fit the part, and the UART baud rate its USB-serial chip
handles reliably at the board clock (the bridge divides the board clock by an integer, so pick
``baud`` with ``clk_freq / baud`` a whole number, or within 1%).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from sluice.errors import SluiceError


@dataclass(frozen=True)
class Board:
    name: str
    platform: str  # "amaranth_boards.module:Class"
    family: str  # "ice40" or "ecp5"
    rows: int
    cols: int
    act_depth: int
    wgt_depth: int
    pix_depth: int
    skip_cols: int
    baud: int  # at the oscillator's clock
    post_cols: int = 1  # columns per post-processing unit (the board's cols: one shared unit)
    row_slices: int = 3  # HwParams.row_slices (1: no second or third weight read, less logic)
    #: the default build has the gating hardware; False: the default is the dense-only build
    #: (the gated one does not fit the part), ``sluice build --gated`` builds the gated one
    gated: bool = True
    #: HwParams.stacking: off on the boards (their host runs one image at a time; on the
    #: iCEBreaker the jump's logic does not fit), ``--stacking 1`` builds it
    stacking: bool = False
    max_baud: int = 0  # the USB-serial chip's fastest reliable rate (0: baud)
    in_buf_bytes: int = 512  # bridge input ring (one block RAM)
    out_depth: int = 32  # bridge output FIFO, words
    programmer: tuple = ()  # openFPGALoader arguments before the bitstream
    doc: str = ""
    resources: dict = field(default_factory=dict)  # the part's capacity, for the docs

    def params(self, rows=None, cols=None, **overrides):
        """``HwParams`` for this board, with ``--rows``/``--cols`` (and more) overridden."""
        from sluice.hw.params import HwParams

        kw = dict(rows=rows or self.rows, cols=cols or self.cols, act_depth=self.act_depth,
                  wgt_depth=self.wgt_depth, pix_depth=self.pix_depth,
                  skip_cols=self.skip_cols, row_slices=self.row_slices,
                  stacking=self.stacking)
        if kw["cols"] % kw["skip_cols"]:
            kw["skip_cols"] = 1 if kw["cols"] % 2 else 2
        # one shared post-processing unit stays shared at another --cols
        kw["post_cols"] = kw["cols"] if self.post_cols == self.cols else (
            self.post_cols if kw["cols"] % self.post_cols == 0 else 1)
        if "stream_width" in HwParams.__dataclass_fields__:
            # the narrowest input stream: the UART is the bottleneck, a wide beat only pads
            kw["stream_width"] = 1 << (max(kw["cols"], 4) - 1).bit_length()
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return HwParams(**kw)

    def make_platform(self):
        mod_name, cls_name = self.platform.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise SluiceError(f"--board {self.name}: the Python package {e.name!r} is missing; "
                              "install the FPGA extra: pip install 'sluice[fpga]'") from None
        return getattr(mod, cls_name)()

    def clk_freq(self, platform) -> float:
        return platform.default_clk_frequency

    def uart(self, clk_hz: float, pll: bool = False) -> tuple[int, int]:
        """(baud rate, clocks per bit) of the bridge's UART at the design clock ``clk_hz``:
        the board's ``baud`` at its oscillator, or with a PLL clock :meth:`pll_baud`."""
        baud = self.pll_baud(clk_hz) if pll else self.baud
        return baud, round(clk_hz / baud)

    def pll_baud(self, clk_hz: float) -> int:
        """The fastest standard rate up to ``max_baud`` that the UART makes from ``clk_hz``
        within 1% and with at least 4 clocks per bit (a PLL-generated design clock)."""
        top = self.max_baud or self.baud
        for baud in BAUD_RATES:
            div = round(clk_hz / baud)
            if baud <= top and div >= 4 and abs(clk_hz / div - baud) <= 0.01 * baud:
                return baud
        raise SluiceError(f"--clock-mhz: no standard baud rate up to {top} fits "
                          f"{clk_hz / 1e6:g} MHz within 1%")


# rates the host's USB-serial chips make (FTDI: 3 MHz / n for small n), fastest first
BAUD_RATES = (3_000_000, 2_000_000, 1_500_000, 1_000_000, 500_000, 250_000, 115_200)


BOARDS: dict[str, Board] = {}


def register(board: Board) -> Board:
    if board.family not in ("ice40", "ecp5"):
        raise ValueError(f"board {board.name}: family {board.family!r} is not ice40 or ecp5")
    BOARDS[board.name] = board
    return board


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise SluiceError(f"--board: unknown board {name!r}; known boards: "
                          f"{', '.join(sorted(BOARDS))}") from None


# iCEBreaker: iCE40 UP5K (5280 LUT4, 30 EBR of 4 kbit, 8 DSP), 12 MHz, FT2232H (3 Mbaud at
# 12 MHz is exactly 4 clocks per bit). The dense-only 2 x 2 fits (96% of the logic cells) and
# is the default build; the gated one does not fit (120%, `--gated`; boards/README.md).
register(Board(
    name="icebreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform", family="ice40",
    rows=2, cols=2, act_depth=256, wgt_depth=64, pix_depth=32, skip_cols=2, post_cols=2,
    row_slices=1, gated=False, baud=3_000_000,
    max_baud=3_000_000,
    in_buf_bytes=256, out_depth=16, programmer=("-b", "ice40_generic"),
    doc="iCE40 UP5K, 12 MHz, FT2232H at 3 Mbaud; the gated 2x2 does not fit (--gated)",
    resources={"LUT4": 5280, "EBR (4 kbit)": 30, "DSP": 8}))

# ULX3S: ECP5 with an FT231X (3 Mbaud max; 25 MHz / 1 Mbaud = 25 clocks per bit exactly, the
# fastest rate both the FT231X's divider and the 25 MHz clock hit without error; a PLL clock,
# `--clock-mhz`, such as 60 MHz makes 3 Mbaud at 20 clocks per bit).
_ULX3S = dict(family="ecp5", baud=1_000_000, max_baud=3_000_000, programmer=("-b", "ulx3s"))
# The 12F/25F defaults share one post-processing unit between their 4 columns (--post-cols 4):
# with a unit per column their DSP blocks do not suffice (25F at 4 x 4: 40 of 28 MULT18X18D).
# The 45F's default is 4 x 4 like the 85F's: 4 x 8 places (52% of its LUTs) but did not route
# in an hour. Both hold the demo network whole: weights of 128-channel 3x3 layers (C_in*K*K =
# 1152 words, so wgt_depth 2048) and 8 KiB of activations per copy (the 28 x 28 layers in two
# bands; 67 DP16KD at 4 x 4). Measured builds in boards/README.md
register(Board(name="ulx3s-12f", platform="amaranth_boards.ulx3s:ULX3S_12F_Platform",
               rows=2, cols=4, act_depth=1024, wgt_depth=256, pix_depth=128, skip_cols=2,
               post_cols=4,
               doc="ECP5 LFE5U-12F, 25 MHz, FT231X at 1 Mbaud",
               resources={"LUT4": 12288, "DP16KD": 32, "MULT18X18D": 28}, **_ULX3S))
register(Board(name="ulx3s-25f", platform="amaranth_boards.ulx3s:ULX3S_25F_Platform",
               rows=4, cols=4, act_depth=1024, wgt_depth=512, pix_depth=256, skip_cols=2,
               post_cols=4, doc="ECP5 LFE5U-25F, 25 MHz, FT231X at 1 Mbaud",
               resources={"LUT4": 24288, "DP16KD": 56, "MULT18X18D": 28}, **_ULX3S))
register(Board(name="ulx3s-45f", platform="amaranth_boards.ulx3s:ULX3S_45F_Platform",
               rows=4, cols=4, act_depth=8192, wgt_depth=2048, pix_depth=512, skip_cols=2,
               doc="ECP5 LFE5U-45F, 25 MHz, FT231X at 1 Mbaud",
               resources={"LUT4": 43848, "DP16KD": 108, "MULT18X18D": 72}, **_ULX3S))
# the 85F's default builds in minutes on the oscillator's clock; the 8 x 8 at 100 MHz
# needs the PLL, the block RAMs' output registers and the area options of ULX3S_85F_8X8
# (`--rows 8 --cols 8 --post-cols 2 --act-share 2 --act-width 8 --feed-regs 2 --clock-mhz 100
# --outreg`, boards/README.md)
register(Board(name="ulx3s-85f", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
               rows=4, cols=4, act_depth=8192, wgt_depth=2048, pix_depth=512, skip_cols=2,
               doc="ECP5 LFE5U-85F, 25 MHz, FT231X at 1 Mbaud",
               resources={"LUT4": 83640, "DP16KD": 208, "MULT18X18D": 156}, **_ULX3S))

#: the instance of the 85F's 8 x 8 that meets 100 MHz (with ``--clock-mhz 100 --outreg``; the Make
#: targets' example), as ``Board.params`` keywords: the bench's and the tests' one definition
ULX3S_85F_8X8 = dict(rows=8, cols=8, post_cols=2, act_share=2, act_width=8, feed_regs=2)
#: the 85F's 4 x 4 with one-column skip groups and the default instance's buffers: the board
#: instance whose efficiency on the demo network reaches issue 4's 0.90 with eight images
#: stacked (cycle model; boards/README.md, "A board instance at issue 4's efficiency")
ULX3S_85F_4X4_SKIP1 = dict(rows=4, cols=4, skip_cols=1, act_depth=16384, pix_depth=1024,
                           stacking=1)
