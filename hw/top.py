"""Sluice top level: registers, loader, sequencer, skip controller, array, drain.

One layer job (see ``hw/README.md`` for the full story):

1. The *loader* FSM reads the activations into ``rows * cols / skip_cols`` replicated
   activation buffers (one read port per row and skip group; with ``act_share`` 2 a copy
   serves two skip groups through its two ports), then, for every tile of ``cols``
   output channels, the tile's weights, parameters and residual into one of two banks, so tile
   t+1 loads while tile t computes.
2. The *compute* FSM, per tile: ``COL_SETUP`` works out each column's base input channels, then
   one dense phase, or a base phase and a conditional phase.
3. A phase is a sequence of passes. A pass puts a *row set* (per row and skip group: an output
   pixel) on the array and streams every step of the phase: each skip group its own columns'
   input channels (base set, or the others) times (ky, kx). The row-set loader fills the next row
   set while the current pass runs: from a pixel walker (dense and base phases) or from the skip
   groups' *active lists* (conditional phase). With row slices (``row_slices`` 2) a
   conditional pass short enough puts each pixel on two rows, the kernel's rows split between
   them (the lower rows' weights from a second read of the bank, entering half-way down).
4. The drain reads each finished pass row by row. Dense phase: post-process and emit. Base phase:
   the gate unit compares the partial sums with the thresholds and registers the gate bits; a
   cycle later (while the sums are already in the post-processing pipeline), for a skip group
   whose gates are all off the results are emitted at once (the pixel is never streamed again
   for that group), otherwise the pixel goes to the group's active list with its gate bits and
   its partial sums to the group's partial-sum buffer. Conditional phase: only elements with
   their gate bit set accumulate; the drain passes the stored base sums beside them to the
   post-processing, which adds them, and emits (a sliced pass's two rows' sums added first).
"""

from __future__ import annotations

from amaranth.hdl import (Array, Cat, Const, Module, Mux, Signal, Value, signed,
                          unsigned)
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sluice.hw.fifo import BufferedFIFO
from sluice.hw.params import (ACT_BITS, COUNTERS, DEFAULT, DIM_BITS, ERROR_FIELDS,
                              FLAG_FIELDS, IMG_GAP_MAX, KEEP_ATTRS, KERNELS, MAX_PADDING,
                              PARAM_BITS, PARAM_ORDER, PIX_BITS, SLICE3_KERNEL, HwParams,
                              desc_ranges, id_value, slice_taps)
from sluice.hw.pe import ISSUE_REGS, SystolicArray
from sluice.hw.postproc import (GateUnit, PostProc, front_regs, mult_stages, param_read_last,
                                post_latency, res_stages)
from sluice.hw.products import SerialProducts
from sluice.hw.regs import RegisterFile, axil_members

ERR = {name: lsb for name, lsb, _, _ in ERROR_FIELDS}
FLAG = {name: lsb for name, lsb, _, _ in FLAG_FIELDS}
PH_DENSE, PH_BASE, PH_COND = 0, 1, 2


def drain_post_latency(params: HwParams) -> int:
    """Cycles from a drained row to its output word: the post-processing pipeline plus the
    ``post_cols - 1`` cycles a shared unit takes for the row's other columns."""
    return post_latency(params.cols) + params.post_cols - 1


#: words the drain's registered room test keeps free in the output FIFO (``room_q``: the level
#: and the words on their way, a cycle old, below the depth less this)
ROOM_MARGIN = 3


