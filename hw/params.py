"""The one source of truth for Sluice's hardware parameters.

Array size defaults, bit widths, buffer depths, the AXI4-Lite register map, the layer
descriptor, the error flags and the AXI4-Stream word formats are defined here and imported by
the generator (``sluice.hw.top``), the host sequence (``sluice.sim.host``), the cycle model
(``sluice.hw.cycle_model``), the tests and the generated register map (``hw/REGMAP.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sluice.errors import SluiceError

VERSION = 6  # bumps when the register map or the stream format changes

# ---------------------------------------------------------------------------------------------
# Bit widths (SPEC section 2)
ACT_BITS = 8  # int8 activations
WGT_BITS = 8  # int8 weights
ACC_BITS = 32  # int32 accumulators (the exporter guarantees no overflow)
#: the largest product magnitude: SPEC's weights lie in [-127, 127], activations are int8
PROD_MAX = (1 << (ACT_BITS - 1)) * ((1 << (WGT_BITS - 1)) - 1)
PARAM_BITS = 32  # bias, thresh, mult, shift, res_mult, res_shift
DIM_BITS = 16  # channel counts and map sizes in the descriptor
PIX_BITS = 16  # output pixel index in result words

KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)
MAX_PADDING = 3
#: the most output rows the pixel walker skips between two stacked images (descriptor IMG_GAP):
#: the rows whose windows straddle two images, K - 1 + the separator rows at most
IMG_GAP_MAX = 7


def walked_rows(h_out: int, img_rows: int = 0, img_gap: int = 0) -> list[int]:
    """The output rows of a job (``H_OUT`` rows) the pixel walker visits, in order: all of
    them, or with stacked images (descriptor IMG_ROWS, IMG_GAP) all but the IMG_GAP rows after
    each image's IMG_ROWS rows, a gap being skipped only when more than IMG_GAP rows follow the
    image's last (so a job ends on a visited row). The rows it skips get no results and no gate
    bits; a result's pixel index is still the row's (``row * W_OUT + x``)."""
    rows, r, i = [], 0, 0
    while r < h_out:
        rows.append(r)
        if img_rows and i == img_rows - 1:
            i = 0
            if h_out - 1 - r > img_gap:
                r += 1 + img_gap
                continue
        elif img_rows:
            i += 1
        r += 1
    return rows


#: ``HwParams.row_slices``: 1 none, 2 a last pass on two row slices, 3 also on three (3 x 3)
ROW_SLICES = (1, 2, 3)
#: registers between the buffers' read data and the array edge, on every activation and
#: weight feed (on top of the skew), by default: without one, row 0 / column 0 see block-RAM
#: output, byte select and the element's multiply-accumulate in one cycle (the Fmax-limiting
#: path on ECP5). A pass's sums are final that many cycles later; the top level's drain and the
#: cycle model account for it (``HwParams.array_extra``)
FEED_REGS = 1
#: ``HwParams.feed_regs``: the default, or a second register after each feed's byte select
FEED_REGS_CHOICES = (FEED_REGS, 2)
#: the kernel whose passes may run on three slices, one kernel row each (``row_slices`` 3)
SLICE3_KERNEL = 3
MAX_SHIFT = 62


#: attributes of a register that duplicates another on purpose (the same input, one copy per
#: DSP block it feeds, so placement can put each beside its block): ``keep`` on the register's
#: wire. Synthesis tools merge registers with equal inputs unless told not to; the board flow's
#: yosys script marks the flip-flop driving every such wire ``keep`` (``KEEP_REGS_YOSYS``), and
#: a flow of your own needs its equivalent (yosys: that command after reading the design;
#: Vivado: ``synth_design -keep_equivalent_registers``)
KEEP_ATTRS = {"keep": 1}
#: the yosys commands that carry ``KEEP_ATTRS`` from the wires to the flip-flops driving them
#: (yosys keeps a wire with ``keep`` but still merges its driver with an equal one; a ``keep``
#: cell it does not merge)
KEEP_REGS_YOSYS = "setattr -set keep 1 a:keep %ci1 t:$dff %i"

#: the accelerator's block RAMs (by name, ``hw/top.py``) whose read ports never read, in a cycle
#: whose data is used, the address their one write port writes in that cycle: the activations
#: are read only after their write (``act_ready``, the beat count seen a cycle late); weights,
#: residuals and tile parameters from the bank the loader is not filling; base sums and active
#: lists written in the base phase and read in the conditional one; the metadata delay line a
#: fixed distance behind its write; and the output FIFOs' ``storage`` (``hw.fifo.BufferedFIFO``:
#: the accelerator's, the board bridge's and the loopback's; Amaranth's ``SyncFIFOBuffered``,
#: whose two ports are never enabled at one address); and the board bridge's input ring
#: (``in_ring``: a byte is read once committed, a PUSH writes only into free space); and the
#: register file's descriptor read-back copy (``desc_mem``: a read waits while a write is
#: accepted, ``hw.regs``). Synthesis
#: need not keep the read-old-data semantics on a same-address collision for them: an ECP5
#: DP16KD's two ports do not, and yosys emulates them with a delayed write and a bypass
#: multiplexer on the read data (on the 8 x 8 ECP5 build those were on the slowest paths out of
#: the residual and base-sum block RAMs; on the iCEBreaker the FIFOs' bypasses took about 290
#: logic cells)
NO_COLLISION_MEMORIES = ("act_buf", "wgt_buf", "res_buf", "psum_buf", "active_list",
                         "par_mem", "post_meta", "storage", "in_ring", "desc_mem")


def no_collision_yosys(params=None) -> tuple[str, ...]:
    """The yosys commands that declare the collisions of ``NO_COLLISION_MEMORIES`` don't-care
    (``COLLISION_X_MASK``: a bit per write port of the memory; one each, but the activation
    copies of an instance whose copies take two words a cycle, ``act_write_ports``, have two),
    run after reading the design like ``KEEP_REGS_YOSYS``. (A mask narrower than the write
    ports leaves a port's collisions defined, and yosys then builds the memory from
    flip-flops.)"""
    ports = {"act_buf": params.act_write_ports if params is not None else 1}
    mask = {1: "1'1", 2: "2'b11"}
    return tuple(f"setparam -set COLLISION_X_MASK {mask[ports.get(name, 1)]} t:$memrd_v2 "
                 f"r:MEMID=*{name}* %i" for name in NO_COLLISION_MEMORIES)


#: element multiplier styles (``HwParams.pe_mult``)
PE_MULTS = ("dsp", "logic")


@dataclass(frozen=True)
class HwParams:
    """Generator parameters of one accelerator instance.

    rows x cols processing elements (a row is an output pixel, a column an output channel);
    ``act_depth`` bytes of activation buffer (replicated once per row), ``wgt_depth`` weight
    words of ``cols`` bytes (one word per (input channel, ky, kx) step of a channel tile),
    ``pix_depth`` output pixels per layer job (partial-sum, active-list and residual buffers).
    ``skip_cols``: width of a skip group (divides ``cols``). Each group of ``skip_cols`` columns
    has its own activation feed and its own compacted pixel list in the conditional phase, so a
    pixel is skipped for a group when the group's ``skip_cols`` gates are all off. Narrower
    groups skip more work but need ``rows * cols / skip_cols`` activation buffer copies.
    ``gating``: False leaves the gating hardware out at elaboration (gate unit, skip
    controller, active lists, partial-sum buffers, per-group activation feeds): a dense-only
    build of the same array, the baseline for the cost of gating. Such a build has one
    activation feed per row (``skip_cols`` becomes ``cols``) and refuses FLAGS.GATED with
    ERROR.GATING; ID bit 16 tells the host which kind it talks to.
    ``pe_mult``: how an element's 8 x 8 multiply is written: ``"dsp"`` (a ``*``, which FPGA
    synthesis maps to a DSP block) or ``"logic"`` (a sum of shifted partial products, which it
    maps to LUTs and carry chains, leaving the DSP blocks to the post-processing). The same
    integers either way; only the netlist differs.
    ``post_cols``: columns per post-processing unit (divides ``cols``). 1 gives every column
    its own unit (the drain takes one cycle per array row); ``cols`` shares one unit between
    all columns, about 1,250 ECP5 LUTs per column less, the drain then taking ``post_cols``
    cycles per row (nearly free on small arrays, whose passes are long against their drain:
    +0.1% cycles at 2 x 2 and +1.9% at 4 x 4 on the embedded network, +25.6% at 8 x 8).
    ``act_share``: skip groups per activation-buffer copy, 1 or 2. With 2, the two skip groups
    of a pair read one copy through its two ports (a true dual-port block RAM: ECP5 DP16KD,
    most ASIC libraries; not the iCE40's, which would duplicate the copy), halving the copies
    and the activation write fan-out. The write then takes one of those ports, so a job's
    passes start only once all its activations are in (no overlap of the activation stream
    with the first tile's passes): a few percent more cycles (see ``hw/README.md``); while
    they load, both ports write (``act_write_ports``), two words a cycle.
    ``act_width``: bytes per activation-buffer word (a power of two up to ``stream_bytes``;
    0: ``stream_bytes``). A beat is written over ``stream_bytes / act_width`` cycles (half
    that into shared copies, ``act_pieces``), the stream held meanwhile; narrow words fill the
    board builds' shallow copies (a 2048-byte copy 2 bytes wide is one ECP5 block RAM instead
    of two 36-bit ones) and shrink each feed's byte select. Free where the stream is slower
    than that anyway (a UART).
    ``row_slices``: 1, 2 or 3 (``ROW_SLICES``). With 2 a tile's last conditional pass whose
    skip groups have at most ``rows // 2`` pixels left runs each pixel on two rows, each
    summing half the conditional channels (a second weight read; by kernel rows before
    session 40); with 3 (the default) a 3 x 3 layer's with at most ``rows // 4`` on three
    rows, a kernel row each (a third read). See ``hw/README.md``, "Row slices", "Three
    slices" and "Channel slices".
    ``feed_regs``: registers between the buffers' block-RAM read data and the array edge, on
    every activation and weight feed (``FEED_REGS_CHOICES``: 1 or 2). The second gives the
    route from a block RAM's output (no output register) to the first of them a cycle of its
    own; the sums are final a cycle later (``array_extra``), a cycle more at each phase's end
    and on each pass that waits for the previous one's drain (the 8 x 8 board build with
    8-byte activation words: ``hw/README.md``, ``boards/README.md``).
    ``stacking``: the pixel walker's jump over the output rows between stacked images
    (descriptor IMG_ROWS, IMG_GAP; ``sluice run-model --images N``). False leaves it out (the
    board builds, whose host runs one image at a time): the two registers are then ignored,
    and the host runs stacked images each in bands of its own. ID bit 17 says which.
    """

    rows: int = 8
    cols: int = 8
    act_depth: int = 16384
    wgt_depth: int = 2048
    pix_depth: int = 1024
    skip_cols: int = 2
    stream_width: int = 0  # input stream bytes per beat; 0: automatic (see stream_bytes)
    gating: bool = True
    pe_mult: str = "dsp"
    post_cols: int = 1
    act_share: int = 1
    act_width: int = 0
    row_slices: int = 3
    feed_regs: int = FEED_REGS
    stacking: bool = True

    def __post_init__(self):
        if not self.gating:  # no skip groups without gating: one feed per row
            object.__setattr__(self, "skip_cols", self.cols)
        if self.feed_regs not in FEED_REGS_CHOICES:
            raise SluiceError(f"--feed-regs: {self.feed_regs} must be 1 or 2")
        if self.stacking not in (0, 1):
            raise SluiceError(f"--stacking: {self.stacking} must be 0 or 1")
        object.__setattr__(self, "stacking", bool(self.stacking))
        if self.row_slices not in ROW_SLICES:
            raise SluiceError(f"--row-slices: {self.row_slices} must be 1, 2 or 3")
        if not self.gating:  # (only conditional passes are sliced)
            object.__setattr__(self, "row_slices", 1)
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not 2 <= v <= 32:
                raise SluiceError(f"--{name}: {v} is outside 2..32")
        for name in ("act_depth", "wgt_depth", "pix_depth"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1) or v > 1 << 20:
                raise SluiceError(f"--{name.replace('_', '-')}: {v} must be a power of two "
                                  "in 1..2^20")
        if self.pix_depth > 1 << PIX_BITS:  # a pixel index must fit the result word's field
            raise SluiceError(f"--pix-depth: {self.pix_depth} is above 2^{PIX_BITS}, the "
                              "largest pixel index a result word carries")
        if self.skip_cols < 1 or self.cols % self.skip_cols:
            raise SluiceError(f"--skip-cols: {self.skip_cols} must divide --cols {self.cols}")
        if self.post_cols < 1 or self.cols % self.post_cols:
            raise SluiceError(f"--post-cols: {self.post_cols} must divide --cols {self.cols}")
        if self.pe_mult not in PE_MULTS:
            raise SluiceError(f"--pe-mult: {self.pe_mult!r} is not one of {', '.join(PE_MULTS)}")
        sw = self.stream_width
        if sw and (sw & (sw - 1) or sw < max(self.cols, 4)):
            raise SluiceError(f"--stream-width: {sw} must be a power of two >= max(cols, 4)")
        if self.act_share not in (1, 2):
            raise SluiceError(f"--act-share: {self.act_share} must be 1 or 2")
        aw = self.act_width
        if aw and (aw < 1 or aw & (aw - 1) or aw > self.stream_bytes):
            raise SluiceError(f"--act-width: {aw} must be a power of two up to the stream width "
                              f"({self.stream_bytes} bytes)")
        if self.act_depth % self.stream_bytes:
            raise SluiceError(f"--act-depth: {self.act_depth} must be a multiple of the stream "
                              f"width ({self.stream_bytes} bytes)")

    @property
    def stream_bytes(self) -> int:
        """Input stream beat width in bytes: ``stream_width`` or, when 0, the next power of two
        of max(cols, 16); a beat holds ``wgt_pack`` weight steps (cols int8 each),
        ``par_pack`` 32-bit parameters, ``res_pack`` residual pixels or ``stream_bytes``
        activations."""
        if self.stream_width:
            return self.stream_width
        n = max(self.cols, 16)
        return 1 << (n - 1).bit_length()  # power of two so activation bytes pack evenly

    @property
    def wgt_pack(self) -> int:
        """Weight steps per input-stream beat and per weight-buffer word: the largest power of
        two that fits ``stream_bytes // cols`` (and ``wgt_depth``). A tile's weights then take
        ``wgt_beats`` beats instead of one per step (the first tile's load is not overlapped
        with compute, and a small tile's compute may not cover the next tile's load)."""
        n = self.stream_bytes // self.cols
        return min(1 << (n.bit_length() - 1), self.wgt_depth)

    @property
    def res_pack(self) -> int:
        """Output pixels of residual per input-stream beat and per residual-buffer word: the
        largest power of two that fits ``stream_bytes // cols`` (and ``pix_depth``)."""
        n = self.stream_bytes // self.cols
        return min(1 << (n.bit_length() - 1), self.pix_depth)

    def res_beats(self, pixels: int) -> int:
        """Input-stream beats of a tile's residual for ``pixels`` output pixels."""
        return -(-pixels // self.res_pack)

    @property
    def par_pack(self) -> int:
        """32-bit parameter values per input-stream beat."""
        return self.stream_bytes // 4

    @property
    def par_col_beats(self) -> int:
        """Input-stream beats of one parameter of a tile (``cols`` values, ``par_pack`` per
        beat; each parameter starts a beat, so column c is always in slot ``c % par_pack``)."""
        return -(-self.cols // self.par_pack)

    def wgt_beats(self, steps: int) -> int:
        """Input-stream beats of a tile's ``steps`` weight words."""
        return -(-steps // self.wgt_pack)

    def wgt_parts(self, c_in: int, base_cin: int, kk: int, gated: bool) -> tuple[int, int]:
        """A tile's WGT beats in its two parts: the words the base phase reads,
        ``ceil(BASE_CIN * K * K / wgt_pack)`` (in a dense job every beat), and the rest, which
        the stream sends after the tile's residual (after the activations in tile 0's case)."""
        total = self.wgt_beats(c_in * kk)
        first = self.wgt_beats(base_cin * kk) if gated else total
        return first, total - first

    @property
    def par_beats(self) -> int:
        """Input-stream beats of a tile's parameters: ``par_col_beats`` per parameter of
        ``PARAM_ORDER``."""
        return len(PARAM_ORDER) * self.par_col_beats

    @property
    def sum_bits(self) -> int:
        """Bits of the elements' sums, the stored base sums and the drained sums: a pass sums
        at most ``wgt_depth`` products (the WGT_BUFFER check refuses ``C_IN * K * K`` beyond
        it), each at most ``PROD_MAX`` = 128 * 127 in magnitude (SPEC: weights in [-127, 127]),
        so every sum fits these signed bits exactly: 26 for the default 2048, 21 for 64, at
        most ``ACC_BITS``. (A weight of -128, which no layer file may hold, could make the
        longest pass's extreme sum wrap.) The post-processing adds the int32 bias at
        ``ACC_BITS``."""
        return min(ACC_BITS, (PROD_MAX * self.wgt_depth).bit_length() + 1)

    @property
    def slice_rows(self) -> int:
        """Rows per slice of a sliced pass (``row_slices`` 2): pixel ``i`` of the pass on rows
        ``i`` and ``i + slice_rows``, ``i < slice_rows``; 0 when passes are not sliced."""
        return self.rows // 2 if self.row_slices >= 2 else 0

    @property
    def slice3_rows(self) -> int:
        """Rows per slice of a three-slice pass (``row_slices`` 3, 3 x 3 layers): pixel ``i``
        on rows ``i``, ``i + slice3_rows`` and ``i + slice_rows``, ``i < slice3_rows``
        (``rows // 4``); 0 when no pass has three slices (fewer than 4 rows)."""
        return self.rows // 4 if self.row_slices == 3 else 0

    @property
    def array_extra(self) -> int:
        """Cycles from a step's issue-side registers to an element's sum, beyond the skew
        (``ISSUE_REGS + feed_regs + PE_STAGES``, ``hw/pe.py``): the drain and the cycle model
        wait this much longer than an unpipelined array would."""
        from sluice.hw.pe import ISSUE_REGS, PE_STAGES
        return ISSUE_REGS + self.feed_regs + PE_STAGES

    @property
    def groups(self) -> int:
        """Skip groups per array row."""
        return self.cols // self.skip_cols

    @property
    def act_bytes(self) -> int:
        """Bytes per activation-buffer word (``act_width``, or the stream width when 0)."""
        return self.act_width or self.stream_bytes

    @property
    def act_write_ports(self) -> int:
        """Words an activation-buffer copy takes per cycle while the activations load: 2
        when the copies are shared (``act_shared``: no pass reads them until the load ends,
        so both block-RAM ports are free to write) and a beat holds more than one word;
        else 1."""
        return 2 if self.act_shared and self.stream_bytes > self.act_bytes else 1

    @property
    def act_pieces(self) -> int:
        """Cycles of activation-buffer writes per input-stream beat (``act_write_ports``
        words each)."""
        return self.stream_bytes // (self.act_bytes * self.act_write_ports)

    @property
    def act_shared(self) -> bool:
        """Some activation-buffer copy is read by two skip groups (``act_share`` 2 and more
        than one group): the activations are then all in before a job's first pass."""
        return self.act_share == 2 and self.groups > 1

    @property
    def act_copies(self) -> int:
        """Activation buffer copies (one read port per row and skip group, two per copy with
        ``act_share`` 2)."""
        return self.rows * -(-self.groups // self.act_share)

    @property
    def out_bits(self) -> int:
        """Result word width (see ``result_fields``), byte-aligned."""
        f = result_fields(self)[-1]
        n = f[1] + f[2]
        return (n + 7) // 8 * 8

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """The instance in a few words: array, skip groups, and every option not at its
        default (for command output, so two runs' lines say how their instances differ)."""
        parts = [f"{self.rows}x{self.cols}" + ("" if self.gating else " dense-only")]
        if self.gating:
            parts.append(f"skip_cols {self.skip_cols}")
        base = HwParams(rows=self.rows, cols=self.cols, gating=self.gating)
        for name in ("post_cols", "act_share", "act_width", "stream_width", "pe_mult",
                     "act_depth", "wgt_depth", "pix_depth", "row_slices", "feed_regs",
                     "stacking"):
            if getattr(self, name) != getattr(base, name):
                parts.append(f"{name} {getattr(self, name)}")
        return ", ".join(parts)


DEFAULT = HwParams()


def slice_taps(kernel: int) -> tuple[int, int]:
    """(kernel rows of a kernel-row slice split's upper slice, of its lower one) for a
    ``kernel`` x ``kernel`` layer: ``ceil(K/2)`` and ``K - ceil(K/2)``. Since session 40 only
    a three-slice pass splits kernel rows (3 x 3: its lower slice starts ``ceil(K/2)`` = 2
    rows down); two slices split the channels. A layer is sliced only where this has a lower
    part (``K >= 3``): a 1 x 1 layer gives (1, 0), never sliced."""
    up = -(-kernel // 2)
    return up, kernel - up

# ---------------------------------------------------------------------------------------------
# AXI4-Lite register map: 32-bit registers, byte addresses.


@dataclass(frozen=True)
class Register:
    name: str
    addr: int
    access: str  # "rw", "ro", "wo"
    doc: str
    fields: tuple = field(default_factory=tuple)  # (name, lsb, width, doc)


# Descriptor registers, in order. Every one is 16 bits wide (upper bits read as zero).
DESCRIPTOR = (
    ("C_IN", "input channels"),
    ("C_OUT", "output channels"),
    ("H_IN", "input map height (rows of this job's input band)"),
    ("W_IN", "input map width"),
    ("H_OUT", "output map height of this job"),
    ("W_OUT", "output map width"),
    ("KERNEL", "kernel size K, one of 1, 3, 5, 7"),
    ("STRIDE", "stride, 1 or 2"),
    ("PAD_TOP", "zero rows above the input band, 0..3"),
    ("PAD_LEFT", "zero columns left of the input, 0..3 (right/bottom padding follow from "
                 "W_OUT/H_OUT)"),
    ("PARTITIONS", "p; must divide C_IN and C_OUT (1 for a dense layer)"),
    ("BASE_CIN", "C_IN / p (checked by the hardware: BASE_CIN * p == C_IN)"),
    ("GROUP_COUT", "C_OUT / p (checked: GROUP_COUT * p == C_OUT)"),
    ("FLAGS", "layer flags, see fields"),
    ("BASE_LO", "with FLAGS.BASE_FIRST: first input channel of the common base set "
                "(0 for SPEC 'first'; g*BASE_CIN runs base group g of a grouped layer alone)"),
    ("IMG_ROWS", "images stacked along the height: output rows per image (0: one map, no "
                 "gaps); after every IMG_ROWS output rows the pixel walker skips IMG_GAP rows "
                 "(the rows between two images), unless those would reach the last row"),
    ("IMG_GAP", f"output rows skipped after each image's IMG_ROWS rows, 0..{IMG_GAP_MAX} "
                "(never computed: no results, no gate bits)"),
)

def desc_ranges(p: HwParams | None = None) -> dict[str, tuple[int, str]]:
    """Descriptor registers whose flip-flops keep fewer than DIM_BITS bits: ``{name: (bits,
    error flag)}``. Every value of such a field in a job the accelerator accepts fits in
    ``bits``: KERNEL 1..7, STRIDE 1..2, padding 0..MAX_PADDING, and with buffers ``p`` the
    map sizes and channel counts the buffer checks bound (H_OUT, W_OUT <= H_OUT * W_OUT <=
    pix_depth; H_IN, W_IN <= C_IN * H_IN * W_IN <= act_depth; C_IN <= the smaller of that
    and C_IN * K * K <= wgt_depth; BASE_CIN, PARTITIONS and, with BASE_FIRST, BASE_LO <= C_IN
    by the partition checks). The register file keeps the low ``bits`` and whether more was
    written (its ``<name>_over`` port); a larger value sets the error flag named here (the
    check it would fail), and the flags computed from the field's value see only its low bits.
    Read back, a register returns the value as written (``hw/regs.py``). C_OUT and
    GROUP_COUT, whose channel tiles are streamed, keep DIM_BITS. On an instance with the
    walker's jump (``HwParams.stacking``) IMG_GAP keeps 0..IMG_GAP_MAX and IMG_ROWS as many
    bits as H_OUT; without it both keep DIM_BITS and are ignored, never refused."""
    out = {"KERNEL": (max(KERNELS).bit_length(), "KERNEL"),
           "STRIDE": (max(STRIDES).bit_length(), "STRIDE"),
           "PAD_TOP": (MAX_PADDING.bit_length(), "PADDING"),
           "PAD_LEFT": (MAX_PADDING.bit_length(), "PADDING")}
    if p is not None:
        cin_max = min(p.act_depth, p.wgt_depth)
        cin_flag = "WGT_BUFFER" if p.wgt_depth <= p.act_depth else "ACT_BUFFER"
        for name, bound, flag in (("H_OUT", p.pix_depth, "PIX_BUFFER"),
                                  ("W_OUT", p.pix_depth, "PIX_BUFFER"),
                                  ("H_IN", p.act_depth, "ACT_BUFFER"),
                                  ("W_IN", p.act_depth, "ACT_BUFFER"),
                                  ("C_IN", cin_max, cin_flag),
                                  ("BASE_CIN", cin_max, "PARTITIONS"),
                                  ("PARTITIONS", cin_max, "PARTITIONS"),
                                  ("BASE_LO", cin_max, "PARTITIONS")):
            if bound.bit_length() < DIM_BITS:
                out[name] = (bound.bit_length(), flag)
    if p is None or p.stacking:  # (without the jump both are ignored, never refused)
        out["IMG_GAP"] = (IMG_GAP_MAX.bit_length(), "GEOMETRY")
        if p is not None and p.pix_depth.bit_length() < DIM_BITS:
            out["IMG_ROWS"] = (p.pix_depth.bit_length(), "PIX_BUFFER")
    return out


FLAG_FIELDS = (
    ("GATED", 0, 1, "1: base phase, gate unit, conditional phase; 0: one dense phase"),
    ("RELU", 1, 1, "clamp low bound 0 instead of -128"),
    ("RESIDUAL", 2, 1, "add rescale(residual, res_mult, res_shift) before requantising"),
    ("BASE_FIRST", 3, 1, "every output channel's base set is input channels "
                         "[BASE_LO, BASE_LO + BASE_CIN) (SPEC 'first' with BASE_LO = 0); "
                         "0: channel grouping ('group')"),
)

# a CTRL write is held (AWREADY/WREADY low) until the values derived from the descriptor (the
# products of its fields, one serial multiplier in ``hw/products.py``, and the error flags) have
# settled: at most this many cycles after the last descriptor write (the test measures it)
CTRL_WAIT_MAX = 160

CTRL_FIELDS = (("START", 0, 1, "write 1: start the layer job described by the descriptor (the "
                f"write is accepted up to {CTRL_WAIT_MAX} cycles after the last descriptor "
                "write: AWREADY/WREADY wait until the descriptor's products and checks have "
                "settled)"),)
STATUS_FIELDS = (
    ("BUSY", 0, 1, "a job is running"),
    ("DONE", 1, 1, "the last job finished (cleared by START)"),
    ("ERROR", 2, 1, "the last START was refused; see ERROR register"),
)

# Error flags (ERROR register). A refused job never touches the streams.
ERROR_FIELDS = (
    ("ZERO_SIZE", 0, 1, "a channel count, map size or partition count is zero"),
    ("KERNEL", 1, 1, "KERNEL not in 1, 3, 5, 7"),
    ("STRIDE", 2, 1, "STRIDE not 1 or 2"),
    ("PADDING", 3, 1, "PAD_TOP or PAD_LEFT above 3"),
    ("PARTITIONS", 4, 1, "BASE_CIN * p != C_IN, or GROUP_COUT * p != C_OUT (group mode), "
                         "or BASE_LO + BASE_CIN > C_IN (BASE_FIRST)"),
    ("GEOMETRY", 5, 1, "an output window reaches beyond the input plus 3 padding rows/cols, "
                       f"or IMG_GAP above {IMG_GAP_MAX} (on an instance with HwParams."
                       "stacking)"),
    ("ACT_BUFFER", 6, 1, "C_IN * H_IN * W_IN exceeds the activation buffer"),
    ("WGT_BUFFER", 7, 1, "C_IN * K * K exceeds the weight buffer"),
    ("PIX_BUFFER", 8, 1, "H_OUT * W_OUT exceeds the pixel buffers, or IMG_ROWS is twice "
                         "their depth or more"),
    ("SKIP_GROUP", 9, 1, "gated group mode with GROUP_COUT not a multiple of the skip group "
                         "width (the host pads each base group with unused channels)"),
    ("GATING", 10, 1, "FLAGS.GATED on a dense-only build (generated with gating off, ID bit 16 "
                      "clear)"),
)

COUNTERS = (
    ("CYCLES", "cycles from START to DONE"),
    ("MACS_ISSUED", "element MACs performed (accumulate enabled, valid pixel and channel)"),
    ("MACS_SKIPPED", "element MACs of the conditional phase avoided by the skip controller "
                     "(pixels whose whole tile is gated off) and by per-element enables"),
    ("STALL_CYCLES", "compute cycles in which no step entered the array (row-set loads, "
                     "waiting for the result drain, phase switches)"),
    ("LOAD_CYCLES", "cycles spent reading the input stream while the array was idle"),
    ("PASSES", "array passes issued (rows pixels x cols channels each)"),
    ("ACTIVE_PIXELS", "(pixel, skip group) items that entered a conditional phase, summed "
                      "over tiles"),
    ("SLICED_PASSES", "conditional passes run on row slices (each pixel on two or three "
                      "rows, the kernel's rows split between them; 0 without row slices)"),
)


def _build_regmap():
    regs = [
        Register("ID", 0x00, "ro", "bits 31..24 VERSION, 23..18 reserved, 17 STACKING (1: "
                 "IMG_ROWS and IMG_GAP skip the rows between stacked images; 0: they are "
                 "ignored), 16 GATING (1: gated layers supported; 0: a dense-only build), 15..8 "
                 "ROWS, 7..0 COLS (of this instance)"),
        Register("CTRL", 0x04, "wo", "control", CTRL_FIELDS),
        Register("STATUS", 0x08, "ro", "status", STATUS_FIELDS),
        Register("ERROR", 0x0C, "ro", "error flags of the last START", ERROR_FIELDS),
    ]
    for i, (name, doc) in enumerate(DESCRIPTOR):
        regs.append(Register(name, 0x10 + 4 * i, "rw", doc,
                             FLAG_FIELDS if name == "FLAGS" else ()))
    for i, (name, doc) in enumerate(COUNTERS):
        regs.append(Register(name, 0x80 + 4 * i, "ro", doc + " (32 bits, wraps)"))
    return tuple(regs)


REGISTERS = _build_regmap()
ID_GATING_BIT = 16
ID_STACKING_BIT = 17


def id_value(p: HwParams) -> int:
    """Value of the ID register of an instance (see the register map)."""
    return ((VERSION << 24) | (int(p.stacking) << ID_STACKING_BIT)
            | (int(p.gating) << ID_GATING_BIT) | (p.rows << 8) | p.cols)

REG = {r.name: r for r in REGISTERS}
ADDR_BITS = 8  # AXI4-Lite address width (byte address)

# ---------------------------------------------------------------------------------------------
# Input stream (AXI4-Stream, TDATA = 8 * stream_bytes bits), per job: the tiles' sections in
# tile order, with the ACT section right after tile 0's (compute on tile 0 starts while the
# activations stream in, each step waiting for its input channels):
#   ACT: C_IN*H_IN*W_IN int8 activations, channel-major (c, y, x), packed stream_bytes per
#      beat, little-endian (byte j of a beat in TDATA[8j+7:8j]); the last beat is zero-padded.
#   per channel tile t (output channels [t*cols, t*cols + cols)):
#      a. WGT: ceil(C_IN*K*K / wgt_pack) beats of wgt_pack steps each (HwParams.wgt_pack);
#         byte (s % wgt_pack)*cols + c of beat s // wgt_pack, where s = n*K*K + ky*K + kx,
#         holds w[o, i, ky, kx] of column c's output channel o = t*cols + c (zero beyond
#         C_OUT), where i is the n-th input channel of o's sequence: dense, 0..C_IN-1; gated,
#         o's base set first, then the other channels in increasing order (each column
#         streams its own channels); the last beat zero-padded;
#      b. PAR: for each parameter k in PARAM_ORDER, par_col_beats = ceil(cols / par_pack)
#         beats of par_pack 32-bit values: column c's value in TDATA[32(c % par_pack)+31 :
#         32(c % par_pack)] of beat k * par_col_beats + c // par_pack (zero beyond C_OUT;
#         thresh ignored when dense; res_* ignored without RESIDUAL); each parameter's last
#         beat zero-padded (a column's slot is the same in every beat, so the hardware's
#         parameter memory takes it without a multiplexer);
#      c. RES (only with RESIDUAL): ceil(H_OUT*W_OUT / res_pack) beats; byte
#         (p % res_pack)*cols + c of beat p // res_pack holds residual[t*cols + c, p]; the last
#         beat zero-padded.
# TLAST is ignored on input. The output stream (TDATA = out_bits, see result_fields) carries
# one word per drained array row that holds any final result; every (output pixel, skip group)
# of every tile arrives exactly once across the words. The job ends with one word with VALID = 0
# and TLAST = 1.
PARAM_ORDER = ("bias", "thresh", "mult", "shift", "res_mult", "res_shift")


def result_fields(p: HwParams):
    """(name, lsb, width, doc) of an output stream word.

    A word carries one array row of one drained pass: the int8 results of all columns, and per
    skip group j the output pixel its columns hold and whether they hold a final result.
    """
    c, g, ng = p.cols, p.skip_cols, p.cols // p.skip_cols
    fields = [("Y", 0, 8 * c, "int8 result of column c in bits 8c+7..8c")]
    lsb = 8 * c
    for j in range(ng):
        fields.append((f"PIXEL{j}", lsb, PIX_BITS,
                       f"output pixel (y_out * W_OUT + x_out) of columns {j * g}..{j * g + g - 1}"))
        lsb += PIX_BITS
    fields.append(("VALID", lsb, ng, "bit j: the columns of skip group j hold final results"))
    lsb += ng
    fields.append(("GATE", lsb, c, "gate bit d of column c (all ones in dense mode)"))
    lsb += c
    fields.append(("TILE", lsb, PIX_BITS, "channel tile: output channel = TILE * cols + c"))
    return tuple(fields)


def kk_of(k: int) -> int:
    return k * k


# ---------------------------------------------------------------------------------------------
# Documentation


def regmap_markdown(p: HwParams = DEFAULT) -> str:
    """The register map and stream format as Markdown (committed as hw/REGMAP.md)."""
    out = ["# Sluice register map and stream format",
           "",
           "Generated by `sluice regmap` from `hw/params.py` (do not edit by hand). "
           f"Version {VERSION}, shown for the default {p.rows} x {p.cols} array.",
           "",
           "## AXI4-Lite registers (32-bit, byte addresses)",
           "",
           "| addr | name | access | meaning |",
           "|---|---|---|---|"]
    for r in REGISTERS:
        out.append(f"| 0x{r.addr:02X} | {r.name} | {r.access} | {r.doc} |")
    for r in REGISTERS:
        if r.fields:
            out += ["", f"### {r.name} fields", "", "| bits | name | meaning |", "|---|---|---|"]
            for name, lsb, width, doc in r.fields:
                bits = f"{lsb}" if width == 1 else f"{lsb + width - 1}..{lsb}"
                out.append(f"| {bits} | {name} | {doc} |")
    out += ["",
            "## Input stream",
            "",
            f"TDATA is 8 x stream_bytes bits (stream_bytes = `--stream-width`, by default the "
            f"next power of two of max(cols, 16); {p.stream_bytes} for this array). Per job: "
            "tile 0's section with ACT before its WGT2 part (WGT1, PAR, RES, ACT, WGT2), then "
            "the sections of tiles 1, 2, ... (WGT1, PAR, RES, WGT2 each). The first tile "
            "computes while the activations stream in (a step waits for its input channels); "
            "a tile starts once its WGT1, PAR and RES are in, its conditional phase once its "
            "WGT2 is in too.",
            "",
            "- **ACT**: `C_IN*H_IN*W_IN` int8 activations in `(c, y, x)` order, "
            "`stream_bytes` per beat, byte j in `TDATA[8j+7:8j]`, last beat zero-padded.",
            "- The section of tile `t` of `cols` output channels, in this order (its weight "
            "beats WGT in two parts):",
            f"   1. **WGT1**: in gated mode the first `ceil(BASE_CIN*K*K / {p.wgt_pack})` "
            "beats of WGT (the base phase's steps, and the first conditional step(s) where "
            "they share its last beat); in dense mode every beat of WGT. "
            f"**WGT** is `ceil(C_IN*K*K / {p.wgt_pack})` beats, {p.wgt_pack} weight "
            f"step(s) per beat (`wgt_pack`: the largest power of two in stream_bytes / cols); "
            f"for step `s = n*K*K + ky*K + kx`, byte `(s % {p.wgt_pack})*cols + c` of beat "
            f"`s // {p.wgt_pack}` holds "
            "`w[o, i, ky, kx]` for column c's channel `o = t*cols + c` (zero beyond C_OUT), "
            "where `i` is the n-th input channel of o's sequence: `0..C_IN-1` in dense mode; "
            "in gated mode o's base set first, then the other channels in increasing order "
            "(every column streams its own channels); the last beat zero-padded. Weights "
            "lie in [-127, 127] (SPEC): the sums are `sum_bits` wide "
            f"({p.sum_bits} bits here, from `wgt_depth`), exact for such weights; a weight "
            "of -128 could wrap the longest pass's extreme sum.",
            f"   2. **PAR**: `{p.par_beats}` beats: for each parameter `k` of "
            f"{', '.join('`' + n + '`' for n in PARAM_ORDER)} (in that order), "
            f"`ceil(cols / {p.par_pack})` = {p.par_col_beats} beat(s) of {p.par_pack} 32-bit "
            f"values, column `c`'s value in `TDATA[32(c % {p.par_pack})+31 : "
            f"32(c % {p.par_pack})]` of beat `k*{p.par_col_beats} + c // {p.par_pack}`; each "
            "parameter's last beat zero-padded.",
            f"   3. **RES** (only with FLAGS.RESIDUAL): `ceil(H_OUT*W_OUT / {p.res_pack})` "
            f"beats, {p.res_pack} output pixel(s) per beat (`res_pack`, as for the weights): "
            f"byte `(p % {p.res_pack})*cols + c` of beat `p // {p.res_pack}` holds "
            "`residual[t*cols + c, p]`; the last beat zero-padded.",
            "   4. **WGT2**: the rest of WGT (gated mode; none in dense mode).",
            "",
            "## Output stream",
            "",
            f"TDATA is {p.out_bits} bits for this array ({p.groups} skip groups of "
            f"{p.skip_cols} columns). One word per drained array row that holds any final "
            "result: in the dense and base phases all groups of a row hold the same pixel, and "
            "a group whose gates are all off delivers its result at once (VALID bit set), "
            "while the other groups deliver theirs later from the conditional phase, where "
            "each group works through its own pixel list. Every (output pixel, skip group) of "
            "every tile arrives exactly once. The job ends with one word with VALID = 0 and "
            "TLAST = 1.",
            "",
            "| bits | name | meaning |",
            "|---|---|---|"]
    for name, lsb, width, doc in result_fields(p):
        out.append(f"| {lsb + width - 1}..{lsb} | {name} | {doc} |")
    out.append("")
    return "\n".join(out)