def out_fifo_depth(params: HwParams) -> int:
    """Output FIFO words: deep enough that, with the output stream always ready (the host
    contract), the drain never waits for room: about 2 words sit in the FIFO at full rate and
    up to ceil(POST_LATENCY / post_cols) + 1 are on their way, against a bound of the depth -
    ``ROOM_MARGIN`` registered twice (the cycle model assumes no such waits). 16, or 32 for a
    long pipeline with a post-processing unit per column."""
    on_way = -(-drain_post_latency(params) // params.post_cols) + 1
    return 16 if 2 + on_way + ROOM_MARGIN < 16 else 32


def _pipelined_sum(m, terms, name, fan_in=4):
    """The sum of ``terms``, fan_in-way adds with a register after each level, so no cycle
    holds more than a two-deep adder tree; returns (the sum, its latency): ``len(terms)``
    sums come out ``ceil(log_fan_in(len(terms)))`` cycles (at least one) after their terms."""
    level = 0
    while True:
        groups = [terms[i:i + fan_in] for i in range(0, len(terms), fan_in)]
        nxt = []
        for k, grp in enumerate(groups):
            total = sum(grp[1:], grp[0])
            reg = Signal(Value.cast(total).shape(), name=f"{name}_l{level}_{k}")
            m.d.sync += reg.eq(total)
            nxt.append(reg)
        terms, level = nxt, level + 1
        if len(terms) == 1:
            return terms[0], level


def _delayed(m, v, n, name, *, reset=False):
    """``v`` through ``n`` registers named ``{name}_d0``, ``{name}_d1``, ...; without ``reset``
    they are data registers (no reset)."""
    for i in range(n):
        q = Signal.like(v, name=f"{name}_d{i}", reset_less=not reset)
        m.d.sync += q.eq(v)
        v = q
    return v


def _log2(n):
    return (n - 1).bit_length()


def port_members(params: HwParams) -> dict:
    """The top level's ports: AXI4-Lite slave ``axil_*``, AXI4-Stream in ``s_axis_*`` and out
    ``m_axis_*`` (also used by stand-ins with the same interface, e.g. the board loopback)."""
    members = axil_members()
    members.update({
        "s_axis_tdata": In(8 * params.stream_bytes), "s_axis_tvalid": In(1),
        "s_axis_tready": Out(1), "s_axis_tlast": In(1),
        "m_axis_tdata": Out(params.out_bits), "m_axis_tvalid": Out(1),
        "m_axis_tready": In(1), "m_axis_tlast": Out(1),
    })
    return members


# register levels between a descriptor write (or the last product of the serial multiplier,
# ``hw/products.py``) and the error flags the START decision reads (a field or product, a sum
# or compare of those, the flags register); the register file holds CTRL.START back until the
# serial products are done and these have settled
DESC_LEVELS = 4


class Sluice(wiring.Component):
    """The accelerator. Ports: AXI4-Lite slave ``axil_*``, AXI4-Stream in ``s_axis_*`` and out
    ``m_axis_*``; one clock (``clk``), synchronous reset (``rst``)."""

    def __init__(self, params: HwParams = DEFAULT):
        self.params = params
        #: the block RAMs by submodule name, filled by ``elaborate`` (for simulation checks:
        #: ``tests/hw/test_collisions.py``)
        self.memories = {}
        super().__init__(port_members(params))

    def elaborate(self, platform):  # noqa: C901 - one sequencer, read top to bottom
        m = Module()
        P = self.params
        R, C, B = P.rows, P.cols, P.stream_bytes
        G, NG = P.skip_cols, P.groups
        SB = P.sum_bits  # the sums' width: the array's, the stored base sums', the drain's
        gating = P.gating  # False: a dense-only build (no base/conditional phases)
        # PU columns per post-processing unit: a drained row goes through the units in PU
        # cycles (one column each), so its word is complete PU - 1 cycles after its first column
        PU = P.post_cols
        POST_LATENCY = drain_post_latency(P)
        FR = front_regs(C)  # registers in front of the units (their inputs as read, then selected)
        PRL = param_read_last(C)  # the last post-processing stage that reads a tile parameter
        NFEED = P.feed_regs  # registers between block-RAM read data and the array edge
        AX = P.array_extra  # issue-side registers to an element's sum, beyond the skew
        assert FR + PRL <= C + 3, "the tile parameters would change under the pipeline"
        # (rows leave the drain PU cycles apart, so fewer words are on their way; the depth is
        # chosen from the same latency, so the drain never waits for FIFO room)
        OUT_FIFO_DEPTH = out_fifo_depth(P)
        Q = R * NG  # slots: (row r, skip group j) -> q = r * NG + j
        abits = _log2(P.act_depth)
        AW, AP = P.act_bytes, P.act_pieces  # activation-buffer word bytes, write cycles per beat
        WPC = P.act_write_ports  # words written per cycle (2: shared copies, both ports)
        act_words = P.act_depth // AW
        bbits = _log2(B)
        awbits = _log2(AW)
        pbits = max(_log2(P.pix_depth), 1)
        wbits = max(_log2(P.wgt_depth), 1)
        # (sdim: a window origin, in [-3, H_IN + 2] plus a stride; set from the fields below)
        # saddr: activation-buffer address arithmetic (window rows, tap and channel offsets):
        # only sums, and only the low abits of a sum address the buffer, so it is computed
        # modulo 2^(abits + 4), like the slots' window addresses (adr_s)
        saddr = signed(abits + 4)
        # stored per row-set slot and active-list entry, sized from the buffer depths (a valid
        # job has H_OUT*W_OUT <= pix_depth and C_IN*H_IN*W_IN <= act_depth): a pixel or list
        # index < pix_depth; the window's buffer address ybase*W_IN + xbase (origin ybase in
        # [-3, H_IN + 2], xbase likewise) in [-3*act_depth - 3, 4*act_depth + 2]; and the
        # window's rows and columns inside the map as kernel-tap bounds: taps ky in
        # [kylo, kyhi) (kylo = max(0, -ybase) <= 3, kyhi = H_IN - ybase clamped to 0..7; K <= 7),
        # kx likewise, so a step's "tap inside the map" is four 3-bit compares per slot, not two
        # adders and two map-size compares
        pix_s = unsigned(pbits)
        adr_s = signed(abits + 4)
        tap_s = unsigned(3)

        # ---------------------------------------------------------------- registers
        m.submodules.regs = regs = RegisterFile(
            ident=id_value(P), settle=DESC_LEVELS,
            field_bits={name: bits for name, (bits, _) in desc_ranges(P).items()})
        self.memories.update(regs.memories)
        for name in axil_members():
            port, mine = getattr(regs, name), getattr(self, name)
            if name in ("axil_awready", "axil_wready", "axil_bresp", "axil_bvalid",
                        "axil_arready", "axil_rdata", "axil_rresp", "axil_rvalid"):
                m.d.comb += mine.eq(port)
            else:
                m.d.comb += port.eq(mine)
        c_in, c_out, h_in, w_in = regs.c_in, regs.c_out, regs.h_in, regs.w_in
        sdim = signed(max(len(h_in), len(w_in)) + 3)
        h_out, w_out, kernel, stride = regs.h_out, regs.w_out, regs.kernel, regs.stride
        pad_top, pad_left, parts = regs.pad_top, regs.pad_left, regs.partitions
        base_cin, group_cout, flags = regs.base_cin, regs.group_cout, regs.flags
        gated = flags[FLAG["GATED"]] if gating else Const(0)
        relu = flags[FLAG["RELU"]]
        has_res = flags[FLAG["RESIDUAL"]]
        base_first = flags[FLAG["BASE_FIRST"]]

        # Products of descriptor fields come from one shift-and-add multiplier that runs after
        # every descriptor write (``hw/products.py``; no DSP, no multiplier in front of the error
        # check or the sequencer). The register file accepts CTRL.START only when it is done
        # and DESC_LEVELS cycles have passed, so START sees the products and the error flags
        # computed from them (err_q) settled and the job is accepted or refused at once.
        kk = Signal(7)
        # K*K from a table (KERNEL is 1, 3, 5 or 7; anything else is refused with an error flag)
        kk_table = Array(Const(k * k, 7) for k in range(8))
        m.d.sync += kk.eq(kk_table[kernel[:3]])
        # the products' width (they saturate, ``hw/products.py``): one bit above the largest
        # bound an accepted job puts on them (H_IN*W_IN <= C_IN*H_IN*W_IN <= act_depth, the
        # base and group offsets likewise; H_OUT*W_OUT <= pix_depth; C_IN*K*K and its base and
        # conditional parts <= wgt_depth), so every error check on them stays exact; the
        # partition totals, compared with C_IN and C_OUT, one bit above those fields
        prod_bits = max(abits, pbits, wbits) + 1
        # an activation-stream offset of an input channel (< act_depth in an accepted job) and
        # the sums of two or three of them the sequencer keeps (g_end + H_IN*W_IN ...)
        off_bits = prod_bits + 2
        # (name, a, b), in order: an operand may be an earlier product (a None: the first
        # product, H_IN * W_IN); kk is a register a level behind KERNEL, read from the eighth
        # product on
        c_diff = Signal(DIM_BITS)
        m.d.comb += c_diff.eq(c_in - base_cin)
        c_half = Signal(DIM_BITS)  # ceil((C_IN - BASE_CIN) / 2): a two-slice pass's channels
        m.d.comb += c_half.eq((c_diff + 1) >> 1)
        prod_list = [("hw_in", h_in, w_in), ("hw_out", h_out, w_out),
                     ("base_total", base_cin, parts), ("group_total", group_cout, parts),
                     ("n_act", None, c_in), ("base_off", None, base_cin),
                     ("lo_off", None, regs.base_lo), ("n_wgt", c_in, kk),
                     ("col_work", c_diff, kk), ("base_wk", base_cin, kk)]
        if gating and P.slice_rows:  # (two row slices: the lower slice's channel offset)
            prod_list.append(("half_off", None, c_half))
        total_bits = {"base_total": max(prod_bits, len(c_in) + 1),
                      "group_total": max(prod_bits, len(c_out) + 1)}
        m.submodules.products = prods = SerialProducts(
            [(n, prod_bits if a is None else len(a), len(b), total_bits.get(n, prod_bits))
             for n, a, b in prod_list],
            width=max(prod_bits, *total_bits.values()))
        m.d.comb += [prods.start.eq(regs.desc_write), regs.desc_busy.eq(prods.busy)]
        for n, a, b in prod_list:
            m.d.comb += [getattr(prods, n + "_a").eq(prods.hw_in if a is None else a),
                         getattr(prods, n + "_b").eq(b)]
        hw_in, hw_out, n_act, n_wgt = prods.hw_in, prods.hw_out, prods.n_act, prods.n_wgt
        # the pixel walker's row step and first row address, registered like the products above
        row_step = Signal(saddr)   # as wide as pw_rowaddr: the same sums modulo its width
        row_start = Signal(saddr)
        # stride is 1 or 2 and PAD_TOP at most MAX_PADDING (anything else is refused with an
        # error flag), so these products are a shift and a sum of shifts, not DSP multiplies
        def times_stride(v):
            return Mux(stride[1], v << 1, v)

        pad_w_in = sum(Mux(pad_top[i], w_in << i, 0) for i in range(MAX_PADDING.bit_length()))
        m.d.sync += [row_step.eq(times_stride(w_in)), row_start.eq(-pad_w_in)]
        # stacked images (IMG_ROWS, IMG_GAP): at the end of an image's IMG_ROWS output rows
        # the walker jumps over the IMG_GAP rows between two images, registered like row_step
        # (IMG_GAP is at most IMG_GAP_MAX: sums of shifts): the pixels it skips
        # (IMG_GAP * W_OUT), the row address and window origin it moves by ((IMG_GAP + 1)
        # rows), whether an image is one row and whether any image ends at all
        ST = P.stacking  # (without it the jump is not generated: IMG_ROWS, IMG_GAP ignored)
        if ST:
            img_rows, img_gap = regs.img_rows, regs.img_gap
            gbits = IMG_GAP_MAX.bit_length()
            gap_pix = Signal(len(w_out) + gbits)
            gap_step = Signal(saddr)
            gap_y = Signal(gbits + 2)
            img_on = Signal()
            img_one = Signal()
            img_last = Signal.like(img_rows)
            gap_ok0 = Signal()  # a gap fits after the first row: H_OUT - 1 > IMG_GAP
            m.d.sync += [gap_ok0.eq(h_out > img_gap + 1),
                         gap_pix.eq(sum(Mux(img_gap[i], w_out << i, 0) for i in range(gbits))),
                         gap_step.eq(row_step + sum(Mux(img_gap[i], row_step << i, 0)
                                                    for i in range(gbits))),
                         gap_y.eq(times_stride(img_gap[:gbits] + 1)),
                         img_on.eq(img_rows != 0), img_one.eq(img_rows == 1),
                         img_last.eq(img_rows - 1)]
        # no conditional channels (BASE_CIN == C_IN): registered, a level behind the descriptor
        # (the 16-bit compare in front of the drain's skip decision was the 4 x 4 ECP5
        # critical path)
        cond_empty = Signal()
        m.d.sync += cond_empty.eq(base_cin == c_in)

        # descriptor validation (error flags instead of a hang)
        err = Signal(len(ERROR_FIELDS))
        # (times the stride: a shift, as for row_step; the subtract, shift and add were a DSP
        # multiply between two adders, the 4 x 4 ECP5 critical path)
        spans = [times_stride(h_out - 1) + kernel, times_stride(w_out - 1) + kernel]
        # the padded map's extent the spans are checked against, registered beside them (the
        # sum in front of the compare was the longest path into err_q)
        lims = [h_in + pad_top + MAX_PADDING, w_in + pad_left + MAX_PADDING]
        sp_s = signed(max(len(v) for v in spans + lims) + 1)
        span_h, span_w, lim_h, lim_w = (Signal(sp_s, name=n)
                                        for n in ("span_h", "span_w", "lim_h", "lim_w"))
        m.d.sync += [span_h.eq(spans[0]), span_w.eq(spans[1]),
                     lim_h.eq(lims[0]), lim_w.eq(lims[1])]
        # the partition checks' sums, registered like the spans (the products come from the
        # serial multiplier)
        base_total, group_total = prods.base_total, prods.group_total
        base_hi = Signal(max(len(regs.base_lo), len(base_cin)) + 1)
        group_rem = Signal()
        m.d.sync += [base_hi.eq(regs.base_lo + base_cin), group_rem.eq(group_cout % G != 0)]
        # fields held in fewer bits (params.desc_ranges): a larger value written sets the
        # flag of the check it fails (ORed in below); the other checks see its low bits
        ranges = desc_ranges(P)

        def over(name):
            return getattr(regs, name.lower() + "_over") if name in ranges else Const(0)

        def is_zero(name, v):
            return (v == 0) & ~over(name)

        zero = (is_zero("C_IN", c_in) | (c_out == 0) | is_zero("H_IN", h_in) |
                is_zero("W_IN", w_in) | is_zero("H_OUT", h_out) | is_zero("W_OUT", w_out) |
                is_zero("PARTITIONS", parts))
        over_flags = Signal(len(ERROR_FIELDS))
        for flag in dict.fromkeys(flag for _, flag in ranges.values()):  # (a fixed order)
            m.d.comb += over_flags[ERR[flag]].eq(
                Cat(over(name) & (base_first if name == "BASE_LO" else 1)
                    for name, (_, f) in ranges.items() if f == flag).any())
        m.d.comb += [
            err[ERR["ZERO_SIZE"]].eq(zero),
            err[ERR["KERNEL"]].eq(~((kernel == 1) | (kernel == 3) | (kernel == 5) |
                                    (kernel == 7))),
            err[ERR["STRIDE"]].eq(~((stride == 1) | (stride == 2))),
            # (no compare where the fields hold MAX_PADDING at most)
            err[ERR["PADDING"]].eq((pad_top > MAX_PADDING) | (pad_left > MAX_PADDING)
                                   if (1 << max(len(pad_top), len(pad_left))) - 1 > MAX_PADDING
                                   else 0),
            err[ERR["PARTITIONS"]].eq((base_total != c_in) | is_zero("BASE_CIN", base_cin) |
                                      Mux(base_first, base_hi > c_in,
                                          (group_total != c_out) | (group_cout == 0))),
            err[ERR["SKIP_GROUP"]].eq(gated & ~base_first & (parts != 1) & group_rem),
            err[ERR["GATING"]].eq(flags[FLAG["GATED"]] & (not gating)),
            err[ERR["GEOMETRY"]].eq(~zero & ((span_h > lim_h) | (span_w > lim_w))),
            err[ERR["ACT_BUFFER"]].eq(n_act > P.act_depth),
            err[ERR["WGT_BUFFER"]].eq(n_wgt > P.wgt_depth),
            err[ERR["PIX_BUFFER"]].eq(hw_out > P.pix_depth),
        ]

        err_q = Signal.like(err)
        err_none = Signal()  # err_q == 0, registered beside it (a wide compare off the start)
        m.d.sync += [err_q.eq(err | over_flags), err_none.eq((err | over_flags) == 0)]

        busy = Signal()
        done = Signal()
        err_reg = Signal(32)
        m.d.comb += [regs.busy.eq(busy), regs.done.eq(done), regs.error.eq(err_reg)]

        # performance counters
        cnt = {name: Signal(32, name="cnt_" + name.lower()) for name, _ in COUNTERS}
        for name, _ in COUNTERS:
            m.d.comb += getattr(regs, "cnt_" + name.lower()).eq(cnt[name])

        # ---------------------------------------------------------------- memories
        # one copy per row and skip group, or per row and pair of skip groups (act_share 2:
        # the pair's second group reads through the copy's second port, the first group's
        # port also writes, and neither reads while a beat is written, so synthesis maps the
        # copy to true dual-port block RAM without collision logic; since no pass reads a
        # shared copy before the activations are all in, the second port writes too where a
        # beat holds more than one word, WPC = 2 words a cycle); words of AW bytes, a stream
        # beat written over AP cycles
        act_rd = []
        # (with WPC 2 the loader's address is a word pair's, and its data the pair)
        act_wr_addr = Signal(_log2(act_words // WPC) or 1)
        act_wr_data = Signal(8 * AW * WPC)
        act_wr_en = Signal()
        # the loader's write reaches the copies a cycle after the beat, from registers: the
        # stream's TVALID -> write enable -> a shared copy's address select across the die was
        # the 8 x 8 ECP5 critical path. The enable is registered once per copy (KEEP_ATTRS:
        # equal copies, each beside its block RAM); `act_ready` follows the last write
        wq_addr = Signal.like(act_wr_addr, name="act_wq_addr")
        wq_data = Signal.like(act_wr_data, name="act_wq_data")
        m.d.sync += [wq_addr.eq(act_wr_addr), wq_data.eq(act_wr_data)]
        S = P.act_share if P.act_shared else 1
        NC = -(-NG // S)  # copies per row
        act_rd_addr = [Signal(_log2(act_words) or 1, name=f"act_rd_addr_{q}") for q in range(Q)]
        for r in range(R):
            for k in range(NC):
                mem = Memory(shape=unsigned(8 * AW), depth=act_words, init=[])
                mname = f"act_buf_{r * NC + k}"
                m.submodules[mname] = self.memories[mname] = mem
                wq_en = Signal(name=f"act_wq_en_{r * NC + k}", attrs=KEEP_ATTRS)
                m.d.sync += wq_en.eq(act_wr_en)
                readers = [r * NG + j for j in range(k * S, min(k * S + S, NG))]
                if len(readers) == 1 and WPC == 1:
                    wp = mem.write_port()
                    m.d.comb += [wp.data.eq(wq_data), wp.en.eq(wq_en), wp.addr.eq(wq_addr)]
                    rp = mem.read_port()
                    m.d.comb += rp.addr.eq(act_rd_addr[readers[0]])
                    act_rd.append(rp)
                    continue
                # a port per reader, each also writing while the activations load (port i
                # the pair's word i with WPC 2; with WPC 1 the first port writes)
                for i in range(max(len(readers), WPC)):
                    w_addr = Cat(Const(i, 1), wq_addr) if WPC == 2 else wq_addr
                    port_addr = act_rd_addr[readers[i]] if i < len(readers) else w_addr
                    if i < WPC:
                        shared_addr = Signal(_log2(act_words) or 1, name=f"act_addr_{r * NC + k}"
                                             + (f"_{i}" if i else ""))
                        wp = mem.write_port()
                        m.d.comb += [shared_addr.eq(Mux(wq_en, w_addr, port_addr)),
                                     wp.data.eq(wq_data.word_select(i, 8 * AW)),
                                     wp.en.eq(wq_en), wp.addr.eq(shared_addr)]
                        port_addr = shared_addr
                    if i < len(readers):
                        rp = mem.read_port()
                        m.d.comb += [rp.addr.eq(port_addr), rp.en.eq(~wq_en)]
                        act_rd.append(rp)

        # weights and residual are double-buffered per channel tile (bank = tile parity), so the
        # loader fills tile t+1 while tile t computes
        # a word holds WP consecutive steps (one input-stream beat); a step reads its word and
        # selects its C bytes with the step index's low bits, registered beside the address
        WP = P.wgt_pack
        wpb = _log2(WP)
        m.submodules.wgt_buf = wgt_mem = Memory(shape=unsigned(8 * C * WP),
                                                depth=2 * P.wgt_depth // WP, init=[])
        self.memories["wgt_buf"] = wgt_mem
        wgt_wp = wgt_mem.write_port()
        wgt_rp = wgt_mem.read_port()
        # the residual per skip group: each group's drain reads its own pixel, and only its own
        # G columns' bytes (one G-byte memory per group, not a copy of the whole word each)
        # a word holds RP consecutive pixels (one input-stream beat's), selected after the read
        # with the pixel index's low bits, registered beside the address
        RP = P.res_pack
        rpb = _log2(RP)
        res_wp, res_rp = [], []
        for j in range(NG):
            mem = Memory(shape=unsigned(8 * G * RP), depth=2 * P.pix_depth // RP, init=[])
            m.submodules["res_buf" if NG == 1 else f"res_buf_{j}"] = mem
            self.memories["res_buf" if NG == 1 else f"res_buf_{j}"] = mem
            res_wp.append(mem.write_port())
            res_rp.append(mem.read_port())
        # per skip group: the base sums of the deferred pixels (addressed by pixel) and the
        # active list
        entry = data.StructLayout({"p": pix_s, "kylo": tap_s, "kyhi": tap_s, "kxlo": tap_s,
                                   "kxhi": tap_s, "abase": adr_s, "gate": G})
        psum_wp, psum_rp, al_wp, al_rp = [], [], [], []
        for j in range(NG if gating else 0):
            mem = Memory(shape=data.ArrayLayout(signed(SB), G), depth=P.pix_depth,
                         init=[])
            m.submodules[f"psum_buf_{j}"] = self.memories[f"psum_buf_{j}"] = mem
            psum_wp.append(mem.write_port())
            psum_rp.append(mem.read_port())
            mem = Memory(shape=entry, depth=P.pix_depth, init=[])
            m.submodules[f"active_list_{j}"] = self.memories[f"active_list_{j}"] = mem
            al_wp.append(mem.write_port())
            al_rp.append(mem.read_port())
        for wp in (wgt_wp, *res_wp, *psum_wp, *al_wp):
            m.d.comb += wp.en.eq(0)

        # ---------------------------------------------------------------- per-tile state
        # (the tile parameters, the drain's sums and the selected parameters are data registers
        # without reset, like the elements' and PostProc's: every value is written before it
        # is read, and the reset net stays with the control registers)
        # The loader writes a tile's parameters into one of two banks of a small memory, a
        # word per (bank, parameter) holding all columns (column c in its own 32-bit lane,
        # taken straight from its stream slot: PAR puts column c in slot c % par_pack of
        # every beat); at the tile's PHASE they are read, a parameter per cycle, into the
        # registers the post-processing reads (`par`; the thresholds straight into the gate
        # compare's `gate_thr`), so each value is held once in flip-flops, not three times
        # (two load banks and the active copy). The last register is written 8 cycles after
        # PHASE, before the tile's first drained row reaches a parameter (the first step
        # issues rows + 3 cycles after PHASE; on the shortest case, two rows, one-column skip
        # groups and one-step passes, the copy could start 10 cycles later and still be in
        # time: test_top's tile_params_shortest_phase fails from 11); the previous tile's
        # last row has passed every stage that reads them at PHASE (the assert above)
        NK = len(PARAM_ORDER)
        kbits = (NK - 1).bit_length()
        m.submodules.par_mem = par_mem = Memory(shape=unsigned(PARAM_BITS * C),
                                                depth=2 << kbits, init=[])
        self.memories["par_mem"] = par_mem
        par_wp = par_mem.write_port(granularity=PARAM_BITS)
        par_rp = par_mem.read_port()
        m.d.comb += par_wp.en.eq(0)
        par_rd = [par_rp.data.word_select(c, PARAM_BITS) for c in range(C)]
        par = [[Signal(32, name=f"par_{n}_{c}", reset_less=True) for c in range(C)]
               if n != "thresh" else None for n in PARAM_ORDER]
        cmp_bank = Signal()  # bank of the tile being computed
        ld_bank = Signal()  # bank the loader fills next
        # per bank: its first part is in (the base phase's weight words, the parameters and
        # the residual: the tile may start), and its conditional weight words too (the
        # conditional phase may start); cleared together when the tile is done
        bank_full = Signal(2)
        bank_cond = Signal(2) if gating else None
        K = {n: k for k, n in enumerate(PARAM_ORDER)}
        cp_k = Signal(range(NK + 1), init=NK)  # parameter read now (NK: none)
        cp_kq = Signal(range(NK + 1), init=NK)  # parameter on the read data
        m.d.comb += par_rp.addr.eq(Cat(cp_k[:kbits], cmp_bank))
        m.d.sync += cp_kq.eq(cp_k)
        with m.If(cp_k != NK):
            m.d.sync += cp_k.eq(cp_k + 1)
        for k in range(NK):
            if par[k] is not None:  # (the thresholds go to gate_thr, below)
                with m.If(cp_kq == k):
                    m.d.sync += [par[k][c].eq(par_rd[c]) for c in range(C)]
        # per skip group: the base range's first input channel of its first column (captured
        # in COL_SETUP when that column is set up; only the group's first column's is read)
        g_lo = [Signal(DIM_BITS, name=f"g_lo_{j}") for j in range(NG)]
        # g_lo - 1 and g_lo - 2, set with it, one bit wider (a g_lo of 0 or 1 wraps to a value
        # no channel index reaches): the sequencer's "next channel step passes the base range"
        # flag compares a channel index with these (equality, no adder; with ``g_i + 2 ==
        # g_lo`` the adder's carry chain was the 85F 8 x 8's critical path in session 42)
        g_lo_m1 = [Signal(DIM_BITS + 1, name=f"g_lo_m1_{j}") for j in range(NG)]
        g_lo_m2 = [Signal(DIM_BITS + 1, name=f"g_lo_m2_{j}") for j in range(NG)]
        col_valid = Signal(C)
        tile_o0 = Signal(DIM_BITS + 1)
        tile_idx = Signal(PIX_BITS)
        last_tile = Signal()
        cols_left = Signal(DIM_BITS + 1)  # (COL_SETUP: valid columns after setup_c)
        col_ok = Signal()
        grp_r = Signal(DIM_BITS)
        grp_lo = Signal(DIM_BITS)
        setup_c = Signal(range(C + 1))
        col_work = prods.col_work  # conditional MACs of one output (pixel, channel)

        phase = Signal(2)
        # phase tests; constant in a dense-only build so the gating logic is not generated
        is_cond = (phase == PH_COND) if gating else Const(0)
        is_base = (phase == PH_BASE) if gating else Const(0)
        # input channels per pass in this phase (same for every column), minus one: the last
        # step's test is then a compare with a register, not with a subtraction
        n_ch_m1 = Signal(DIM_BITS)
        w_start = Signal(wbits + DIM_BITS)  # first weight word of the phase
        # C_IN - BASE_CIN, registered a level behind the descriptor; the conditional phase's
        # first weight word BASE_CIN * K * K is a serial product
        cond_cin = Signal(DIM_BITS)
        m.d.sync += cond_cin.eq(c_diff)
        base_wk = prods.base_wk

        # ---------------------------------------------------------------- row sets
        TAP_FIELDS = ("kylo", "kyhi", "kxlo", "kxhi")

        # (only the valid bits are reset: the loader writes every field of every slot of a row
        # set before the swap makes it current, so nothing reads a field the reset would have
        # cleared; out of the reset, the row sets' 4,600 flip-flops at 8 x 8 leave the
        # accelerator's reset net, which reached 9,000 on the ECP5 with them)
        # The drained row set carries a pixel's window (tap bounds and buffer address) only
        # for the active-list write, which happens in the base phase, where every skip group
        # of a row holds the row's pixel (the walker's): so the drain keeps the window once per
        # row (group 0's slot; `drain_slots`) and every group's list takes it from there. At
        # 8 x 8 with four groups that is about 1,000 flip-flops fewer in synthesis (ECP5 board
        # build), with the drain shift's multiplexers.
        WINDOW_FIELDS = (*TAP_FIELDS, "abase")

        def drain_slots(f):
            """The slots whose field ``f`` the drained row set (and d1, d2) keeps."""
            return range(0, Q, NG) if f in WINDOW_FIELDS else range(Q)

        def rowset(prefix, slots=lambda f: range(Q)):
            def data(shape, f, q):
                return Signal(shape, name=f"{prefix}_{f}_{q}", reset_less=True)
            shapes = {"p": pix_s, **{f: tap_s for f in TAP_FIELDS}, "abase": adr_s, "gate": G}
            return {
                "valid": [Signal(name=f"{prefix}_valid_{q}") for q in range(Q)],
                **{f: [data(shape, f, q) if q in slots(f) else None for q in range(Q)]
                   for f, shape in shapes.items()},
            }
        nxt, cur, drn = rowset("next"), rowset("cur"), rowset("drain", drain_slots)
        FIELDS = tuple(nxt)

        # Row slices (HwParams.row_slices): a conditional pass whose skip groups have at most
        # H = rows // 2 pixels left each puts pixel i on rows i and i + H (the loader writes
        # both slots at once); the upper row sums the first h = ceil(n / 2) of the pass's n
        # conditional channels, the lower one the rest (since session 40; before, the kernel
        # rows ky < ceil(K/2) and the rest): its slots keep the pixel's window, their channel
        # offsets run h channels ahead in the group's sequence (`lo_*` below, per skip group,
        # beside the upper slots' `g_off`, `row_off`, `step_off`), and its weights come from a
        # second read of the weight buffer, h * K * K words ahead, entering the columns at row
        # H. The pass steps every kernel row of h channels; where n is odd the lower slice has
        # one channel less and its elements idle (enables off) in the last one. The drain
        # fires the pass's rows as always: the upper rows with no result, the lower rows
        # (which hold the pixels too) with the upper row's sum added. `nxt_sl` is decided when
        # the loader starts a row set and travels with it (cur_sl, drn_sl); `st_sl` is the
        # issuing pass's, a step-state register.
        H = P.slice_rows
        SL = gating and H > 0
        nxt_sl, cur_sl, drn_sl, st_sl = (Signal(name=n) for n in ("nxt_sl", "cur_sl", "drn_sl",
                                                                   "st_sl"))
        # Three slices (row_slices 3, 3 x 3 layers): a sliced pass whose skip groups have at
        # most T = rows // 4 pixels left each also puts pixel i on row i + T, the middle
        # slice: each of the three rows sums one kernel row (the upper ky 0, the middle ky 1,
        # the lower ky 2: its window two map rows down, its weights 2 * K words ahead), the
        # middle one's window one map row down, its
        # weights from a third read of the weight buffer K words ahead entering at row T. The
        # pass steps one kernel row per channel; the lower row drains with both upper sums.
        # `nxt_sl3` is decided beside `nxt_sl` (which it implies) and travels with it.
        T = P.slice3_rows
        SL3 = SL and T > 0
        nxt_sl3, cur_sl3, drn_sl3, st_sl3 = (Signal(name=n) for n in (
            "nxt_sl3", "cur_sl3", "drn_sl3", "st_sl3"))
        # a two-slice pass (split by channels): the row set's and the issuing pass's
        nxt_slc = (nxt_sl & ~nxt_sl3) if SL3 else nxt_sl
        st_slc = (st_sl & ~st_sl3) if SL3 else st_sl
        sl3_ok = Signal()
        # per kernel, a level behind the descriptor (from params.slice_taps): the layer's
        # passes may be sliced (K >= 3), and for three slices the lower slice's first kernel
        # row less one, weight-word and window offsets (K = 3: ky 2, 2 * K words, 2 * W_IN)
        sl_ok = Signal()
        kup_m1 = Signal(3)
        big_k = max(KERNELS)
        sl_w = Signal(range(big_k * big_k + 1))
        sl_a = Signal(saddr)
        # two slices: the upper slice's channels less one, an odd channel count (the lower
        # slice idles in the last channel), and the lower slice's weight words ahead, h * K * K
        # (half of col_work rounded up to whole channels), each a level behind the registers
        # they come from
        half = Signal(DIM_BITS)
        half_m1 = Signal(DIM_BITS)
        chs_odd = Signal()
        chs_w = Signal(len(prods.col_work))
        if SL:
            m.d.sync += [half.eq(c_half), half_m1.eq(c_half - 1), chs_odd.eq(c_diff[0]),
                         chs_w.eq((prods.col_work + Mux(c_diff[0], kk, 0)) >> 1)]
        if SL:
            with m.Switch(kernel):
                for k in KERNELS:
                    up, low = slice_taps(k)
                    if low == 0:
                        continue
                    with m.Case(k):
                        m.d.sync += [sl_ok.eq(1), kup_m1.eq(up - 1), sl_w.eq(up * k),
                                     sl_a.eq(sum(w_in << i for i in range(up.bit_length())
                                                 if up >> i & 1))]
                        if SL3:
                            m.d.sync += sl3_ok.eq(k == SLICE3_KERNEL)
                with m.Default():
                    m.d.sync += sl_ok.eq(0)
                    if SL3:
                        m.d.sync += sl3_ok.eq(0)

        # pixel walker (dense / base phases)
        pw_p = Signal(2 * DIM_BITS)
        pw_x = Signal(DIM_BITS)
        pw_ybase = Signal(sdim)
        pw_xbase = Signal(sdim)
        pw_rowaddr = Signal(saddr)
        # stacked images: the current row's index in its image, flags "it is the image's last
        # row" and "more than IMG_GAP rows follow it" (both set from the next values at each
        # row's end, so the jump's select is two registers), and the rows after the current one
        if ST:
            pw_irow = Signal.like(img_rows)
            pw_ilast = Signal()
            pw_gap_ok = Signal()
            pw_rows = Signal.like(h_out)
        # active lists (skip controller), one per skip group
        n_active = [Signal(PIX_BITS + 1, name=f"n_active_{j}") for j in range(NG)]
        al_rd = [Signal(PIX_BITS + 1, name=f"al_rd_{j}") for j in range(NG)]
        # "items left" per list, ``al_rd < n_active``, as a register beside a difference counter
        # (like the walker's pw_more below): the compare in front of the row-set loader's
        # enables was the 4 x 4 ECP5 critical path
        al_diff = [Signal(PIX_BITS + 1, name=f"al_diff_{j}") for j in range(NG)]
        al_left = Signal(NG)
        al_push = Signal(NG)  # n_active counts up this cycle
        al_pop = Signal(NG)   # al_rd counts up this cycle
        for j in range(NG if gating else 0):
            with m.If(al_push[j] & ~al_pop[j]):
                m.d.sync += [al_diff[j].eq(al_diff[j] + 1), al_left[j].eq(1)]
            with m.Elif(al_pop[j] & ~al_push[j]):
                m.d.sync += [al_diff[j].eq(al_diff[j] - 1), al_left[j].eq(al_diff[j] != 1)]
        any_active = Signal()  # set below: a skip group's active list is not empty

        # row-set loader
        rl_busy = Signal()
        rl_done = Signal()
        rl_r = Signal(range(R + 1))
        rl_wr = Signal()
        rl_wr_row = Signal(range(R))
        rl_wr_valid = Signal(NG)
        rl_wr_walk = {f: Signal(len(nxt[f][0]) if f != "valid" else 1, name=f"rl_w_{f}")
                      for f in FIELDS}
        src_left = Signal()
        # pixels left for the walker, as a register beside a down-counter (set from the counter's
        # next value, in parallel with it): the compare ``pw_p < H_OUT*W_OUT`` in front of the
        # row-set loader and the phase's end was the 4 x 4 ECP5 critical path
        # (sized from the buffers: a valid job has H_OUT*W_OUT <= pix_depth)
        pw_rem = Signal(range(P.pix_depth + 1))
        pw_more = Signal()
        m.d.comb += src_left.eq(Mux(is_cond, al_left.any(), pw_more))
        # in RUN state: a register set on entering RUN and cleared on leaving it, not a decode
        # of the FSM's state (it gates issue and swap, whose enables fan out widely)
        running = Signal()

        # issuer
        have_cur = Signal()
        st_n = Signal(DIM_BITS)  # channel step within the pass
        st_ky = Signal(3)
        st_kx = Signal(3)
        st_w = Signal(wbits + DIM_BITS)
        st_first = Signal()
        in_flight = Signal()
        # every skip group streams its own columns' channel sequence: the base set in the base
        # phase, the other channels in the conditional phase (skipping the base range)
        g_i = [Signal(DIM_BITS, name=f"g_i_{j}") for j in range(NG)]
        g_off = [Signal(off_bits, name=f"g_off_{j}") for j in range(NG)]
        g_start = [Signal(DIM_BITS, name=f"g_start_{j}") for j in range(NG)]
        # g_start * H_IN * W_IN, set with g_start (PHASE, COND) from offsets kept beside the
        # channel counters: no multiplier
        g_start_off = [Signal(off_bits, name=f"g_start_off_{j}") for j in range(NG)]
        # g_off + st_ky * W_IN (+ st_kx), kept beside the step counters (see the array feed)
        row_off = [Signal(saddr, name=f"row_off_{j}") for j in range(NG)]
        step_off = [Signal(saddr, name=f"step_off_{j}") for j in range(NG)]
        # the lower slice's (two slices): per group the offset with the tap row and with the
        # tap, run like row_off and step_off (+ W_IN, + 1) and set, at a pass's start and at
        # each channel end, to the upper one's channel offset plus the distance between the two
        # slices' channels: none outside a two-slice pass (so a lower slot's address is the
        # same one add), else h = ceil(n / 2) channels (`h_off`, a serial product), or h +
        # BASE_CIN (`hb_off`) while the lower channel is past the group's base range and the
        # upper one is not (`lo_far`, a flag per group: set at the channel end where the lower
        # sequence crosses the base range, `lo_set_next` saying so a step ahead like
        # g_skip_next, cleared where the upper one does). Per tile at COND: whether a pass
        # starts with the flag set (the base range starts in (0, h]) and the channel step at
        # which the lower sequence crosses (`lo_gap` = its start less h, where it lies past h)
        lo_row_off = [Signal(saddr, name=f"lo_row_off_{j}") for j in range(NG if SL else 0)]
        lo_step_off = [Signal(saddr, name=f"lo_step_off_{j}") for j in range(NG if SL else 0)]
        lo_far = [Signal(name=f"lo_far_{j}") for j in range(NG if SL else 0)]
        lo_set_next = [Signal(name=f"lo_set_next_{j}") for j in range(NG if SL else 0)]
        lo_far0 = [Signal(name=f"lo_far0_{j}") for j in range(NG if SL else 0)]
        lo_beyond = [Signal(name=f"lo_beyond_{j}") for j in range(NG if SL else 0)]
        lo_gap = [Signal(DIM_BITS, name=f"lo_gap_{j}") for j in range(NG if SL else 0)]
        hb_off = Signal(off_bits)  # (h + BASE_CIN) * H_IN * W_IN, a level behind the products
        # the lower offset's whole step at a channel end in a two-slice pass (the upper one's
        # increment plus the new distance), one register per case, a level behind the products
        # (settled by START, DESC_LEVELS): the lower offset is then one add (with the increment
        # and the distance added in series, g_off -> lo_step_off was the 85F 8 x 8 critical
        # path, 10.6 ns): past the base range (BASE_CIN + 1) * H_IN * W_IN + h * H_IN * W_IN;
        # else H_IN * W_IN + h * H_IN * W_IN, or + (h + BASE_CIN) * H_IN * W_IN when far
        lo_inc_skip = Signal(off_bits)
        lo_inc_near = Signal(off_bits)
        lo_inc_far = Signal(off_bits)
        if SL:
            m.d.sync += [hb_off.eq(prods.half_off + prods.base_off),
                         lo_inc_skip.eq(prods.base_off + hw_in + prods.half_off),
                         lo_inc_near.eq(hw_in + prods.half_off),
                         lo_inc_far.eq(hw_in + prods.half_off + prods.base_off)]
        # per group: the offset of its first column's base range (captured in COL_SETUP)
        g_lo_off = [Signal(off_bits, name=f"g_lo_off_{j}") for j in range(NG)]
        grp_lo_off = Signal(off_bits)  # grp_lo * H_IN * W_IN
        # g_end = g_off + H_IN*W_IN, kept beside g_off (the end of the group's current input
        # channel in the activation stream), so the "channel loaded" check in front of every
        # step is a compare, not an add and a compare; g_start_end is a level behind g_start
        # (first used at the first swap, rows + 2 >= 4 cycles later)
        ewidth = max(len(g_start_off[0]), len(hw_in)) + 1
        g_end = [Signal(ewidth, name=f"g_end_{j}") for j in range(NG)]
        g_start_end = [Signal(ewidth, name=f"g_start_end_{j}") for j in range(NG)]
        m.d.sync += [g_start_end[j].eq(g_start_off[j] + hw_in) for j in range(NG)]
        # (BASE_CIN + 1) * H_IN * W_IN, a level behind the serial products
        skip_off = Signal(off_bits)
        m.d.sync += skip_off.eq(prods.base_off + hw_in)

        kernel_m1 = Signal(3)  # registered, one level behind the descriptor (DESC_LEVELS)
        m.d.sync += kernel_m1.eq(kernel - 1)
        # the walker's and the column setup's last-count compares against registers too
        w_out_m1 = Signal(DIM_BITS)
        group_cout_m1 = Signal(DIM_BITS)
        m.d.sync += [w_out_m1.eq(w_out - 1), group_cout_m1.eq(group_cout - 1)]
        # "last tap / row / channel of the pass" kept as registers beside the step counters,
        # each set with its counter from a compare of the counter's next value (in parallel
        # with `issue`, not behind it); is_last, their AND, is a register set beside them
        # (the 4 x 8 ECP5 critical path ran last_ky -> is_last -> issue -> swap -> the step
        # counters' resets)
        last_kx = Signal()
        last_ky = Signal()
        last_n = Signal()
        is_last = Signal()
        # the pass's last channel less one, its last kernel row and its weight-word step at a
        # channel end, set with the pass's slicing at its start (a two-slice pass: the upper
        # slice's channels; a three-slice pass: one kernel row per channel, then past the other
        # two rows' words); constant without row slices
        n_end = Signal(DIM_BITS) if SL else n_ch_m1
        ky_end = Signal(3) if SL3 else kernel_m1
        st_wj = Signal(range(SLICE3_KERNEL ** 2 + 1)) if SL3 else 1
        n_pass = Mux(nxt_slc, half_m1, n_ch_m1) if SL else n_ch_m1
        ky_pass = Mux(nxt_sl3, 0, kernel_m1)
        wj_pass = Mux(nxt_sl3, 1 + (SLICE3_KERNEL - 1) * SLICE3_KERNEL, 1)

        issue = Signal()
        swap = Signal()

        # which value g_end takes next cycle, for the "channel loaded" check below: set beside
        # every g_end update (0: unchanged, 1: moved to the next channel, 2: reset)
        g_chg = Signal(2)
        m.d.sync += g_chg.eq(0)
        # a channel boundary step moves group j past the base range (conditional phase):
        # ``is_cond & (g_i + 1 == g_lo)`` as a register (compared with ``g_lo_m1`` /
        # ``g_lo_m2``, no adder), set beside every g_i update (phase and
        # g_lo do not change within a phase, and every phase's steps start with reset_steps);
        # the sum and compare behind g_i in front of the offsets' multiplexers were the 8 x 8
        # ECP5 critical path (10.2 ns); cycle-neutral
        g_skip_next = [Signal(name=f"g_skip_next_{j}") for j in range(NG)]

        def lo_dist(two_slices, far):
            """The distance from the upper slice's channel offset to the lower one's."""
            return Mux(two_slices, Mux(far, hb_off, prods.half_off), 0)

        # the lower slice's offsets at a pass's start: the upper one's plus the distance
        lo_reset = [Signal(saddr, name=f"lo_reset_{j}") for j in range(len(lo_far))]
        for j in range(len(lo_far)):
            m.d.comb += lo_reset[j].eq(g_start_off[j] + lo_dist(nxt_slc, lo_far0[j]))

        def reset_steps():
            last_n0 = Mux(nxt_slc, half_m1 == 0, n_ch_m1 == 0) if SL else n_ch_m1 == 0
            return [g_chg.eq(2), last_kx.eq(kernel_m1 == 0), last_ky.eq(kernel_m1 == 0),
                    last_n.eq(last_n0),
                    is_last.eq((kernel_m1 == 0) & last_n0),
                    st_n.eq(0), st_ky.eq(0), st_kx.eq(0), st_w.eq(w_start),
                    st_first.eq(1), *(g_i[j].eq(g_start[j]) for j in range(NG)),
                    *(g_skip_next[j].eq(is_cond & (g_start[j] == g_lo_m1[j]))
                      for j in range(NG)),
                    *(g_off[j].eq(g_start_off[j]) for j in range(NG)),
                    *(row_off[j].eq(g_start_off[j]) for j in range(NG)),
                    *(step_off[j].eq(g_start_off[j]) for j in range(NG)),
                    *(g_end[j].eq(g_start_end[j]) for j in range(NG)),
                    *([st_sl.eq(nxt_sl), n_end.eq(n_pass)] if SL else []),
                    *(stmt for j in range(len(lo_far)) for stmt in (
                        lo_far[j].eq(lo_far0[j]),
                        lo_set_next[j].eq(lo_beyond[j] & (lo_gap[j] == 1)),
                        *(r[j].eq(lo_reset[j]) for r in (lo_row_off, lo_step_off)))),
                    *([st_sl3.eq(nxt_sl3), ky_end.eq(ky_pass), st_wj.eq(wj_pass),
                       last_ky.eq(nxt_sl3 | (kernel_m1 == 0))] if SL3 else [])]

        def copy_set(dst, src):
            return [dst[f][q].eq(src[f][q]) for f in FIELDS for q in range(Q)
                    if dst[f][q] is not None]

        # The row-set copies (cur <- nxt on a swap, drn <- cur after a pass's last step) are
        # made a cycle late, their enables registers (`swap_q`, `last_q`): as enables of ~1,500
        # flip-flops each, issue and swap were slow nets in front of the step registers (at
        # 8 x 8 on the ECP5 the swap's net was 2.3 ns of the 11.7 ns critical path). In the
        # cycle after a swap the issuer reads the row set from `nxt` (`cur_v`), which the loader
        # writes no earlier than two cycles after the swap; cur holds the issued rows until
        # the cycle after the last step, when drn takes them (the drain's first read is
        # G + array_extra cycles after it). Cycle-neutral.
        swap_q = Signal()
        last_q = Signal()
        cur_v = {f: [Signal.like(cur[f][q], name=f"cur_v_{f}_{q}") for q in range(Q)]
                 for f in FIELDS}
        m.d.comb += [cur_v[f][q].eq(Mux(swap_q, nxt[f][q], cur[f][q]))
                     for f in FIELDS for q in range(Q)]

        # ---------------------------------------------------------------- array feed
        m.submodules.array = arr = SystolicArray(rows=R, cols=C, group=G, mult=P.pe_mult,
                                                    acc_bits=SB, split_row=H if SL else 0,
                                                    mid_row=T if SL3 else 0)
        colmask = Signal(C)
        m.d.comb += colmask.eq(col_valid)
        s1_valid = Signal(Q)
        s1_first = Signal()
        s1_last = Signal()
        s1_en = [Signal(G, name=f"s1_en_{q}") for q in range(Q)]
        s1_inb = Signal(Q)
        s1_byte = [Signal(max(awbits, 1), name=f"s1_byte_{q}") for q in range(Q)]
        macs_now = []
        # a step's buffer offset per skip group (channel offset + tap row + tap column), added
        # to each slot's window address: one adder per slot. It is a register (`step_off`,
        # with `row_off` = channel offset + tap row beside it) updated with the step counters,
        # each update one add from registers, so the slot's address is one add in front of the
        # block RAM (the 3-input sum in front of that add was the 4 x 8 ECP5 critical path)
        # (ISSUE_REGS registers between the step's values and the buffers' read addresses:
        # `issued` delays a value by them, with a reset only for the valid and skip bits)
        def issued(v, name, reset=False):
            return _delayed(m, v, ISSUE_REGS, f"{name}_i", reset=reset)

        # a two-slice pass's lower slots idle in its last channel where the count is odd
        low_idle = Signal()
        if SL:  # (a two-slice pass's last channel, when the count is odd)
            m.d.comb += low_idle.eq(st_slc & chs_odd & last_n)
        for q in range(Q):
            j = q % NG
            addr = Signal(saddr, name=f"addr_{q}")
            lower = SL and H <= q // NG < 2 * H
            m.d.comb += addr.eq(cur_v["abase"][q] + (lo_step_off[j] if lower else step_off[j]))
            inb = Signal(name=f"inb_{q}")
            m.d.comb += inb.eq((st_ky >= cur_v["kylo"][q]) & (st_ky < cur_v["kyhi"][q]) &
                               (st_kx >= cur_v["kxlo"][q]) & (st_kx < cur_v["kxhi"][q]))
            gmask = colmask[j * G:(j + 1) * G]
            en = Signal(G, name=f"en_{q}")
            cond_en = gmask & cur_v["gate"][q]
            if SL and H <= q // NG < 2 * H:  # a lower slot
                cond_en = Mux(low_idle, 0, cond_en)
            m.d.comb += en.eq(Mux(is_cond, cond_en, gmask))
            vld = Signal(name=f"vld_{q}")
            m.d.comb += vld.eq(issue & cur_v["valid"][q])
            addr = issued(addr, f"addr_{q}")
            m.d.comb += act_rd_addr[q].eq(addr[awbits:])
            m.d.sync += [s1_valid[q].eq(issued(vld, f"vld_{q}", reset=True)),
                         s1_en[q].eq(issued(en, f"en_{q}")),
                         s1_inb[q].eq(issued(inb, f"inb_{q}")),
                         s1_byte[q].eq(addr[:awbits] if awbits else 0)]
            macs_now.append(Mux(s1_valid[q], sum(s1_en[q][c] for c in range(G)), 0))
        m.d.sync += [s1_first.eq(issued(st_first, "first")), s1_last.eq(issued(is_last, "last"))]
        st_w_i = issued(st_w, "st_w")
        m.d.comb += wgt_rp.addr.eq(Cat(st_w_i[wpb:wbits], issued(cmp_bank, "cmp_bank")))
        wgt_word = wgt_rp.data
        if wpb:
            wgt_sel = Signal(wpb)
            m.d.sync += wgt_sel.eq(st_w_i[:wpb])
            wgt_word = wgt_rp.data.word_select(wgt_sel, 8 * C)

        # skew, per skip group (the groups are independent sub-arrays: activations move right
        # only inside a group): feed (r, j) delayed r cycles, weight column c delayed c mod G,
        # and all of them NFEED more (`feed_regs`, 1 or 2: registers between block-RAM data and
        # the array edge); so every group's sums are final G - 1 cycles after its first
        # column's, and the drain starts G + array_extra cycles after a pass's last step, not
        # cols + ...
        # With words narrower than the stream (board builds, `act_width` 2 to 8 bytes) the first
        # feed register holds the block RAM's word as read, with the byte select and the tap
        # check beside it, and the byte is selected after it: the block RAM's output goes to a
        # register only (its output, the select and the route to the array's row were an 8 x 8
        # ECP5 path: 13.3 ns with 8-byte words selected first). Cycle-neutral. Full-beat words
        # (the default) are selected first: a register of the whole 16-byte word per feed
        # would cost more. A second feed register (`feed_regs` 2) comes after the select: the
        # register behind the block RAM then feeds only the next one, not the array's row.
        raw_first = 0 < awbits <= 3
        for q in range(Q):
            r, j = divmod(q, NG)
            if raw_first:
                stage = (act_rd[q].data, s1_byte[q], s1_inb[q])
                nxt_stage = tuple(Signal.like(x, name=f"feed_raw_{q}_{i}", reset_less=True)
                                  for i, x in enumerate(stage))
                m.d.sync += [n.eq(x) for n, x in zip(nxt_stage, stage)]
                word, sel, ok = nxt_stage
                ctl = (s1_valid[q], s1_first, s1_last, s1_en[q])
                ctl_q = tuple(Signal.like(x, name=f"skew_q{q}_0_{i + 1}")
                              for i, x in enumerate(ctl))
                m.d.sync += [n.eq(x) for n, x in zip(ctl_q, ctl)]
                a = Signal(signed(8), name=f"feed_a_{q}")
                m.d.comb += a.eq(Mux(ok, word.word_select(sel, 8), 0))
                stage = (a, *ctl_q)
                first_reg = 1
            else:
                byte = (act_rd[q].data.word_select(s1_byte[q], 8) if awbits
                        else act_rd[q].data[:8])
                a = Signal(signed(8), name=f"feed_a_{q}")
                m.d.comb += a.eq(Mux(s1_inb[q], byte, 0))
                stage = (a, s1_valid[q], s1_first, s1_last, s1_en[q])
                first_reg = 0
            for d in range(first_reg, r + NFEED):
                # (the activation byte is data, without reset, like the elements' operands)
                nxt_stage = tuple(Signal.like(x, name=f"skew_q{q}_{d}_{i}", reset_less=i == 0)
                                  for i, x in enumerate(stage))
                m.d.sync += [n.eq(x) for n, x in zip(nxt_stage, stage)]
                stage = nxt_stage
            m.d.comb += [arr.a[r][j].eq(stage[0]), arr.valid[r][j].eq(stage[1]),
                         arr.first[r][j].eq(stage[2]), arr.last[r][j].eq(stage[3]),
                         arr.en[r][j].eq(stage[4])]
        for c in range(C):
            w = Signal(signed(8), name=f"feed_w_{c}")
            m.d.comb += w.eq(wgt_word[8 * c:8 * c + 8])
            m.d.comb += arr.w[c].eq(_delayed(m, w, c % G + NFEED, f"skew_c{c}"))
        def slice_feed(n, rp, ahead, row, sel, sel_name, w_in, w_sel):
            """Weight feed ``n`` of a sliced pass: a further read port of the bank (``rp``),
            ``ahead`` words ahead of the step's, its address ``row`` cycles behind (the weights
            reach row ``row`` that much after row 0), then skewed like the first feed, entering
            the columns at ``row`` (``w_in``) with ``sel`` travelling beside them (``w_sel``)."""
            st = _delayed(m, st_w + ahead, ISSUE_REGS + row, f"st_w{n}")
            m.d.comb += rp.addr.eq(Cat(st[wpb:wbits],
                                       _delayed(m, cmp_bank, ISSUE_REGS + row, f"cmp_bank{n}")))
            word = rp.data
            if wpb:
                wsel = Signal(wpb, name=f"wgt_sel{n}")
                m.d.sync += wsel.eq(st[:wpb])
                word = rp.data.word_select(wsel, 8 * C)
            s1 = Signal(name=f"s1_{sel_name[3:]}")
            m.d.sync += s1.eq(issued(sel, sel_name))
            for c in range(C):
                w = Signal(signed(8), name=f"feed_w{n}_{c}")
                m.d.comb += w.eq(word[8 * c:8 * c + 8])
                m.d.comb += [w_in[c].eq(_delayed(m, w, c % G + NFEED, f"skew{n}_c{c}")),
                             w_sel[c].eq(_delayed(m, s1, row + c % G + NFEED,
                                                  f"skew{n}_sel{c}", reset=True))]

        if SL:  # the lower slice's weights, at row H: h * K * K words ahead on two slices,
            # sl_w (its kernel row) on three
            wgt_rp2 = wgt_mem.read_port()
            slice_feed(2, wgt_rp2, Mux(st_sl3, sl_w, chs_w) if SL3 else chs_w, H, st_sl,
                       "st_sl", arr.w2, arr.w2_sel)
        if SL3:  # the middle slice's (three slices): a kernel row (K words) ahead, at row T
            wgt_rp3 = wgt_mem.read_port()
            slice_feed(3, wgt_rp3, SLICE3_KERNEL, T, st_sl3, "st_sl3", arr.w3, arr.w3_sel)

        # ---------------------------------------------------------------- drain
        # (its storage's collisions are don't-care too, hw/fifo.py; in `memories` for the
        # collision test)
        m.submodules.out_fifo = fifo = BufferedFIFO(width=P.out_bits + 1, depth=OUT_FIFO_DEPTH)
        self.memories["storage (out_fifo)"] = fifo
        m.d.comb += [self.m_axis_tdata.eq(fifo.r_data[:P.out_bits]),
                     self.m_axis_tlast.eq(fifo.r_data[P.out_bits]),
                     self.m_axis_tvalid.eq(fifo.r_rdy), fifo.r_en.eq(self.m_axis_tready)]
        dcount = Signal(range(C + AX + 2))
        # dcount == 0, a register set beside every dcount update (the compare in front of the
        # drain's fire decision and the residual read address was the 4 x 8 ECP5 critical path);
        # 0 whenever no pass drains (cleared with a pass's last row), so a pass's first cycle
        # (`d_start`) cannot fire
        dzero = Signal()
        d_r = Signal(range(R))
        d1_go = Signal()
        d1_psum = [Signal(signed(SB), name=f"d1_psum_{c}", reset_less=True)
                   for c in range(C)]
        # a sliced pass's upper-row sum beside its lower row's (zero otherwise), added after
        # the registers, in front of the post-processing (the row select and the add in one
        # cycle were the 8 x 8 ECP5 critical path, 10.2 ns)
        d1_up = [Signal(signed(SB), name=f"d1_up_{c}", reset_less=True)
                 for c in range(C if SL else 0)]
        # a three-slice pass's middle-row sum beside its lower row's (zero otherwise)
        d1_mid = [Signal(signed(SB), name=f"d1_mid_{c}", reset_less=True)
                  for c in range(C if SL3 else 0)]
        d1 = [{f: Signal.like(drn[f][0], name=f"d1_{f}_{j}") for f in FIELDS
               if j in drain_slots(f)} for j in range(NG)]
        # stage 2 of the drain: the gate bits registered (the compare is a full-width subtract
        # per column; the skip decision, the active-list write and the word's metadata follow
        # it a cycle later, while the results go through the post-processing pipeline from d1)
        d2_go = Signal()
        # (with shared post-processing units d1 holds a row for PU >= 2 cycles, so the row in
        # d2 still has its sums in d1_psum: no copy)
        d2_psum = ([Signal(signed(SB), name=f"d2_psum_{c}", reset_less=True)
                    for c in range(C)] if PU == 1 else d1_psum)
        d2 = [{f: Signal.like(drn[f][0], name=f"d2_{f}_{j}") for f in FIELDS
               if j in drain_slots(f)} for j in range(NG)]
        room = Signal()
        # words on their way to the FIFO: the drain row registers and the post-processing
        # stages. Registered (the FIFO level's adder and compare would otherwise sit in front of
        # the drain's enables): computed a cycle early against one word less, since at most one
        # row enters the drain per cycle, so it never admits a word the FIFO cannot take.
        # The words on their way, d1_go + d2_go + (post_wen[2:] set), are a counter
        # (`in_way`) updated from the shift registers' ends, so `room` is one add and a
        # compare (the sum of every stage's flag was a long path into `room` at 8 x 8).
        # `room_q`, what the fire decision reads, is itself a register, a cycle behind the level
        # and in_way, against one word less again (their sum grows by at most one a cycle):
        # the FIFO level's adder, the add and the compare in front of the fire register were
        # the 85F 8 x 8's worst path with 8-byte activation words, 10.9 ns, most of it the
        # route from the FIFO to the drain; `room` (the terminator word's test) one more
        # cycle behind, where nothing enters the drain. No wait with the stream ready
        # (`out_fifo_depth`)
        post_wen = [None] + [Signal(name=f"post_wen_{i}") for i in range(1, POST_LATENCY + 1)]
        in_way = Signal(range(POST_LATENCY + 3))
        room_q = Signal()
        m.d.sync += [room_q.eq(fifo.level + in_way < OUT_FIFO_DEPTH - ROOM_MARGIN),
                     room.eq(room_q)]
        # the drained row set is a shift register: each fire moves its rows up by one, so the
        # row that fires next is always row 0 (`drn_head`), with no multiplexer by the row
        # index between the row set and the residual and base-sum read addresses (d_r ->
        # row select -> read address was an 8 x 8 ECP5 critical path, 12.7 ns)
        drn_head = [{f: drn[f][j] for f in FIELDS if j in drain_slots(f)} for j in range(NG)]
        psum_rows = Array([Array([arr.psum[r][c] for c in range(C)]) for r in range(R)])
        # a sliced pass's lower row r (H <= r < 2H) drains with the upper row r - H's sum
        # (that row finished H cycles earlier; `d1_up`); other rows read zeros here
        psum_up = Array([Array([arr.psum[r - H][c] if H <= r < 2 * H else Const(0, signed(SB))
                                for c in range(C)]) for r in range(R)]) if SL else None
        # a three-slice pass's lower row r (H <= r < H + T) also drains with the middle row
        # r - H + T's sum (finished H - T cycles earlier)
        psum_mid = Array([Array([arr.psum[r - H + T][c] if H <= r < H + T
                                 else Const(0, signed(SB)) for c in range(C)])
                          for r in range(R)]) if SL3 else None

        # a pass's last step was issued a cycle ago (a one-cycle pulse): the drain's count
        # starts from it, one less, so the first row fires in the same cycle as it would from
        # the issue itself; the drain registers (dcount, dzero, d_r) then take no input from
        # the issue decision (issue -> the count's load and d_r's clear was the 8 x 8 ECP5
        # critical path in two of three seeds, 10.6-10.9 ns). d_r needs no clear: it returns
        # to 0 with the pass's last row (in_flight is 0 exactly when d_r is 0 and no pass
        # drains).
        d_start = Signal()
        m.d.sync += d_start.eq(0)
        # a row fires (`in_flight & dzero & room`) from a register, decided a cycle ahead from
        # the three's next values: it enables every drain register, and computed in front of
        # that wide net it closed a loop through it (dzero -> the fire -> across the die ->
        # dzero, the 8 x 8 ECP5 critical path of one seed, 10.1 ns, 8.2 of it routing). A
        # pass that starts draining next cycle needs no term: dzero is 0 then (above), so
        # in_flight's next value counts only the pass now draining.
        d_fire = Signal()
        dzero_nx = Signal()  # dzero's next value
        m.d.sync += [dzero.eq(dzero_nx),
                     d_fire.eq(in_flight & ~(d_fire & (d_r == R - 1)) & dzero_nx & room_q)]
        m.d.sync += d1_go.eq(d_fire)
        # a row enters d1 (d_fire); a row in d2 leaves the count unless it becomes a word
        # (post_wen[1]); a word leaves the last stage for the FIFO (post_wen[-1])
        m.d.sync += in_way.eq(in_way + d_fire + post_wen[1] - d2_go - post_wen[-1])
        m.d.sync += [d2_go.eq(d1_go), *(d2[j][f].eq(d1[j][f]) for j in range(NG)
                                         for f in d2[j])]

        def front(v, name, n=FR):
            """``v`` through ``n`` (FR) registers in front of the post-processing units."""
            return _delayed(m, v, n, f"{name}_f")

        res_word = []  # per skip group: the residual bytes of the pixel read
        base_word = []  # per skip group: the stored base sums (conditional phase; else 0)
        if gating and FR:
            # the phase, registered beside the stored base sums: they are zeroed outside the
            # conditional phase after their registers, not in them, so that each sum's first
            # register takes the block RAM's data alone (ECP5 builds move it into the block's
            # output register, sluice.boards.outreg; a zeroing register has a reset and stays
            # in the fabric); the zeroing AND joins the shared units' column select in front
            # of PostProc's first register
            base_cond = _delayed(m, is_cond, FR, "base_cond")
        for j in range(NG):
            # with shared post-processing units the row in d1 is read for PU cycles: its
            # residual and stored base sum stay addressed until the next row may fire (`dzero`,
            # a register; the fire decision itself in front of the read addresses was an 8 x 8
            # ECP5 path), then the next row is addressed whether it fires or waits
            p_addr = drn_head[j]["p"][:pbits]
            if PU > 1:
                p_addr = Mux(dzero, p_addr, d1[j]["p"][:pbits])
            m.d.comb += res_rp[j].addr.eq(Cat(p_addr[rpb:], cmp_bank))
            res_raw = front(res_rp[j].data, f"res_raw_{j}")
            if rpb:
                res_sel = Signal(rpb, name=f"res_sel_{j}")
                m.d.sync += res_sel.eq(p_addr[:rpb])
                res_word.append(res_raw.word_select(front(res_sel, f"res_sel_{j}"), 8 * G))
            else:
                res_word.append(res_raw)
            if gating:
                m.d.comb += psum_rp[j].addr.eq(p_addr)
                if FR:
                    base_raw = Signal.like(psum_rp[j].data, name=f"base_raw_{j}",
                                           reset_less=True)
                    m.d.sync += base_raw.eq(psum_rp[j].data)
                    base_raw = front(base_raw, f"base_raw_{j}", FR - 1)
                    base_word.append([Mux(base_cond, base_raw[g], 0) for g in range(G)])
                else:
                    base_word.append([Mux(is_cond, psum_rp[j].data[g], 0) for g in range(G)])
        m.d.comb += dzero_nx.eq(dzero)
        with m.If(in_flight & ~dzero):
            m.d.sync += dcount.eq(dcount - 1)
            m.d.comb += dzero_nx.eq(dcount == 1)
        with m.If(d_fire):
            if PU > 1:  # the next row fires PU cycles later
                m.d.sync += dcount.eq(PU - 1)
                m.d.comb += dzero_nx.eq(0)
            m.d.sync += [d1[j][f].eq(drn_head[j][f]) for j in range(NG) for f in d1[j]]
            m.d.sync += [drn[f][r * NG + j].eq(drn[f][(r + 1) * NG + j])
                         for f in FIELDS for j in range(NG) for r in range(R - 1)
                         if j in drain_slots(f)]
            m.d.sync += [d1_psum[c].eq(psum_rows[d_r][c]) for c in range(C)]
            if SL:
                m.d.sync += [d1_up[c].eq(Mux(drn_sl, psum_up[d_r][c], 0)) for c in range(C)]
            if SL3:
                m.d.sync += [d1_mid[c].eq(Mux(drn_sl3, psum_mid[d_r][c], 0)) for c in range(C)]
            m.d.sync += d_r.eq(d_r + 1)
            with m.If(d_r == R - 1):
                m.d.sync += [d_r.eq(0), in_flight.eq(0)]
                m.d.comb += dzero_nx.eq(0)
        with m.If(d_start):
            m.d.sync += dcount.eq(G + AX - 1)
            m.d.comb += dzero_nx.eq(G + AX - 1 == 0)

        if gating:
            m.submodules.gate_unit = gu = GateUnit(cols=C, psum_bits=SB)
            # the gate bits of the row in d2; reset-less: every reader is qualified by d2's
            # valid bits, which have the reset (with one, the reset's multiplexer sat behind
            # the 32-bit compare, the 8 x 8 ECP5 critical path once the drain's was gone)
            gate_now = Signal(C, reset_less=True)
            m.d.sync += gate_now.eq(gu.gate)
            # per skip group: the row in d2 is valid, has a gate on and the layer has
            # conditional channels. Valid and "has conditional channels" are registered beside
            # the gate bits and the group's any-gate is taken after the registers, one LUT with
            # the base-phase flag below (the 4 x 8 ECP5 critical path ran cond_empty -> skip
            # decision -> next state; then, with the any-gate before the register, the
            # partial sum -> 32-bit compare -> any over the group's columns -> `gate_pre`)
            pre_ok = Signal(NG)
            m.d.sync += [pre_ok[j].eq(d1[j]["valid"] & ~cond_empty) for j in range(NG)]
            gate_pre = Signal(NG)
            m.d.comb += [gate_pre[j].eq(pre_ok[j] & gate_now[j * G:(j + 1) * G].any())
                         for j in range(NG)]
            if PU == 1:
                m.d.sync += [d2_psum[c].eq(d1_psum[c]) for c in range(C)]
        else:
            gate_now = Const(0, C)
            gate_pre = Const(0, NG)
        if gating:
            # the gate compare has its own thresholds, the column's validity folded in (an
            # invalid column's threshold is the largest int32, which no sum exceeds), registered
            # beside the tile parameters (a tile's first compare comes passes after they change);
            # the drained sums are kept (gate_psum) beside d1_psum, but yosys merges the two (the
            # same inputs), so one register feeds the compare and the post-processing (the
            # critical path once, 8 x 8 ECP5: d1_psum -> the compare -> the validity AND, 10.5 ns).
            assert SB <= PARAM_BITS  # (so no sum exceeds the largest threshold)
            gate_psum = [Signal(signed(SB), name=f"gate_psum_{c}", reset_less=True,
                                attrs=KEEP_ATTRS) for c in range(C)]
            gate_thr = [Signal(signed(PARAM_BITS), name=f"gate_thr_{c}", reset_less=True)
                        for c in range(C)]
            with m.If(d_fire):
                m.d.sync += [gate_psum[c].eq(psum_rows[d_r][c]) for c in range(C)]
            with m.If(cp_kq == PARAM_ORDER.index("thresh")):
                m.d.sync += [gate_thr[c].eq(Mux(col_valid[c], par_rd[c],
                                                (1 << (PARAM_BITS - 1)) - 1)) for c in range(C)]
            m.d.comb += gu.col_valid.eq(Const((1 << C) - 1, C))
            for c in range(C):
                m.d.comb += [gu.psum[c].eq(gate_psum[c]), gu.thresh[c].eq(gate_thr[c])]
        # column select of the units: k (0..PU-1) is the column within a unit that enters now
        # (k = 0 with the row in d1, then 1, 2, ...), and its delayed copies up to FR, which
        # select the column's sum, residual and base sum (the parameters come from rings,
        # `param` below); with PU = 1 all of it is constant. sel[0] is a register, loaded with
        # the value `d1_go ? 0 : ser_k` will have in the next cycle: computed from d1_go and
        # ser_k in front of the column multiplexers, it began the 8 x 8 ECP5 critical path
        # (d1_go -> ser_k's next value -> the select -> the slices' add -> front register,
        # 9.7-10.2 ns)
        ser_k = Signal(range(PU))   # column entering after the first (0: idle or the first)
        sel = [Signal(range(PU), name=f"post_sel_{i}") for i in range(FR + 1)]
        ser_busy = Signal()
        if PU > 1:
            ser_next = Mux(d1_go, 1, Mux((ser_k == 0) | (ser_k == PU - 1), 0, ser_k + 1))
            m.d.sync += [ser_k.eq(ser_next), sel[0].eq(Mux(d_fire, 0, ser_next))]
            m.d.comb += ser_busy.eq(ser_k != 0)
            m.d.sync += [sel[i + 1].eq(sel[i]) for i in range(FR)]

        def pick(values, i):
            """The value of the unit's column selected ``i`` cycles after it entered."""
            return values[0] if PU == 1 else Array(values)[sel[i]]

        # a column enters a unit (stage 0) with the row in d1 (d1_go), the unit's next ones in
        # the PU - 1 cycles after (ser_busy); delayed copies say when it reaches stage i
        enter = [d1_go | ser_busy]

        def param(k, cs, i, width=PARAM_BITS):
            """Parameter ``k`` (of PARAM_ORDER) of the unit's columns ``cs`` as PostProc reads
            it ``i`` cycles after a column entered. With shared units the columns' registers
            form a ring that turns one column each time a column passes stage i, so the unit's
            first register always holds the current column's value and no multiplexer (nor a
            register behind one) sits in front of PostProc; after the unit's PU columns the
            ring is back where the tile's parameter copy left it (the copy comes between the
            tiles' rows: see above)."""
            ring = [par[k][c] for c in cs]
            if PU > 1:
                while len(enter) <= i:
                    enter.append(Signal(name=f"post_enter_{len(enter)}"))
                    m.d.sync += enter[-1].eq(enter[-2])
                with m.If(enter[i] & (cp_kq != k)):
                    m.d.sync += [ring[n].eq(ring[(n + 1) % PU]) for n in range(PU)]
            return ring[0][:width]

        ys = []  # per column: its result byte when the row's word is written
        for u in range(C // PU):
            cs = range(u * PU, (u + 1) * PU)
            pp = PostProc(mult_stages=mult_stages(C), res_stages=res_stages(C), acc_bits=SB)
            assert pp.mult_read == PRL
            m.submodules[f"post_{u}"] = pp
            if gating:  # conditional phase: the stored base sum, added inside PostProc (a
                # block RAM's output into a 32-bit adder was the 4 x 4 critical path)
                m.d.comb += pp.base.eq(pick([base_word[c // G][c % G] for c in cs], FR))
            acc_in = pick([d1_psum[c] for c in cs], 0)
            if SL:
                acc_in = acc_in + pick([d1_up[c] for c in cs], 0)
            acc_f = front(acc_in, f"post_acc_{u}")
            if SL3:  # (after the front registers where there are any: one add per cycle)
                acc_f = acc_f + front(pick([d1_mid[c] for c in cs], 0), f"post_mid_{u}")
            m.d.comb += [pp.acc.eq(acc_f),
                         pp.residual.eq(pick([res_word[c // G].word_select(c % G, 8)
                                              for c in cs], FR)),
                         pp.bias.eq(param(K["bias"], cs, FR + 1)),
                         pp.res_mult.eq(param(K["res_mult"], cs, FR + 1)),
                         pp.shift.eq(param(K["shift"], cs, FR + 1, 6)),
                         pp.res_shift.eq(param(K["res_shift"], cs, FR + pp.res_shift_read, 6)),
                         pp.mult.eq(param(K["mult"], cs, FR + PRL)),
                         pp.has_res.eq(has_res), pp.relu.eq(relu)]
            # the unit's earlier columns wait in a shift register for the last one
            held = [Signal(signed(ACT_BITS), name=f"post_y_{u}_{k}") for k in range(PU - 1)]
            for k in range(PU - 1):
                m.d.sync += held[k].eq(held[k + 1] if k + 1 < PU - 1 else pp.y)
            ys += held + [pp.y]
        gate_out = Signal(C)
        m.d.comb += gate_out.eq(Mux(phase == PH_DENSE, Const((1 << C) - 1, C),
                                    Mux(is_base, gate_now,
                                        Cat(*(d2[j]["gate"] for j in range(NG))))))
        # skip controller: a group with any gate on defers the pixel to its active list
        to_active = Signal(NG)
        out_valid = Signal(NG)
        for j in range(NG):
            m.d.comb += to_active[j].eq(gate_pre[j] & is_base)
            m.d.comb += out_valid[j].eq(d2[j]["valid"] & ~to_active[j])
        term = Signal()  # the job's terminating word (VALID = 0, TLAST = 1)
        # everything of a word but the results is known at d2 (post-processing stage 1) and
        # travels beside the post-processing pipeline; results of groups without a final result
        # are zeroed (they may come from unwritten buffer rows, which are X in a Verilog
        # simulation). Index i: the stage whose values leave PostProc i cycles later.
        # (mask and metadata are data beside post_wen, which has the reset: without one of
        # their own, whatever a reset leaves in them leaves the pipeline unwritten; with it,
        # the reset joined d2_go in front of every metadata register's set/reset input, the 4 x 8
        # ECP5 critical path across the die)
        # The mask and metadata wait POST_LATENCY - 1 cycles in a memory used as a delay line
        # (written every cycle at a running address, read the delay behind it; LUT RAM on the
        # ECP5, a block RAM on the iCE40) instead of a chain of registers: at 8 x 8 with four
        # skip groups about 100 bits per stage, 960 flip-flops in the chain
        meta = Cat(*(Cat(d2[j]["p"], Const(0, PIX_BITS - pbits)) for j in range(NG)),
                   out_valid, gate_out, tile_idx)
        mask_in = Signal(C)
        meta_in = Signal(len(meta))
        # mask and metadata are zero in stages that carry no word, so the terminating word
        # (written when the pipeline is empty) needs no multiplexer of its own on the data
        m.d.comb += [post_wen[1].eq(d2_go & out_valid.any()),
                     mask_in.eq(Cat(*(out_valid[c // G] & col_valid[c] & d2_go
                                      for c in range(C)))),
                     meta_in.eq(Mux(d2_go, meta, 0))]
        for i in range(1, POST_LATENCY):
            m.d.sync += post_wen[i + 1].eq(post_wen[i])
        META_DELAY = POST_LATENCY - 1
        # (the read, a cycle ahead of its data, never reads the address written in that
        # cycle: the delay is at least 2)
        assert 2 <= META_DELAY
        mbits = (META_DELAY - 1).bit_length()
        m.submodules.post_meta = meta_mem = Memory(shape=unsigned(C + len(meta)),
                                                   depth=1 << mbits, init=[])
        self.memories["post_meta"] = meta_mem
        meta_wp, meta_rp = meta_mem.write_port(), meta_mem.read_port()
        meta_ptr = Signal(mbits)
        m.d.sync += meta_ptr.eq(meta_ptr + 1)
        m.d.comb += [meta_wp.addr.eq(meta_ptr), meta_wp.en.eq(1),
                     meta_wp.data.eq(Cat(mask_in, meta_in)),
                     meta_rp.addr.eq(meta_ptr + 1 - META_DELAY)]
        post_mask_out, post_meta_out = meta_rp.data[:C], meta_rp.data[C:]
        # drain rows still in the pipeline, written or not: the terminating word waits for them
        # (a fixed POST_LATENCY after the last row, so the cycle count does not depend on data)
        post_go = [Signal(name=f"post_go_{i}") for i in range(POST_LATENCY)]
        m.d.sync += [post_go[0].eq(d1_go), *(post_go[i + 1].eq(post_go[i])
                                             for i in range(POST_LATENCY - 1))]
        post_busy = Signal()
        m.d.comb += post_busy.eq(Cat(*post_go).any())
        ys_out = [Mux(post_mask_out[c], ys[c], 0) for c in range(C)]
        word = Cat(*ys_out, post_meta_out)
        m.d.comb += [fifo.w_data.eq(Cat(word, Const(0, P.out_bits - len(word)), term)),
                     fifo.w_en.eq(0)]
        skipped_cols = Signal(C)  # valid columns of groups emitted straight from the base
        for j in range(NG if gating else 0):
            wp, pw = al_wp[j], psum_wp[j]
            # (the base sums by pixel: the conditional phase reads them at the pixel it drains,
            # so the row sets carry no list position)
            m.d.comb += [wp.addr.eq(n_active[j]), pw.addr.eq(d2[j]["p"][:pbits])]
            # (the window from group 0's copy: the list is written in the base phase only)
            m.d.comb += [wp.data.p.eq(d2[j]["p"]),
                         *(getattr(wp.data, f).eq(d2[0][f]) for f in WINDOW_FIELDS),
                         wp.data.gate.eq(gate_now[j * G:(j + 1) * G])]
            m.d.comb += [pw.data[c].eq(d2_psum[j * G + c]) for c in range(G)]
            with m.If(d2_go & to_active[j]):
                m.d.comb += [wp.en.eq(1), pw.en.eq(1), al_push[j].eq(1)]
                m.d.sync += n_active[j].eq(n_active[j] + 1)
            m.d.comb += skipped_cols[j * G:(j + 1) * G].eq(
                Mux(d2_go & out_valid[j] & is_base & ~cond_empty,
                    col_valid[j * G:(j + 1) * G], 0))
        with m.If(post_wen[-1]):
            m.d.comb += fifo.w_en.eq(1)
        # the base phase ends only once its last row has left d2 (`phase_done` below), so the
        # counters hold every pixel it deferred (with the d2 row's gate bits in this decision,
        # gate bits -> any-gate -> next phase -> the tile registers' enables was the 4 x 8
        # ECP5 critical path; with post_cols > 1 the drain is busy then anyway)
        # "an active list is not empty" as a register: set by any push (as n_active counts up),
        # cleared with the counters in PHASE, so it reads like the counters' wide OR (the OR
        # of every list's count in front of the phase decision was on the 8 x 8 ECP5 path
        # into the next tile's registers); cycle-neutral
        m.d.sync += any_active.eq(any_active | al_push.any())
        # (the pixels deferred this cycle, registered before the counter's adder)
        n_deferred = Signal(range(NG + 1))
        m.d.sync += [n_deferred.eq(Mux(d2_go, sum(to_active[j] for j in range(NG)), 0)),
                     cnt["ACTIVE_PIXELS"].eq(cnt["ACTIVE_PIXELS"] + n_deferred)]
        # conditional work of outputs emitted straight from the base, added to MACS_SKIPPED four
        # cycles later, three up to 3 columns (the columns registered, then their count, then
        # product: off the gate
        # compare's path); the counters are read after DONE, which comes more than four cycles
        # after the last drain
        skipped_q = Signal(C)
        skip_n = Signal(range(C + 1))
        skip_drain = Signal(len(col_work) + len(skip_n))  # col_work * skip_n <= col_work * C
        # (skip_n is at most cols: a sum of shifts, no DSP, in two registered halves and their
        # sum; the count of the columns behind their register: gate bits -> any-gate -> the
        # columns' valid -> the count in one cycle was an 8 x 8 ECP5 path)
        terms = [Mux(skip_n[b], col_work << b, 0) for b in range(len(skip_n))]
        m.d.sync += [skipped_q.eq(skipped_cols), skip_n.eq(sum(skipped_q[c] for c in range(C)))]
        if len(terms) > 2:
            halves = [Signal.like(skip_drain, name=f"skip_half_{i}") for i in range(2)]
            m.d.sync += [halves[0].eq(sum(terms[:len(terms) // 2])),
                         halves[1].eq(sum(terms[len(terms) // 2:])),
                         skip_drain.eq(halves[0] + halves[1])]
        else:  # (up to 3 columns: one sum of at most two terms, a cycle earlier)
            m.d.sync += skip_drain.eq(sum(terms))

        # ---------------------------------------------------------------- row-set loader
        # the walker's window as kernel-tap bounds (see tap_s): the first tap inside the map
        # max(0, -origin) (origin >= -3), the end size - origin clamped to 0..7
        pw_taps = {f: Signal(tap_s, name=f"pw_{f}") for f in TAP_FIELDS}
        for lo, hi, origin, size in (("kylo", "kyhi", pw_ybase, h_in),
                                     ("kxlo", "kxhi", pw_xbase, w_in)):
            d = Signal(signed(len(origin) + 2), name=f"pw_{hi}_d")
            m.d.comb += [d.eq(size - origin),
                         pw_taps[lo].eq(Mux(origin[-1], -origin, 0)[:3]),
                         pw_taps[hi].eq(Mux(d[-1], 0, Mux(d >= 7, 7, d[:3])))]

        # The active list is read a cycle ahead and its entry registered (`al_q`) before the
        # row set: the block RAM addressed by the read index's next value (`al_nx` = al_rd + 1,
        # a register beside it, when the loader takes an entry this cycle), so the entry for
        # the loader's row is in `al_q` when it writes that row (the block RAM's output,
        # 5.6 ns clock to out on the ECP5, straight into the row set's multiplexers was an 8 x 8
        # path). Entering a phase resets the index; the loader starts two cycles later at the
        # earliest, by when the block RAM has read entry 0.
        al_nx = [Signal(PIX_BITS + 1, name=f"al_nx_{j}", init=1) for j in range(NG)]
        al_q = [Signal(entry, name=f"al_q_{j}", reset_less=True)
                for j in range(NG if gating else 0)]
        for j in range(NG if gating else 0):
            m.d.comb += al_rp[j].addr.eq(Mux(al_pop[j], al_nx[j], al_rd[j]))
            m.d.sync += al_q[j].eq(al_rp[j].data)
        m.d.sync += rl_wr.eq(0)
        with m.If(running & ~rl_busy & ~rl_wr & ~rl_done & src_left):
            m.d.sync += [rl_busy.eq(1), rl_r.eq(0)]
            if SL:  # (no list grows in the conditional phase: the counts are final)
                m.d.sync += nxt_sl.eq(is_cond & sl_ok &
                                      Cat(*(al_diff[j] <= H for j in range(NG))).all())
                if SL3:
                    m.d.sync += nxt_sl3.eq(is_cond & sl3_ok &
                                           Cat(*(al_diff[j] <= T for j in range(NG))).all())
        with m.If(rl_busy):
            m.d.sync += [rl_wr.eq(1), rl_wr_row.eq(rl_r)]
            m.d.sync += [rl_wr_walk["p"].eq(pw_p[:pbits]),
                         *(rl_wr_walk[f].eq(pw_taps[f]) for f in TAP_FIELDS),
                         rl_wr_walk["abase"].eq(pw_rowaddr + pw_xbase)]
            m.d.sync += rl_r.eq(rl_r + 1)
            with m.If(rl_r == R - 1):
                m.d.sync += rl_busy.eq(0)
            with m.If(is_cond):
                m.d.sync += rl_wr_valid.eq(al_left)
                for j in range(NG):
                    with m.If(al_left[j]):
                        m.d.comb += al_pop[j].eq(1)
                        m.d.sync += [al_rd[j].eq(al_nx[j]), al_nx[j].eq(al_nx[j] + 1)]
            with m.Else():
                m.d.sync += rl_wr_valid.eq(Mux(src_left, (1 << NG) - 1, 0))
                with m.If(src_left):
                    m.d.sync += [pw_p.eq(pw_p + 1), pw_rem.eq(pw_rem - 1),
                                 pw_more.eq(pw_rem != 1)]
                    with m.If(pw_x == w_out_m1):
                        m.d.sync += [pw_x.eq(0), pw_xbase.eq(-pad_left)]
                        next_row = [pw_ybase.eq(pw_ybase + stride),
                                    pw_rowaddr.eq(pw_rowaddr + row_step)]
                        if not ST:
                            m.d.sync += next_row
                        else:
                            rows_next = Signal.like(pw_rows, name="pw_rows_next")
                            with m.If(pw_ilast & pw_gap_ok):  # over the gap to the next image
                                m.d.comb += rows_next.eq(pw_rows - 1 - img_gap)
                                m.d.sync += [pw_ybase.eq(pw_ybase + gap_y),
                                             pw_rowaddr.eq(pw_rowaddr + gap_step),
                                             pw_p.eq(pw_p + 1 + gap_pix),
                                             pw_rem.eq(pw_rem - 1 - gap_pix), pw_more.eq(1)]
                            with m.Else():
                                m.d.comb += rows_next.eq(pw_rows - 1)
                                m.d.sync += next_row
                            with m.If(pw_ilast):
                                m.d.sync += [pw_irow.eq(0), pw_ilast.eq(img_one)]
                            with m.Else():
                                m.d.sync += [pw_irow.eq(pw_irow + 1),
                                             pw_ilast.eq(img_on & (pw_irow + 1 == img_last))]
                            m.d.sync += [pw_rows.eq(rows_next),
                                         pw_gap_ok.eq(rows_next > img_gap)]
                    with m.Else():
                        m.d.sync += [pw_x.eq(pw_x + 1), pw_xbase.eq(pw_xbase + stride)]
        # what a row's slot of group j takes: the walker's pixel (dense and base phases) or the
        # group's next list entry (conditional phase), selected once per group, not per slot
        rl_src = []
        for j in range(NG):
            src = {f: Signal.like(nxt[f][0], name=f"rl_src_{f}_{j}")
                   for f in ("p", *TAP_FIELDS, "abase", "gate")}
            for f in src:
                walked = rl_wr_walk[f] if f != "gate" else Const((1 << G) - 1, G)
                m.d.comb += src[f].eq(Mux(is_cond, getattr(al_q[j], f), walked) if gating
                                      else walked)
            rl_src.append(src)
        # what a lower slot (rows H .. 2H - 1) takes: in a sliced row set the entry's window
        # ceil(K/2) kernel rows down (the tap-row bounds lowered by as much, clamped at 0; the
        # window address moved by as many map rows), else the same as every slot; selected
        # once per group, so a lower slot has one data input whichever row's write enables it
        # (only conditional-phase entries are ever sliced). A middle slot (rows T .. 2T - 1)
        # likewise in a three-slice row set, its window one kernel row down (ky 1).
        def moved_slots(kind, sel, lowered, off):
            """Per skip group: the slot data of a slice some kernel rows down when ``sel`` (tap-row
            bounds ``lowered(v)``, window address + ``off``), else the plain entry."""
            out = []
            for j in range(NG):
                d = dict(rl_src[j])
                for f in ("kylo", "kyhi"):
                    v = getattr(al_q[j], f)
                    d[f] = Signal.like(nxt[f][0], name=f"rl_{kind}_{f}_{j}")
                    m.d.comb += d[f].eq(Mux(sel, lowered(v), rl_src[j][f]))
                d["abase"] = Signal.like(nxt["abase"][0], name=f"rl_{kind}_abase_{j}")
                m.d.comb += d["abase"].eq(Mux(sel, al_q[j].abase + off, rl_src[j]["abase"]))
                out.append(d)
            return out

        def write_moved(data, sel, top):
            """Rows ``top`` .. ``2 * top - 1``: written with row ``r - top`` when ``sel``."""
            for r in range(top, 2 * top):
                for j in range(NG):
                    q = r * NG + j
                    with m.If(rl_wr & Mux(sel, rl_wr_row == r - top, rl_wr_row == r)):
                        m.d.sync += [nxt["valid"][q].eq(rl_wr_valid[j]),
                                     *(nxt[f][q].eq(v) for f, v in data[j].items())]

        # (tap rows clamped at 0: the lower slice's ceil(K/2) rows down on three slices, the
        # middle's one; on two slices the lower slots take the entry as it is)
        rl_low = (moved_slots("low", nxt_sl3, lambda v: Mux(v > kup_m1, v - kup_m1 - 1, 0), sl_a)
                  if SL3 else rl_src if SL else None)
        rl_mid = (moved_slots("mid", nxt_sl3, lambda v: Mux(v > 0, v - 1, 0), w_in)
                  if SL3 else None)
        if SL3:
            write_moved(rl_mid, nxt_sl3, T)
        if SL:
            write_moved(rl_low, nxt_sl, H)
        with m.If(rl_wr):
            for r in range(R):
                if SL and H <= r < 2 * H or SL3 and T <= r < 2 * T:
                    continue
                with m.If(rl_wr_row == r):
                    for j in range(NG):
                        q = r * NG + j
                        m.d.sync += [nxt["valid"][q].eq(rl_wr_valid[j]),
                                     *(nxt[f][q].eq(v) for f, v in rl_src[j].items())]
            with m.If(rl_wr_row == R - 1):
                m.d.sync += rl_done.eq(1)

        # ---------------------------------------------------------------- issuer
        # the activations stream in after the first tile's weights, channel by channel, while
        # the first passes run: a step waits until every group's input channel is complete
        act_loaded = Signal()
        # activation beats written so far (a valid job has at most act_words: the compares
        # below are that narrow on this side)
        act_have = Signal(range(act_words + 1))
        # "every group's channel is loaded" is decided a cycle ahead, so that no compare lies
        # between the registers and `issue` (whose enables fan out to the step counters). Per
        # group three registered compares against this cycle's beat count: the channel end as
        # it stays (rc), as a channel boundary step would move it (rn), as a pass start resets
        # it (rs); `g_chg` says which of the three applies to the next cycle's g_end. The beat
        # count is thus seen one cycle late (a step waiting for its channel issues one cycle
        # after the beat that completes it, like the last through act_ready); the
        # cycle model's `avail` follows.
        # The boundary's two possible moves (+H_IN*W_IN, or past the base range) are compared
        # separately and the choice registered beside them.
        # With shared copies (act_share 2) the passes wait for the whole activation block
        # (the write takes a read port): no per-group check, and synthesis drops the channel
        # ends it would read
        have_bytes = act_have << bbits
        rc = Signal(NG)
        rn_hw = Signal(NG)
        rn_skip = Signal(NG)
        rn_sel = Signal(NG)
        rs = Signal(NG)
        m.d.sync += [rc.eq(Cat(*(g_end[j] <= have_bytes for j in range(NG)))),
                     rn_hw.eq(Cat(*(g_end[j] + hw_in <= have_bytes for j in range(NG)))),
                     rn_skip.eq(Cat(*(g_end[j] + skip_off <= have_bytes for j in range(NG)))),
                     rn_sel.eq(Cat(*g_skip_next)),
                     rs.eq(Cat(*(g_start_end[j] <= have_bytes for j in range(NG))))]
        rn = (rn_sel & rn_skip) | (~rn_sel & rn_hw)
        # act_loaded a cycle late, like the last beat's write (see act_wq_en)
        act_ready = Signal()
        m.d.sync += act_ready.eq(act_loaded)
        step_ready = Signal()
        if P.act_shared:
            m.d.comb += step_ready.eq(act_ready)
        else:  # (a two-slice pass waits for every activation: its checks follow the upper
            # slice's channels only; a conditional phase starts after the activations anyway,
            # unless tile 0's conditional steps all share WGT1's last beat)
            checks = Mux(g_chg == 2, rs, Mux(g_chg == 1, rn, rc)).all()
            m.d.comb += step_ready.eq(act_ready | (~st_slc & checks if SL else checks))
        act_wait = Signal()
        with m.If(running):
            with m.If(have_cur):
                m.d.comb += [issue.eq(step_ready & ~(is_last & in_flight)),
                             act_wait.eq(~step_ready)]
            with m.Elif(rl_done):
                m.d.comb += swap.eq(1)
        with m.If(issue & is_last):
            m.d.sync += [in_flight.eq(1), d_start.eq(1),
                         cnt["PASSES"].eq(cnt["PASSES"] + 1)]
            if SL:
                with m.If(st_sl):
                    m.d.sync += cnt["SLICED_PASSES"].eq(cnt["SLICED_PASSES"] + 1)
            with m.If(rl_done):
                m.d.comb += swap.eq(1)
            with m.Else():
                m.d.sync += have_cur.eq(0)
        # The step state (counters, last flags, channel offsets) takes one of two values: the
        # pass start's (a pass's last step, or a row-set swap) or the next step's, chosen from
        # registers alone (the last flags); issue and swap select between them and hold, as
        # the last level in front of the registers (with the step's branch decoded behind
        # issue, issue -> swap -> the offsets' adder multiplexers was the 4 x 8 ECP5
        # critical path, 14 ns)
        step_reset = Signal()
        step_adv = Signal()
        m.d.comb += [step_reset.eq(swap | (issue & is_last)), step_adv.eq(issue & ~is_last)]
        with m.If(step_reset):
            m.d.sync += reset_steps()
        with m.Elif(step_adv):
            m.d.sync += [st_first.eq(0), st_w.eq(st_w + 1)]
            with m.If(~last_kx):
                m.d.sync += [st_kx.eq(st_kx + 1),
                             last_kx.eq(st_kx + 1 == kernel_m1),
                             is_last.eq(last_n & last_ky & (st_kx + 1 == kernel_m1)),
                             *(step_off[j].eq(step_off[j] + 1) for j in range(NG)),
                             *(lo_step_off[j].eq(lo_step_off[j] + 1) for j in range(len(lo_far)))]
            with m.Elif(~last_ky):
                m.d.sync += [last_kx.eq(kernel_m1 == 0), last_ky.eq(st_ky + 1 == ky_end),
                             is_last.eq(last_n & (st_ky + 1 == kernel_m1) & (kernel_m1 == 0)),
                             st_kx.eq(0), st_ky.eq(st_ky + 1),
                             *(row_off[j].eq(row_off[j] + w_in) for j in range(NG)),
                             *(step_off[j].eq(row_off[j] + w_in) for j in range(NG)),
                             *(lo_row_off[j].eq(lo_row_off[j] + w_in) for j in range(len(lo_far))),
                             *(lo_step_off[j].eq(lo_row_off[j] + w_in)
                               for j in range(len(lo_far)))]
            with m.Else():
                m.d.sync += [g_chg.eq(1), last_kx.eq(kernel_m1 == 0),
                             last_ky.eq(st_sl3 | (kernel_m1 == 0) if SL3 else kernel_m1 == 0),
                             last_n.eq(st_n + 1 == n_end),
                             is_last.eq((st_n + 1 == n_end) & (kernel_m1 == 0)),
                             st_kx.eq(0), st_ky.eq(0), st_n.eq(st_n + 1)]
                if SL3:
                    m.d.sync += st_w.eq(st_w + st_wj)
                for j in range(NG):
                    g_off_next = Mux(g_skip_next[j], g_off[j] + skip_off, g_off[j] + hw_in)
                    if SL:  # the lower slice's channel: the upper one's plus the distance
                        far = Mux(g_skip_next[j], 0, lo_far[j] | lo_set_next[j])
                        lo_inc = Mux(st_slc,
                                     Mux(g_skip_next[j], lo_inc_skip,
                                         Mux(lo_far[j] | lo_set_next[j], lo_inc_far,
                                             lo_inc_near)),
                                     Mux(g_skip_next[j], skip_off, hw_in))
                        lo_next = (g_off[j] + lo_inc)[:len(lo_row_off[j])]
                        m.d.sync += [lo_far[j].eq(far), lo_row_off[j].eq(lo_next),
                                     lo_step_off[j].eq(lo_next),
                                     lo_set_next[j].eq(lo_beyond[j] & (st_n + 2 == lo_gap[j]))]
                    m.d.sync += [g_off[j].eq(g_off_next), row_off[j].eq(g_off_next),
                                 step_off[j].eq(g_off_next)]
                    with m.If(g_skip_next[j]):  # (now past g_lo: no second skip)
                        m.d.sync += [g_i[j].eq(g_i[j] + 1 + base_cin),
                                     g_skip_next[j].eq(0),
                                     g_end[j].eq(g_end[j] + skip_off)]
                    with m.Else():
                        m.d.sync += [g_i[j].eq(g_i[j] + 1),
                                     g_skip_next[j].eq(is_cond & (g_i[j] == g_lo_m2[j])),
                                     g_end[j].eq(g_end[j] + hw_in)]
        with m.If(swap):
            m.d.sync += [rl_done.eq(0), have_cur.eq(1)]
        m.d.sync += [swap_q.eq(swap), last_q.eq(issue & is_last)]
        with m.If(swap_q):
            m.d.sync += copy_set(cur, nxt)
            if SL:
                m.d.sync += cur_sl.eq(nxt_sl)
            if SL3:
                m.d.sync += cur_sl3.eq(nxt_sl3)
        with m.If(last_q):
            m.d.sync += copy_set(drn, cur)
            if SL:  # a sliced pass's upper rows give no result (the lower rows drain it)
                m.d.sync += drn_sl.eq(cur_sl)
                if SL3:
                    m.d.sync += drn_sl3.eq(cur_sl3)
                with m.If(cur_sl):
                    m.d.sync += [drn["valid"][q].eq(0) for q in range(H * NG)]

        # the per-step MAC terms come from the step's registered enables (s1_*) and are
        # summed by a pipelined tree (a register after every four-way add), so the counters
        # settle 2 + ceil(log4(slots)) cycles after the step (at most 7 at 32 x 32); the
        # job's drain tail is far longer, so DONE and the host's reads see the final values.
        # (The one-cycle sum of every slot's enables behind the phase decode was the 8 x 8
        # ECP5 critical path, 15.3 ns.)
        issued_term, issued_levels = _pipelined_sum(m, macs_now, "issued_term")
        # The elements an issued conditional step skips (gate off) are, in every valid slot,
        # its group's valid columns less those it issues: so the step's skipped MACs are its
        # valid slot-columns (the pass's valid slots per group, counted when the row set
        # becomes current, times the group's valid columns: a few small adds, no per-slot
        # term) less its issued MACs, taken from the issued sum after the same delay.
        n_valid = [Signal(range(R + 1), name=f"n_valid_{j}") for j in range(NG)]
        with m.If(swap):
            m.d.sync += [n_valid[j].eq(sum(nxt["valid"][r * NG + j] for r in range(R)))
                         for j in range(NG)]
        # The slot-columns are summed by a pipelined tree whose registers are part of the
        # delay (their one-cycle sum was an 8 x 8 ECP5 critical path), and they are not
        # qualified by `issue` before it: the delayed "conditional step issued" flag selects
        # the difference, so issue, whose enables fan out widely, gains one load.
        lag = ISSUE_REGS + 1 + issued_levels  # issue -> s1 registers -> the issued sum
        cond_cols, cols_levels = _pipelined_sum(
            m, [Mux(colmask[c], n_valid[c // G], 0) for c in range(C)], "cond_cols")
        assert cols_levels <= lag  # (C <= 64: at most 3 levels, lag is at least 3)
        cond_cols_q = _delayed(m, cond_cols, lag - cols_levels, "cond_cols")
        cond_q = _delayed(m, issue & is_cond, lag, "cond_step", reset=True)
        if SL:  # a sliced pass's idle steps: only the upper slots, half the valid ones
            idle_q = _delayed(m, issue & low_idle, lag, "idle_step", reset=True)
            cond_cols_q = Mux(idle_q, cond_cols_q >> 1, cond_cols_q)
        skipped_term = Signal(range(R * C + 1))
        m.d.comb += skipped_term.eq(Mux(cond_q, cond_cols_q - issued_term, 0))
        m.d.sync += [cnt["MACS_ISSUED"].eq(cnt["MACS_ISSUED"] + issued_term),
                     cnt["MACS_SKIPPED"].eq(cnt["MACS_SKIPPED"] + skip_drain + skipped_term)]

        phase_done = Signal()
        m.d.comb += phase_done.eq(~have_cur & ~rl_busy & ~rl_wr & ~rl_done & ~src_left &
                                  ~in_flight & ~d1_go & ~ser_busy &
                                  ~(d2_go & is_base if gating else 0))

        # ---------------------------------------------------------------- loader FSM
        # beats of the current block (activations, a tile's weights or residual), bounded by the
        # buffers in a valid job (anything larger is refused with an error flag)
        ld_cnt = Signal(range(max(act_words, P.wgt_depth, P.pix_depth) + 1))
        ld_tile = Signal(DIM_BITS + 1)  # first output channel of the tile being loaded
        fire = Signal()
        m.d.comb += fire.eq(self.s_axis_tvalid & self.s_axis_tready)
        # a beat in the states whose TREADY is 1 (weights, parameters, residual): TVALID alone,
        # so their counters and the bank flags do not wait for the activation state's TREADY
        # decode (act_piece -> TREADY -> fire -> the bank-full flag was a 4 x 8 ECP5 critical
        # path)
        beat_in = self.s_axis_tvalid
        # the last activation beat, ceil(n_act / B) - 1, registered like wgt_last below (first
        # used after tile 0's bank; the subtract in front of the compare was a long loader path)
        act_last = Signal(range(act_words + 1))
        m.d.sync += act_last.eq(((n_act + B - 1) >> bbits) - 1)
        # a beat goes into the activation buffer as AP pieces of WPC words of AW bytes, the
        # first in the cycle it arrives, the others from `act_hold` in the next AP - 1 cycles
        # (the stream held meanwhile)
        act_piece = Signal(max(_log2(AP), 1))
        act_hold = Signal(8 * B)
        act_beat_done = Signal()
        PB = AW * WPC  # bytes written per cycle
        if AP > 1:
            m.d.comb += [act_wr_addr.eq(Cat(act_piece, ld_cnt)),
                         act_wr_data.eq(Mux(act_piece == 0, self.s_axis_tdata[:8 * PB],
                                            act_hold[:8 * PB]))]
        else:
            m.d.comb += [act_wr_addr.eq(ld_cnt), act_wr_data.eq(self.s_axis_tdata)]
        m.d.comb += [wgt_wp.addr.eq(Cat(ld_cnt[:wbits - wpb], ld_bank)),
                     wgt_wp.data.eq(self.s_axis_tdata[:8 * C * WP])]
        wgt_last = Signal.like(n_wgt)  # the last WGT beat: ceil(n_wgt / WP) - 1, registered
        m.d.sync += wgt_last.eq(((n_wgt + WP - 1) >> wpb) - 1)
        # A gated tile's WGT comes in two parts: the words its base phase reads, ceil(BASE_CIN
        # * K * K / WP) (with the parameters and residual after them, the tile may start),
        # and the rest, after the residual (after the activations in tile 0's section), which
        # only the conditional phase reads: so tile 0's base phase does not wait for the
        # conditional weights. `wgt_split`: the first part's last beat (a dense job's, or one
        # without conditional words past it: every beat; `wgt_one` then, no second part)
        # (a dense-only build has one part: no second part's state or flags are generated)
        wgt_split = Signal.like(n_wgt) if gating else wgt_last
        wgt_one = Signal() if gating else Const(1)
        if gating:
            m.d.sync += wgt_split.eq(Mux(gated, ((base_wk + WP - 1) >> wpb) - 1, wgt_last))
            m.d.sync += wgt_one.eq(wgt_split == wgt_last)
        m.d.comb += [wp.addr.eq(Cat(ld_cnt[:pbits - rpb], ld_bank)) for wp in res_wp]
        m.d.comb += [wp.data.eq(Cat(*(self.s_axis_tdata.word_select(q * NG + j, 8 * G)
                                      for q in range(RP))))
                     for j, wp in enumerate(res_wp)]
        res_last = Signal.like(hw_out)  # the last RES beat: ceil(hw_out / RP) - 1, registered
        m.d.sync += res_last.eq(((hw_out + RP - 1) >> rpb) - 1)
        # PAR: parameter k of column c is slot c % PP of beat k * NCB + c // PP (into par_mem)
        PP, NCB = P.par_pack, P.par_col_beats
        par_b = Signal(range(max(NCB, 2)))  # beat within the parameter (stays 0 if NCB is 1)
        par_k = Signal(range(NK))  # the parameter
        start_job = Signal()
        bank_set = Signal(2)
        cond_set = Signal(2)
        bank_clr = Signal(2)
        m.d.sync += bank_full.eq((bank_full | bank_set) & ~bank_clr)
        if gating:
            m.d.sync += bank_cond.eq((bank_cond | cond_set) & ~bank_clr)

        def bank_loaded():  # (the whole bank: both parts)
            m.d.comb += cond_set.eq(Mux(ld_bank, 0b10, 0b01))
            m.d.sync += [ld_cnt.eq(0), ld_bank.eq(~ld_bank), ld_tile.eq(ld_tile + C)]

        def to_second_part():  # (never in a dense-only build: wgt_one is constant there)
            if gating:
                m.d.sync += ld_cnt.eq(wgt_split + 1)
                m.next = "L_WGT2"

        def after_first_part():
            # the activations follow the first tile's first part, then its second part
            m.d.comb += bank_set.eq(Mux(ld_bank, 0b10, 0b01))
            with m.If(wgt_one):
                bank_loaded()
            with m.If(~act_loaded):
                m.d.sync += ld_cnt.eq(0)
                m.next = "L_ACT"
            with m.Elif(wgt_one):
                m.next = "L_WAIT"
            with m.Else():
                to_second_part()

        with m.FSM(name="loader"):
            with m.State("L_IDLE"):
                with m.If(start_job):
                    m.d.sync += [ld_cnt.eq(0), ld_tile.eq(0), ld_bank.eq(0),
                                 act_loaded.eq(0), act_have.eq(0)]
                    m.next = "L_WAIT"
            with m.State("L_ACT"):
                if AP > 1:
                    m.d.comb += [self.s_axis_tready.eq(act_piece == 0),
                                 act_wr_en.eq(fire | (act_piece != 0)),
                                 act_beat_done.eq(act_piece == AP - 1)]
                    with m.If(act_wr_en):
                        m.d.sync += act_piece.eq(act_piece + 1)  # wraps at AP
                    with m.If(fire):
                        m.d.sync += act_hold.eq(self.s_axis_tdata >> 8 * PB)
                    with m.Else():
                        m.d.sync += act_hold.eq(act_hold >> 8 * PB)
                else:
                    m.d.comb += [self.s_axis_tready.eq(1), act_wr_en.eq(fire),
                                 act_beat_done.eq(fire)]
                with m.If(act_beat_done):
                    m.d.sync += [ld_cnt.eq(ld_cnt + 1), act_have.eq(act_have + 1)]
                    with m.If(ld_cnt == act_last):
                        m.d.sync += [ld_cnt.eq(0), act_loaded.eq(1)]
                        with m.If(wgt_one):  # (tile 0's bank is complete)
                            m.next = "L_WAIT"
                        with m.Else():
                            to_second_part()
            with m.State("L_WAIT"):
                with m.If(ld_tile >= c_out):
                    m.next = "L_IDLE"
                with m.Elif(~bank_full.bit_select(ld_bank, 1)):
                    m.next = "L_WGT"
            with m.State("L_WGT"):
                m.d.comb += [self.s_axis_tready.eq(1), wgt_wp.en.eq(beat_in)]
                with m.If(beat_in):
                    m.d.sync += ld_cnt.eq(ld_cnt + 1)
                    with m.If(ld_cnt == wgt_split):
                        m.d.sync += [ld_cnt.eq(0), par_b.eq(0), par_k.eq(0)]
                        m.next = "L_PAR"
            if gating:
                with m.State("L_WGT2"):  # the conditional phase's words (ld_cnt: the word)
                    m.d.comb += [self.s_axis_tready.eq(1), wgt_wp.en.eq(beat_in)]
                    with m.If(beat_in):
                        m.d.sync += ld_cnt.eq(ld_cnt + 1)
                        with m.If(ld_cnt == wgt_last):
                            bank_loaded()
                            m.next = "L_WAIT"
            with m.State("L_PAR"):
                # parameter par_k, columns par_b * PP ... (column c in slot c % PP)
                m.d.comb += [self.s_axis_tready.eq(1), par_wp.addr.eq(Cat(par_k, ld_bank)),
                             par_wp.data.eq(Cat(*(self.s_axis_tdata.word_select(c % PP, 32)
                                                  for c in range(C))))]
                m.d.comb += par_wp.en.eq(Cat(*(beat_in & (par_b == c // PP)
                                               for c in range(C))))
                with m.If(beat_in):
                    m.d.sync += par_b.eq(par_b + 1)
                    with m.If(par_b == NCB - 1):
                        m.d.sync += [par_b.eq(0), par_k.eq(par_k + 1)]
                        with m.If(par_k == NK - 1):
                            with m.If(has_res):
                                m.next = "L_RES"
                            with m.Else():
                                after_first_part()
            with m.State("L_RES"):
                m.d.comb += [self.s_axis_tready.eq(1), *(wp.en.eq(beat_in) for wp in res_wp)]
                with m.If(beat_in):
                    m.d.sync += ld_cnt.eq(ld_cnt + 1)
                    with m.If(ld_cnt == res_last):
                        after_first_part()

        # ---------------------------------------------------------------- compute FSM
        waiting = Signal()  # compute waits for the loader (counted as LOAD_CYCLES)
        m.d.comb += waiting.eq(act_wait)
        with m.If(busy):
            m.d.sync += cnt["CYCLES"].eq(cnt["CYCLES"] + 1)
            with m.If(waiting):
                m.d.sync += cnt["LOAD_CYCLES"].eq(cnt["LOAD_CYCLES"] + 1)
            with m.Elif(~issue):
                m.d.sync += cnt["STALL_CYCLES"].eq(cnt["STALL_CYCLES"] + 1)

        def start_phase(ph):
            stmts = [phase.eq(ph), pw_p.eq(0), pw_rem.eq(hw_out), pw_more.eq(hw_out != 0),
                     pw_x.eq(0), pw_ybase.eq(-pad_top),
                     pw_xbase.eq(-pad_left), pw_rowaddr.eq(row_start),
                     *([pw_irow.eq(0), pw_ilast.eq(img_one), pw_rows.eq(h_out - 1),
                        pw_gap_ok.eq(gap_ok0)] if ST else []),
                     *(a.eq(0) for a in al_rd), *(a.eq(1) for a in al_nx),
                     have_cur.eq(0), rl_done.eq(0), rl_busy.eq(0)]
            return stmts

        # the active lists start every tile empty (in a dense job too: al_left stays exact):
        # cleared in the PHASE state by a register set on entering it (the state decode in
        # front of the counters' set/reset inputs was an 8 x 8 ECP5 path)
        phase_q = Signal()
        m.d.sync += phase_q.eq(0)
        with m.If(phase_q):
            m.d.sync += [*(n.eq(0) for n in n_active), *(d.eq(0) for d in al_diff),
                         al_left.eq(0), any_active.eq(0)]
        # the next tile's registers advance in the cycle after a tile's end, from a register
        # (the phase decision in front of their enables was the 8 x 8 ECP5 path); nothing
        # reads them in that cycle but TILE_WAIT, which allows for it; cycle-neutral
        tile_adv = Signal()
        m.d.sync += tile_adv.eq(0)
        with m.If(tile_adv):
            m.d.sync += [tile_o0.eq(tile_o0 + C), cmp_bank.eq(~cmp_bank),
                         tile_idx.eq(tile_idx + 1)]

        def tile_finished():
            return [bank_clr.eq(Mux(cmp_bank, 0b10, 0b01))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(regs.start):
                    m.d.sync += [err_reg.eq(err_q), done.eq(~err_none)]
                    with m.If(err_none):
                        m.d.sync += busy.eq(1)
                        m.next = "GO"
            with m.State("GO"):
                # the job's start a cycle after START, decoded from the state alone (START ->
                # the error check -> the enables of the counters and tile registers was an
                # 8 x 8 ECP5 path). BUSY is set with START as before; the counters are cleared
                # here (after the cycle counter's count in this cycle), so the counts are
                # unchanged.
                m.d.comb += start_job.eq(1)
                m.d.sync += [tile_o0.eq(0), grp_r.eq(0), grp_lo.eq(0),
                             grp_lo_off.eq(0),
                             tile_idx.eq(0),
                             cmp_bank.eq(0), bank_full.eq(0),
                             *([bank_cond.eq(0)] if gating else [])]
                m.d.sync += [s.eq(0) for s in cnt.values()]
                m.next = "TILE_WAIT"
            with m.State("TILE_WAIT"):
                # the columns of the next tile with an output channel, counted down in
                # COL_SETUP (`col_ok`: column setup_c is valid, a register; the sum and compare
                # ``tile_o0 + setup_c < C_OUT`` in front of the group counters' enables was
                # an 8 x 8 ECP5 path); a tile has at least one valid column.
                # In the cycle after a tile's end (`tile_adv`) the tile registers still hold
                # the finished tile: this tile's first column and bank are the next ones.
                o0 = Mux(tile_adv, tile_o0 + C, tile_o0)  # this tile's first output channel
                m.d.sync += [setup_c.eq(0), col_ok.eq(1), cols_left.eq(c_out - o0 - 1),
                             last_tile.eq(o0 + C >= c_out)]
                with m.If(bank_full.bit_select(cmp_bank ^ tile_adv, 1)):
                    m.next = "COL_SETUP"
                with m.Else():
                    m.d.comb += waiting.eq(1)
            with m.State("COL_SETUP"):
                # shift in column setup_c's base range; the group counter runs across tiles
                valid = col_ok
                m.d.sync += [col_ok.eq(col_ok & (cols_left != 0)), cols_left.eq(cols_left - 1)]
                lo = Mux(base_first, regs.base_lo, grp_lo)
                m.d.sync += col_valid.eq(Cat(col_valid[1:], valid))
                with m.If(setup_c == C - 1):
                    m.d.sync += phase_q.eq(1)  # PHASE's clears, from a register
                for j in range(NG):  # column j * G's base range and its offset (g_start_off)
                    with m.If(setup_c == j * G):
                        m.d.sync += [g_lo[j].eq(lo), g_lo_m1[j].eq(lo - 1),
                                     g_lo_m2[j].eq(lo - 2),
                                     g_lo_off[j].eq(Mux(base_first, prods.lo_off, grp_lo_off))]
                with m.If(valid):
                    with m.If(grp_r == group_cout_m1):
                        m.d.sync += [grp_r.eq(0), grp_lo.eq(grp_lo + base_cin),
                                     grp_lo_off.eq(grp_lo_off + prods.base_off)]
                    with m.Else():
                        m.d.sync += grp_r.eq(grp_r + 1)
                m.d.sync += setup_c.eq(setup_c + 1)
                with m.If(setup_c == C - 1):
                    m.next = "PHASE"
            with m.State("PHASE"):
                # the tile's parameters: read from their bank only now, when the previous
                # tile's last drain row has passed every post-processing stage that reads them
                # (it went in at least cols + 3 cycles ago, and FR + PRL <= cols + 3)
                m.d.sync += cp_k.eq(0)
                # first phase of the tile: dense or base
                with m.If(gated):
                    m.d.sync += start_phase(PH_BASE)
                    m.d.sync += [n_ch_m1.eq(base_cin - 1), w_start.eq(0),
                                 *(g_start[j].eq(g_lo[j]) for j in range(NG)),
                                 *(g_start_off[j].eq(g_lo_off[j]) for j in range(NG))]
                with m.Else():
                    m.d.sync += start_phase(PH_DENSE)
                    m.d.sync += [n_ch_m1.eq(c_in - 1), w_start.eq(0),
                                 *(g_start[j].eq(0) for j in range(NG)),
                                 *(g_start_off[j].eq(0) for j in range(NG))]
                m.d.sync += running.eq(1)
                m.next = "RUN"
            def next_tile():
                m.d.comb += tile_finished()
                m.d.sync += tile_adv.eq(1)
                with m.If(last_tile):
                    m.next = "TERM"
                with m.Else():
                    m.next = "TILE_WAIT"

            with m.State("RUN"):
                with m.If(phase_done):
                    m.d.sync += running.eq(0)
                    if gating:
                        with m.If(is_base & any_active):
                            with m.If(bank_cond.bit_select(cmp_bank, 1)):
                                m.next = "COND"
                            with m.Else():
                                m.next = "COND_WAIT"
                        with m.Else():
                            next_tile()
                    else:
                        next_tile()
            if gating:
                with m.State("COND_WAIT"):
                    # until the tile's conditional weights are in (tile 0's come after the
                    # activations): counted as LOAD_CYCLES
                    m.d.comb += waiting.eq(1)
                    with m.If(bank_cond.bit_select(cmp_bank, 1)):
                        m.next = "COND"
                with m.State("COND"):
                    m.d.sync += start_phase(PH_COND)
                    for j in range(len(lo_far)):  # (g_lo 0: every channel is past it)
                        m.d.sync += [lo_far0[j].eq((g_lo[j] != 0) & (g_lo[j] <= half)),
                                     lo_beyond[j].eq(g_lo[j] > half),
                                     lo_gap[j].eq(g_lo[j] - half)]
                    m.d.sync += [n_ch_m1.eq(cond_cin - 1), w_start.eq(base_wk),
                                 *(g_start[j].eq(Mux(g_lo[j] == 0, base_cin, 0))
                                   for j in range(NG)),
                                 *(g_start_off[j].eq(Mux(g_lo[j] == 0, prods.base_off, 0))
                                   for j in range(NG))]
                    m.d.sync += running.eq(1)
                    m.next = "RUN"
            with m.State("TERM"):
                with m.If(room & ~post_busy):
                    m.d.comb += [term.eq(1), fifo.w_en.eq(1)]
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                with m.If(fifo.level == 0):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.next = "IDLE"
        return m
