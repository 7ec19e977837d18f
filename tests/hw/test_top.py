"""Whole layers through the top level's AXI4-Lite and AXI4-Stream ports (Amaranth simulator),
bit-exact against the integer reference; counters against the work figures; cycles against the
cycle model; invalid descriptors against the error flags."""

from dataclasses import replace

import numpy as np
import pytest

from sluice.errors import SluiceError
from sluice.hw.cycle_model import (LOSS_TERMS, active_items, loss_breakdown, pass_steps,
                                   predict, sliced_last)
from sluice.hw.params import (ERROR_FIELDS, FLAG_FIELDS, IMG_GAP_MAX, REG, HwParams, slice_taps,
                              walked_rows)
from sluice.hw.simulate import run_layer_amaranth, simulate_jobs
from sluice.model.randlayer import extreme_sums_layer, make_layer
from sluice.model.reference import run_reference, work_figures
from sluice.sim.batch import split, stack_layer
from sluice.sim.host import (Job, computed_rows, decode_words, job_rows, layer_jobs,
                             new_outputs)

# skip groups of 2 columns (the default width), one group spanning the array, single columns
SQUARE = HwParams(rows=4, cols=4, act_depth=1024, wgt_depth=512, pix_depth=64, skip_cols=2)
TALL = HwParams(rows=3, cols=5, act_depth=1024, wgt_depth=512, pix_depth=64, skip_cols=5)
NARROW = HwParams(rows=2, cols=3, act_depth=512, wgt_depth=256, pix_depth=64, skip_cols=1)
# a 32-bit input stream: the activation load overlaps many passes and the second tile
SLOW = HwParams(rows=4, cols=4, act_depth=2048, wgt_depth=512, pix_depth=256, skip_cols=2,
                stream_width=4)
ERR = {name: lsb for name, lsb, _, _ in ERROR_FIELDS}
FLAG = {name: lsb for name, lsb, _, _ in FLAG_FIELDS}

CASES = {
    # name: (params, make_layer kwargs)
    "gated_group_3x3": (SQUARE, dict(c_in=8, c_out=8, size=(5, 6), partitions=2,
                                     gate_rate=0.25)),
    "gated_tiles_span_groups": (SQUARE, dict(c_in=6, c_out=6, size=(5, 5), partitions=3,
                                             gate_rate=0.4, relu=False)),
    "gated_first_k1": (TALL, dict(c_in=8, c_out=12, size=(4, 5), kernel=1, padding=0,
                                  partitions=4, base="first", gate_rate=0.3)),
    "gated_stride2_k5_res": (TALL, dict(c_in=4, c_out=6, size=(9, 8), kernel=5, stride=2,
                                        padding=2, partitions=2, gate_rate=0.5,
                                        residual=True)),
    # one base channel per group: group 1's base range starts at channel 1, so its first
    # conditional channel step already skips it (the flag set at the phase's start)
    "gated_base_at_channel_1": (SQUARE, dict(c_in=4, c_out=8, size=(4, 5), partitions=4,
                                             gate_rate=0.5)),
    "gated_k7_pad3": (SQUARE, dict(c_in=2, c_out=4, size=(6, 5), kernel=7, padding=3,
                                   partitions=2, gate_rate=0.3)),
    "dense_k3_stride2_nopad": (TALL, dict(c_in=3, c_out=5, size=(7, 7), kernel=3, stride=2,
                                          padding=0, dense=True, residual=True)),
    "gated_all_off": (SQUARE, dict(c_in=4, c_out=4, size=(4, 4), partitions=2, gate_rate=0.0)),
    "gated_logic_pe": (replace(SQUARE, pe_mult="logic"),
                       dict(c_in=4, c_out=4, size=(4, 4), partitions=2, gate_rate=0.3)),
    "gated_all_on": (SQUARE, dict(c_in=4, c_out=4, size=(4, 4), partitions=2, gate_rate=1.0)),
    "gated_p1": (SQUARE, dict(c_in=3, c_out=4, size=(4, 3), partitions=1, gate_rate=0.5)),
    "slow_stream_k1_partial_tile": (SLOW, dict(c_in=12, c_out=6, size=(9, 9), kernel=1,
                                                padding=0, partitions=3, gate_rate=0.3)),
    "gated_skip1": (NARROW, dict(c_in=4, c_out=5, size=(4, 4), kernel=3, padding=1,
                                 partitions=1, gate_rate=0.3)),
    "gated_skip1_p": (NARROW, dict(c_in=4, c_out=6, size=(5, 4), kernel=3, padding=1,
                                   partitions=2, gate_rate=0.3, residual=True)),
    # the shortest time from a tile's PHASE to its first drained row (two rows, one-column skip
    # groups, one-step base passes): the tile parameters are read from their memory in between
    "tile_params_shortest_phase": (HwParams(rows=2, cols=2, act_depth=256, wgt_depth=64,
                                            pix_depth=64, skip_cols=1),
                                   dict(c_in=2, c_out=6, size=(3, 3), kernel=1, padding=0,
                                        partitions=2, gate_rate=0.5, residual=True)),
    # post-processing units shared by columns (the drain takes post_cols cycles per row)
    "shared_post_gated_res": (replace(SQUARE, post_cols=4),
                              dict(c_in=8, c_out=8, size=(5, 6), partitions=2, gate_rate=0.3,
                                   residual=True)),
    "shared_post_k1_short_passes": (replace(SQUARE, post_cols=2),
                                    dict(c_in=2, c_out=6, size=(5, 5), kernel=1, padding=0,
                                         partitions=2, gate_rate=0.4)),
    "shared_post_dense_res": (replace(TALL, post_cols=5),
                              dict(c_in=3, c_out=7, size=(6, 6), kernel=3, padding=1,
                                   dense=True, residual=True, relu=False)),
    "shared_post_skip1": (replace(NARROW, post_cols=3),
                          dict(c_in=4, c_out=6, size=(5, 4), kernel=3, padding=1, partitions=2,
                               gate_rate=0.3, residual=True)),
    # activation-buffer copies read by two skip groups (the passes wait for the whole block)
    "shared_act_gated": (replace(SQUARE, act_share=2),
                         dict(c_in=8, c_out=8, size=(5, 6), partitions=2, gate_rate=0.3)),
    "shared_act_dense_res": (replace(SQUARE, act_share=2),
                             dict(c_in=3, c_out=6, size=(5, 5), kernel=3, padding=1,
                                  dense=True, residual=True)),
    # three skip groups: a shared copy and a single one per row; one-byte words
    "shared_act_odd_groups_bytewide": (replace(NARROW, act_share=2, act_width=1),
                                       dict(c_in=4, c_out=6, size=(5, 4), kernel=3, padding=1,
                                            partitions=2, gate_rate=0.3, residual=True)),
    # two-byte words behind a 4-byte stream: each beat takes two cycles, still overlapped
    # with the first passes
    "narrow_act_words_overlap": (replace(SLOW, act_width=2),
                                 dict(c_in=12, c_out=6, size=(9, 9), kernel=1, padding=0,
                                      partitions=3, gate_rate=0.3)),
    # four-byte words from a 16-byte stream in copies two skip groups share: the block RAM's
    # word is registered before its byte is selected (as for two-byte words), cycle-neutral
    "shared_act_four_byte_words": (replace(SQUARE, act_share=2, act_width=4),
                                   dict(c_in=8, c_out=8, size=(5, 6), partitions=2,
                                        gate_rate=0.3, residual=True)),
    # one residual pixel per beat (a 4-byte stream on 4 columns)
    "slow_stream_residual": (SLOW, dict(c_in=4, c_out=4, size=(5, 5), partitions=2,
                                        gate_rate=0.3, residual=True)),
    # a 16-byte stream on 2 columns: 8 weight steps per beat and buffer word, and a weight
    # buffer of one word per bank (base and conditional steps share it)
    "packed_weights_one_word_per_bank": (
        HwParams(rows=2, cols=2, act_depth=256, wgt_depth=8, pix_depth=32, skip_cols=1),
        dict(c_in=8, c_out=4, size=(3, 4), kernel=1, padding=0, partitions=2, gate_rate=0.4)),
    # row slices (HwParams.row_slices, on by default): conditional passes with at most
    # rows // 2 pixels per skip group on two rows each, the lower slice over the second half
    # of the conditional channels; 7 x 7
    "sliced_k7_pad3_sparse": (SQUARE, dict(c_in=4, c_out=4, size=(4, 4), kernel=7, padding=3,
                                           partitions=2, gate_rate=0.05)),
    # two rows (one row per slice), 5 x 5, single-column skip groups, residual
    "sliced_two_rows_k5_res": (NARROW, dict(c_in=4, c_out=6, size=(4, 4), kernel=5, padding=2,
                                            partitions=2, gate_rate=0.05, residual=True)),
    # one-byte activation words behind a 4-byte stream: the sliced passes' steps wait for
    # their input channels (common base set first, the conditional channels still loading)
    "sliced_steps_wait_for_channels": (replace(SLOW, act_width=1),
                                       dict(c_in=16, c_out=4, size=(6, 6), kernel=3, padding=1,
                                            partitions=4, base="first", gate_rate=0.02)),
    # shared post-processing units and shared activation copies with sliced passes
    "sliced_shared_post_and_act": (replace(SQUARE, post_cols=2, act_share=2),
                                   dict(c_in=6, c_out=6, size=(4, 5), partitions=3,
                                        gate_rate=0.04, residual=True)),
    # three slices (row_slices 3, 3 x 3): a last pass with at most rows // 4 pixels per skip
    # group on three rows each, one kernel row per row; 4 rows (one row per slice, the
    # fourth idle), residual, three base groups
    "sliced3_4r_res": (replace(SQUARE, row_slices=3),
                       dict(c_in=6, c_out=6, size=(5, 5), partitions=3, gate_rate=0.02,
                            residual=True)),
    # 8 rows (two per slice, rows 6 and 7 idle), two-row and three-row sliced passes, two
    # columns per post-processing unit
    "sliced3_eight_rows": (HwParams(rows=8, cols=4, act_depth=2048, wgt_depth=512,
                                    pix_depth=128, skip_cols=2, post_cols=2, row_slices=3),
                           dict(c_in=6, c_out=8, size=(6, 6), partitions=2, gate_rate=0.02)),
    # 6 rows (rows 0, 1 and 3 of a three-slice pass: the middle row fires two rows before
    # the lower one, the upper row three), a two-slice pass beside the three-slice one
    "sliced3_six_rows": (HwParams(rows=6, cols=4, act_depth=2048, wgt_depth=512,
                                  pix_depth=128, skip_cols=2, post_cols=2, row_slices=3),
                         dict(c_in=12, c_out=8, size=(4, 6), partitions=2, gate_rate=0.15)),
    # two channel slices where the skip groups' base ranges lie before, inside and past the
    # lower slice's channels (n = 6 conditional channels, h = 3; base ranges at 0, 2, 4, 6):
    # the lower slice's channel sequence skips the base range at its own step
    "sliced_channels_cross_base_ranges": (replace(SQUARE, row_slices=2),
                                          dict(c_in=8, c_out=8, size=(4, 5), partitions=4,
                                               gate_rate=0.04)),
    # the same gated layer without row slices
    "unsliced_row_slices_1": (replace(SQUARE, row_slices=1),
                              dict(c_in=8, c_out=8, size=(5, 6), partitions=2,
                                   gate_rate=0.25)),
    # two registers between block-RAM data and the array edge (feed_regs 2, the 8 x 8 board
    # build with 8-byte words): 4-byte words in shared copies (the word registered as read,
    # then its byte selected and registered again), a residual
    "two_feed_regs_shared_words": (replace(SQUARE, act_share=2, act_width=4, feed_regs=2),
                                   dict(c_in=8, c_out=8, size=(5, 6), partitions=2,
                                        gate_rate=0.3, residual=True)),
    # and with two- and three-row sliced passes (their weight feeds too), full-beat words
    "two_feed_regs_sliced3": (HwParams(rows=8, cols=4, act_depth=2048, wgt_depth=512,
                                       pix_depth=128, skip_cols=2, post_cols=2, row_slices=3,
                                       feed_regs=2),
                              dict(c_in=6, c_out=8, size=(6, 6), partitions=2,
                                   gate_rate=0.02)),
}


def check_run(layer, params, dense):
    res = run_layer_amaranth(layer, params, dense=dense)
    y, gate = run_reference(layer, dense=dense)
    # stacked images (layer.stack): the rows between them are skipped, zero in the results
    rows = computed_rows(layer, params, dense)
    y[:, ~rows], gate[:, ~rows] = 0, 0
    assert np.array_equal(res.y, y), f"{int((res.y != y).sum())} outputs differ"
    assert np.array_equal(res.gate, gate)
    _, gate_gated = run_reference(layer)
    n_rows = int(rows.sum())
    fig = work_figures(layer, gate[:, rows], params.rows, params.cols, out_rows=n_rows)
    cnt = res.counters
    # every element MAC the layer needs is issued, no more, and the rest are counted skipped
    # (padding channels, see sim.host.job_channels, do their base MACs and skip the rest)
    npad = layer_jobs(layer, params, dense=dense)[0].channels.count(-1)
    kk = layer.kernel ** 2
    pad_base = npad * n_rows * layer.w_out * (layer.c_in // layer.partitions) * kk
    pad_dense = npad * n_rows * layer.w_out * layer.c_in * kk
    assert cnt["macs_issued"] == fig["macs_theory"] + pad_base
    assert cnt["macs_issued"] + cnt["macs_skipped"] == fig["macs_dense"] + pad_dense
    assert res.cycles >= fig["bound_cycles"]
    # the cycle model reproduces the RTL's counters exactly
    model = predict(layer, gate_gated, params, dense=dense)
    assert model["cycles"] == res.cycles
    assert model["load_cycles"] == cnt["load_cycles"]
    assert model["stall_cycles"] == cnt["stall_cycles"]
    assert model["passes"] == cnt["passes"]
    assert model["sliced_passes"] == cnt["sliced_passes"]
    if layer.gated and not dense and layer.c_in // layer.partitions < layer.c_in:
        assert model["active_pixels"] == cnt["active_pixels"]
    # the loss breakdown accounts for every cycle, each term non-negative
    lb = loss_breakdown(layer, gate_gated, dict(cnt, cycles=res.cycles), params, dense)
    assert sum(lb[t] for t in LOSS_TERMS) == pytest.approx(res.cycles)
    assert all(lb[t] >= -1e-9 for t in LOSS_TERMS), lb
    assert lb["ideal"] == pytest.approx(fig["macs_theory"] / (params.rows * params.cols))
    # packing, from the counters, is exactly the partial last passes and the lockstep between
    # skip groups, both from the gate bits
    assert lb["partial_pass"] + lb["lockstep"] == pytest.approx(lb["packing"])
    assert lb["partial_pass"] >= 0 and lb["lockstep"] >= 0
    return res, gate


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_bit_exact(name):
    params, kw = CASES[name]
    layer = make_layer(**kw, seed=len(name))
    res, gate = check_run(layer, params, dense=False)
    if layer.gated:
        # the skip controller streams exactly the (pixel, skip group) items with any gate on
        active = 0
        for job in layer_jobs(layer, params):
            band = gate[job.channels, job.y0:job.y0 + job.h_out]  # padding: gate 0, no items
            band[np.array(job.channels) < 0] = 0
            n_tiles = -(-len(job.channels) // params.cols)
            active += sum(sum(active_items(band, t, params)) for t in range(n_tiles))
        if layer.partitions > 1:
            assert res.counters["active_pixels"] == active
    if name.startswith("sliced"):  # the case does run sliced passes: fewer cycles than without
        _, gate_gated = run_reference(layer)
        assert predict(layer, gate_gated, params)["sliced_passes"] > 0
        unsliced = predict(layer, gate_gated, replace(params, row_slices=1))
        assert res.cycles < unsliced["cycles"] and unsliced["sliced_passes"] == 0
    if name.startswith("two_feed_regs"):  # the second feed register costs cycles, no more
        _, gate_gated = run_reference(layer)
        one = predict(layer, gate_gated, replace(params, feed_regs=1))
        assert one["cycles"] < res.cycles <= one["cycles"] + 2 * one["passes"]
    if name.startswith("sliced3_"):  # and three-slice passes: fewer cycles than on two
        assert predict(layer, gate_gated, params)["sliced3_passes"] > 0
        two = predict(layer, gate_gated, replace(params, row_slices=2))
        assert res.cycles < two["cycles"] and two["sliced3_passes"] == 0


def test_which_passes_are_sliced():
    """The row-slice decision (the RTL's loader and the cycle model share it) and the split."""
    assert [slice_taps(k) for k in (1, 3, 5, 7)] == [(1, 0), (2, 1), (3, 2), (4, 3)]
    p = HwParams(rows=8, row_slices=2)  # slices of 4 rows
    assert p.slice_rows == 4 and replace(p, row_slices=1).slice_rows == 0
    # the busiest group's pixels left for the tile's last pass: at most 4
    assert sliced_last(4, 3, p) and not sliced_last(5, 3, p)
    assert sliced_last(12, 3, p) and not sliced_last(13, 3, p) and not sliced_last(8, 3, p)
    assert not sliced_last(0, 3, p)
    assert not sliced_last(2, 1, p)  # 1 x 1: no kernel rows to split
    assert not sliced_last(2, 3, replace(p, row_slices=1))
    odd = HwParams(rows=3)  # slices of one row, the third row unused in a sliced pass
    assert [sliced_last(n, 5, odd) for n in (1, 2, 3, 4)] == [2, 0, 0, 2]
    # three slices (row_slices 3): 3 x 3 layers whose last pass has at most rows // 4 pixels
    p3 = replace(p, row_slices=3)
    assert p3.slice3_rows == 2 and p3.slice_rows == 4 and p.slice3_rows == 0
    assert [sliced_last(n, 3, p3) for n in (1, 2, 3, 4, 5, 10, 11)] == [3, 3, 2, 2, 0, 3, 2]
    assert [sliced_last(n, 5, p3) for n in (1, 2, 3)] == [2, 2, 2]  # 5 x 5: two at most
    assert sliced_last(2, 1, p3) == 0
    assert replace(p3, rows=3).slice3_rows == 0 and sliced_last(1, 3, replace(p3, rows=3)) == 2
    # steps of a pass over 24 conditional channels: all, the first 12 (two channel slices),
    # one kernel row of each (three); an odd count's upper slice takes the extra channel
    assert [pass_steps(3, s, 24) for s in (0, 2, 3)] == [216, 108, 72]
    assert pass_steps(7, 2, 5) == 3 * 49 and pass_steps(5, 2, 1) == 25


@pytest.mark.parametrize("name", ["gated_group_3x3", "gated_stride2_k5_res"])
def test_dense_mode_of_gated_layer(name):
    params, kw = CASES[name]
    layer = make_layer(**kw, seed=len(name))
    check_run(layer, params, dense=True)


def test_sums_at_the_ends_of_the_narrowed_width(monkeypatch):
    """The elements, the stored base sums and the drain are ``sum_bits`` wide, not 32: a pass of
    ``wgt_depth`` products at either extreme stays exact (gated and dense), and one bit fewer
    would not (the dense run's sums of +-260,096 wrap)."""
    params = HwParams(rows=2, cols=2, act_depth=256, wgt_depth=16, pix_depth=32, skip_cols=1)
    assert params.sum_bits == 19 and HwParams().sum_bits == 26
    assert HwParams(wgt_depth=1 << 17).sum_bits == 32  # never above ACC_BITS
    layer = extreme_sums_layer(params.wgt_depth)
    y, gate = run_reference(layer, dense=True)
    assert y[0, 0, 0] == 64 and y[1, 0, 0] == -63  # +-260,096 / 2^12, rounded half up
    _, gate = run_reference(layer)
    assert gate[0, 0, 0] and gate[0, 1, 2] and gate[0].sum() == 2
    check_run(layer, params, dense=False)
    check_run(layer, params, dense=True)
    narrow = HwParams.sum_bits.fget(params) - 1
    monkeypatch.setattr(HwParams, "sum_bits", property(lambda self: narrow))
    res = run_layer_amaranth(layer, params, dense=True)
    assert not np.array_equal(res.y, run_reference(layer, dense=True)[0])


def test_odd_base_groups_are_padded():
    """Base groups of 3 channels with skip groups of 2: each group padded to 4 channels."""
    layer = make_layer(c_in=4, c_out=6, size=(4, 4), partitions=2, gate_rate=0.4, seed=9)
    (job,) = layer_jobs(layer, SQUARE)
    assert job.channels == [0, 1, 2, -1, 3, 4, 5, -1]
    assert job.descriptor["GROUP_COUT"] == 4 and job.descriptor["C_OUT"] == 8
    check_run(layer, SQUARE, dense=False)


def test_columns_past_c_out_ignore_their_parameters(monkeypatch):
    """The last channel tile's columns past C_OUT hold no channel: the host sends zero weights
    and parameters there, but the gates must not depend on it (the gate compare's thresholds
    of those columns are the largest int32, `gate_thr` in hw/top.py). Here the host sends -5
    for every parameter of them, so a zero sum would pass a compare with the sent threshold and
    defer pixels for nothing: the results, counters and cycles must still match the reference
    and the cycle model."""
    import types

    import sluice.sim.host as host

    def zeros(shape, dtype=float):
        a = np.zeros(shape, dtype)
        if dtype is np.int64 and a.ndim == 1:  # the per-column parameter vectors
            a[:] = -5
        return a

    fake_np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np)
                                       if not k.startswith("__")})
    fake_np.zeros = zeros
    monkeypatch.setattr(host, "np", fake_np)
    layer = make_layer(c_in=6, c_out=6, size=(4, 4), partitions=3, gate_rate=0.5, seed=1)
    (job,) = layer_jobs(layer, SQUARE)
    assert job.descriptor["C_OUT"] == 6  # two tiles of 4 columns: 2 past C_OUT
    check_run(layer, SQUARE, dense=False)


def test_layer_in_bands():
    """A layer larger than the activation/pixel buffers runs as several host-streamed jobs."""
    params = HwParams(rows=4, cols=4, act_depth=256, wgt_depth=256, pix_depth=16)
    layer = make_layer(c_in=4, c_out=6, size=(9, 7), kernel=3, stride=1, padding=1,
                       partitions=2, gate_rate=0.3, residual=True, seed=5)
    jobs = layer_jobs(layer, params)
    assert len(jobs) >= 3
    assert {j.descriptor["PAD_TOP"] for j in jobs} == {0, 1}
    check_run(layer, params, dense=False)


# stacked images (sim.batch): (instance, layer, images); the host skips the rows between them
STACKED = {
    # 3 x 3, stride 1, padding 1: one row between the images, a residual
    "k3_residual": (SQUARE, dict(c_in=8, c_out=8, size=(3, 4), partitions=4, gate_rate=0.3,
                                 residual=True), 3),
    # stride 2: the images' rows two input rows apart across the separator
    "k3_stride2": (SQUARE, dict(c_in=8, c_out=8, size=(4, 4), stride=2, partitions=4,
                                gate_rate=0.3), 3),
    # 5 x 5 without padding: five rows between the images (their windows straddle two)
    "k5_valid": (SQUARE, dict(c_in=4, c_out=4, size=(6, 5), kernel=5, padding=0,
                              partitions=2, gate_rate=0.4), 3),
    # 1 x 1 with padding 1: the separator wider than the padding (two rows), so that the
    # images' output rows do not overlap; no row between them to skip (IMG_GAP 0)
    "k1_pad1": (SQUARE, dict(c_in=4, c_out=4, size=(3, 3), kernel=1, padding=1,
                             partitions=2, gate_rate=0.4), 2),
    # pixel buffers for two images: bands of whole images, the last one alone
    "bands_of_images": (replace(SQUARE, pix_depth=16),
                        dict(c_in=4, c_out=8, size=(2, 3), partitions=2, gate_rate=0.4,
                             residual=True), 5),
}


@pytest.mark.parametrize("name", sorted(STACKED))
def test_stacked_images_skip_the_rows_between_them(name):
    """Images stacked along the height (``sim.batch``, ``sluice run-model --images``): the
    walker skips the rows between them (IMG_ROWS, IMG_GAP), gated and dense, bit-exact per
    image, the cycle model exact and every counter consistent (``check_run``), fewer cycles
    than computing those rows (the same where there are none)."""
    params, kw, n = STACKED[name]
    layer = make_layer(**kw, seed=1)
    imgs = [make_layer(**kw, seed=s) for s in range(2, 2 + n)]
    xs = [im.x for im in imgs]
    res_in = [im.residual for im in imgs] if layer.residual is not None else None
    big, own = stack_layer(layer, xs, res_in)
    step, rows, _ = big.stack
    jobs = layer_jobs(big, params)
    assert all(j.descriptor["IMG_GAP"] == (step - rows if j.descriptor["IMG_ROWS"] else 0)
               for j in jobs)
    assert any(j.descriptor["IMG_ROWS"] == rows for j in jobs)
    assert computed_rows(big, params).sum() == n * rows  # every image's rows, nothing else
    for dense in (False, True):
        res, _ = check_run(big, params, dense)
        for i, (yi, gi) in enumerate(zip(split(res.y, own), split(res.gate, own))):
            one = layer.replace(x=xs[i], residual=res_in[i] if res_in else None)
            y_own, g_own = run_reference(one, dense=dense)
            assert np.array_equal(yi, y_own) and np.array_equal(gi, g_own), (dense, i)
        _, gate = run_reference(big)
        tall = predict(big.replace(stack=None), gate, params, dense=dense)["cycles"]
        assert res.cycles < tall if step > rows else res.cycles == tall


def test_without_stacking_each_image_runs_alone():
    """An instance built without the walker's jump (``HwParams.stacking`` False, the board
    builds): the host runs stacked images each in bands of its own, bit-exact, in the cycles
    of the images run one at a time; IMG_ROWS and IMG_GAP written anyway are ignored (every
    row computed)."""
    params = replace(SQUARE, stacking=False)
    kw = dict(c_in=8, c_out=8, size=(3, 4), partitions=4, gate_rate=0.3)
    layer = make_layer(**kw, seed=1)
    xs = [make_layer(**kw, seed=s).x for s in (2, 3)]
    big, own = stack_layer(layer, xs)
    assert [j.descriptor["IMG_ROWS"] for j in layer_jobs(big, params)] == [0, 0]
    res, _ = check_run(big, params, dense=False)
    alone = [run_reference(layer.replace(x=x))[1] for x in xs]
    assert res.cycles == sum(predict(layer.replace(x=x), g, params)["cycles"]
                             for x, g in zip(xs, alone))
    (job,) = layer_jobs(big, SQUARE)  # (the jobs of an instance with the jump)
    assert job.descriptor["IMG_ROWS"] == 3
    # written anyway, even values an instance with the jump refuses: ignored, not refused
    odd = _job({**job.descriptor, "IMG_GAP": IMG_GAP_MAX + 2}, job.beats)
    ((words, _, error, _),) = simulate_jobs([odd], params)
    assert error == 0
    y, gate = new_outputs(big)
    decode_words(big, replace(job, descriptor=dict(job.descriptor, IMG_ROWS=0, IMG_GAP=0)),
                 words, y, gate, params)  # every row's results, each once
    y_ref, g_ref = run_reference(big)
    assert np.array_equal(y, y_ref) and np.array_equal(gate, g_ref)


def test_walked_rows_and_bands_of_stacked_images():
    """The walker's rows (``hw.params.walked_rows``, the RTL's rule): a gap is skipped after
    every IMG_ROWS rows only when more than IMG_GAP rows follow; the host's bands of whole
    images (``job_rows``) end on an image's last row."""
    assert walked_rows(5) == [0, 1, 2, 3, 4]
    assert walked_rows(11, 3, 1) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert walked_rows(8, 2, 1) == [0, 1, 3, 4, 6, 7]
    assert walked_rows(6, 2, 1) == [0, 1, 3, 4, 5]  # only one row after the second image
    assert walked_rows(4, 1, 2) == [0, 3]
    assert walked_rows(3, 1, 2) == [0, 1, 2]  # the gap would reach the last row
    layer = make_layer(c_in=4, c_out=4, size=(2, 3), partitions=2, seed=1)
    big, _ = stack_layer(layer, [layer.x] * 5)
    assert big.stack == (3, 2, 2) and big.h_out == 14 and big.h_in == 14
    assert job_rows(big, SQUARE, 14) == [(0, 14, 2, 1, 0, 14)]
    assert job_rows(big, replace(SQUARE, pix_depth=16), 5) == [
        (0, 5, 2, 1, 0, 5), (6, 11, 2, 1, 6, 11), (12, 14, 0, 0, 12, 14)]
    # one image does not fit: each image in bands of its own, as when it runs alone (input
    # rows within the image's own: the separators are padding)
    one = [(y0, y1) for y0, y1, *_ in job_rows(layer, replace(SQUARE, pix_depth=4), 1)]
    assert one == [(0, 1), (1, 2)]
    assert job_rows(big, replace(SQUARE, pix_depth=4), 1) == [
        (y0 + 3 * i, y1 + 3 * i, 0, 0, 3 * i, 3 * i + 2) for i in range(5) for y0, y1 in one]
    assert IMG_GAP_MAX == 7
    with pytest.raises(SluiceError, match="does not tile its 14 output rows"):
        job_rows(big.replace(stack=(5, 2, 2)), SQUARE, 14)


def test_gated_tiles_send_the_conditional_weights_last():
    """A gated tile's WGT comes in two parts: the base phase's words, then (after PAR and RES,
    and in tile 0's section after the activations) the rest; a dense job's in one piece."""
    layer = make_layer(c_in=6, c_out=10, size=(4, 4), partitions=2, gate_rate=0.3,
                       residual=True, seed=3)
    P = TALL  # 5 columns, 2 weight steps per beat
    first, second = P.wgt_parts(6, 3, 9, True)
    assert (first, second) == (14, 13)  # ceil(27 / 2); ceil(54 / 2) - 14
    assert P.wgt_parts(6, 3, 9, False) == (27, 0)
    (job,) = layer_jobs(layer, P)
    (dense_job,) = layer_jobs(layer, P, dense=True)
    n_act = -(-6 * 16 // P.stream_bytes)
    head = first + P.par_beats + 8  # WGT part 1, PAR, RES (16 pixels, 2 per beat)
    assert len(job.beats) == 2 * (head + second) + n_act
    # tile 0: part 1, PAR, RES, ACT, part 2; tile 1: part 1, PAR, RES, part 2
    whole = dense_job.beats  # (the same activations; dense weights are in another order)
    assert job.beats[head:head + n_act] == whole[27 + P.par_beats + 8:][:n_act]
    t0_w = job.beats[:first] + job.beats[head + n_act:head + n_act + second]
    t1 = job.beats[head + n_act + second:]
    t1_w = t1[:first] + t1[head:]
    for t, wb in ((0, t0_w), (1, t1_w)):
        for s in (0, 26, 27, 53):  # the base set's steps, then the other channels'
            i, tap = divmod(s, 9)
            for c in range(5):
                o = t * 5 + c
                lo = (o // 5) * 3  # GROUP_COUT 5: columns of tile t share base group t
                chan = (list(range(lo, lo + 3)) + [n for n in range(6) if not lo <= n < lo + 3])[i]
                byte = (wb[s // 2] >> 8 * ((s % 2) * 5 + c)) & 0xFF
                assert byte == int(layer.w[o, chan].reshape(-1)[tap]) & 0xFF, (t, s, c)


def test_first_conditional_phase_waits_for_its_weights():
    """Tile 0's conditional weights come after the activations: on a small map with many input
    channels its base phase ends before they are in, and the conditional phase waits for them
    (COND_WAIT, counted as LOAD_CYCLES), as the cycle model says, bit-exact."""
    layer = make_layer(c_in=32, c_out=8, size=(2, 2), partitions=8, gate_rate=0.4, seed=1)
    _, gate = run_reference(layer)
    model = predict(layer, gate, SQUARE)
    assert model["cond_wait"] > 0
    res, _ = check_run(layer, SQUARE, dense=False)
    assert res.counters["load_cycles"] == model["load_cycles"]


def test_weight_steps_and_parameters_are_packed_into_stream_beats():
    """A beat carries as many weight steps and 32-bit parameters as fit (powers of two for the
    steps); the host's tile sections have exactly that many beats, in the documented order."""
    assert (HwParams().wgt_pack, HwParams().par_pack, HwParams().par_beats) == (2, 4, 12)
    assert [CASES[n][0].wgt_pack for n in ("gated_group_3x3", "gated_first_k1",
                                           "gated_skip1", "slow_stream_k1_partial_tile")] \
        == [4, 2, 4, 1]  # 16 // 4; 16 // 5 = 3 -> 2; 16 // 3 = 5 -> 4; 4 // 4
    assert HwParams(rows=2, cols=2, wgt_depth=4).wgt_pack == 4  # at most one word per bank
    # each parameter starts a beat: 5 columns, 4 per beat -> 2 beats each
    assert SLOW.par_beats == 24 and TALL.par_col_beats == 2 and TALL.par_beats == 12
    assert HwParams(rows=2, cols=2).par_beats == 6  # 2 of 4 slots used in each beat
    layer = make_layer(c_in=6, c_out=5, size=(4, 4), dense=True, residual=True, seed=3)
    (job,) = layer_jobs(layer, TALL)
    n_act = -(-6 * 16 // TALL.stream_bytes)
    assert TALL.wgt_beats(6 * 9) == 27 and TALL.res_pack == 2 and SLOW.res_pack == 1
    assert len(job.beats) == 27 + 12 + 8 + n_act  # one tile: WGT, PAR, RES, then ACT
    # residual pixel p of column c: byte (p % 2) * 5 + c of RES beat p // 2
    r_beats = job.beats[39:47]
    for p in (0, 1, 15):
        for c in range(5):
            byte = (r_beats[p // 2] >> 8 * ((p % 2) * 5 + c)) & 0xFF
            assert byte == int(layer.residual[c].reshape(-1)[p]) & 0xFF, (p, c)
    w_beats, p_beats = job.beats[:27], job.beats[27:39]
    # step s = i * 9 + tap of column c: byte (s % 2) * 5 + c of beat s // 2
    for s in (0, 1, 17, 53):
        i, tap = divmod(s, 9)
        for c in range(5):
            byte = (w_beats[s // 2] >> 8 * ((s % 2) * 5 + c)) & 0xFF
            assert byte == int(layer.w[c, i].reshape(-1)[tap]) & 0xFF, (s, c)
    assert w_beats[0] >> 80 == 0  # two steps of 5 bytes: the top 6 bytes are zero
    # parameter k of column c: slot c % 4 of beat 2k + c // 4
    def val(k, c):
        return (p_beats[2 * k + c // 4] >> 32 * (c % 4)) & 0xFFFFFFFF
    assert [val(0, c) for c in range(5)] == [int(b) & 0xFFFFFFFF for b in layer.bias]
    assert [val(2, c) for c in range(5)] == [int(v) & 0xFFFFFFFF for v in layer.mult]
    assert all(b >> 32 == 0 for b in p_beats[1::2])  # column 4 alone in each second beat


def _job(desc, beats=()):
    writes = [(REG[k].addr, v) for k, v in desc.items()] + [(REG["CTRL"].addr, 1)]
    return Job(writes=writes, beats=list(beats), y0=0, h_out=1, descriptor=desc)


def test_invalid_descriptors_set_error_flags():
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), partitions=2, gate_rate=0.5, seed=3)
    good = layer_jobs(layer, SQUARE)[0]
    # the products saturate at 2**17 - 1 here (hw/products.py): the last three are products of
    # 2**17 and 2**17 + 8, whose low 17 bits alone would pass the checks
    assert max(SQUARE.act_depth, SQUARE.pix_depth, SQUARE.wgt_depth) <= 1 << 16
    bad = [
        ("ZERO_SIZE", dict(H_IN=0)),
        ("KERNEL", dict(KERNEL=4)),
        ("STRIDE", dict(STRIDE=3)),
        ("PADDING", dict(PAD_LEFT=4)),
        ("PARTITIONS", dict(PARTITIONS=3)),
        ("GEOMETRY", dict(H_OUT=9)),
        ("ACT_BUFFER", dict(H_IN=60, W_IN=60, H_OUT=58, W_OUT=1)),
        ("WGT_BUFFER", dict(C_IN=64, BASE_CIN=32)),
        ("PIX_BUFFER", dict(H_IN=12, W_IN=12, H_OUT=10, W_OUT=10)),
        ("SKIP_GROUP", dict(C_OUT=6, GROUP_COUT=3)),
        ("ACT_BUFFER", dict(H_IN=512, W_IN=256, H_OUT=1, W_OUT=1)),
        ("PIX_BUFFER", dict(H_IN=514, W_IN=258, H_OUT=512, W_OUT=256)),
        ("PARTITIONS", dict(C_IN=8, BASE_CIN=32770, PARTITIONS=4, GROUP_COUT=1)),
        # values whose low bits alone are valid or zero (the register file keeps those and a
        # "larger" bit: params.desc_ranges; SQUARE: act 1024, wgt 512, pix 64)
        ("KERNEL", dict(KERNEL=0x103)),
        ("STRIDE", dict(STRIDE=0x8001)),
        ("PADDING", dict(PAD_TOP=0x100)),
        ("PADDING", dict(PAD_LEFT=0x4002)),
        ("PIX_BUFFER", dict(H_OUT=128 + 3)),
        ("PIX_BUFFER", dict(W_OUT=0x8000)),
        ("ACT_BUFFER", dict(W_IN=2048 + 5)),
        ("ACT_BUFFER", dict(H_IN=0x800)),
        ("WGT_BUFFER", dict(C_IN=1024 + 4)),
        ("PARTITIONS", dict(BASE_CIN=1024 + 2)),
        ("PARTITIONS", dict(PARTITIONS=1024 + 2)),
        ("PARTITIONS", dict(FLAGS=good.descriptor["FLAGS"] | 1 << FLAG["BASE_FIRST"],
                            BASE_LO=1024)),
        ("GEOMETRY", dict(IMG_ROWS=1, IMG_GAP=IMG_GAP_MAX + 1)),
        ("PIX_BUFFER", dict(IMG_ROWS=128)),
    ]
    jobs = [_job({**good.descriptor, **change}, good.beats) for _, change in bad]
    jobs.append(good)  # the accelerator is not hung afterwards
    results = simulate_jobs(jobs, SQUARE, max_cycles=50_000)  # (a hang fails in a minute)
    for (flag, change), (words, status, error, counters) in zip(bad, results):
        assert error & (1 << ERR[flag]), (flag, hex(error))
        if flag != "ZERO_SIZE":  # (a large value whose low bits are 0 is not a zero)
            assert not error & (1 << ERR["ZERO_SIZE"]), (change, hex(error))
        assert status & 0b110 == 0b110 and not status & 1, (flag, status)  # done + error
        assert words == []
    words, status, error, _ = results[-1]
    assert error == 0 and status & 0b111 == 0b010
    assert len(words) > 0


@pytest.mark.parametrize("field_name,value", [("kernel", 4), ("stride", 3), ("padding", 4)])
def test_host_refuses_what_the_accelerator_cannot_run(field_name, value, tmp_path, capsys):
    # the same refusal as the ERROR flags above, before any simulation, board or cycle model
    from sluice.cli import main
    from sluice.model.layerfile import write_layer
    layer = make_layer(c_in=4, c_out=4, size=(9, 9), partitions=2, seed=3,
                       **{field_name: value})
    with pytest.raises(SluiceError, match=f"{field_name} {value} is not supported"):
        layer_jobs(layer, SQUARE)
    with pytest.raises(SluiceError, match=f"{field_name} {value}"):
        predict(layer, np.ones((4, layer.h_out, layer.w_out), np.uint8), SQUARE)
    path = tmp_path / "bad.layer.npz"
    write_layer(path, layer)
    for cmd in (["cycles", str(path)],
                ["run-layer", str(path), "-o", str(tmp_path / "r.npz"), "--sim", "icarus"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert f"{field_name} {value} is not supported by the accelerator" in err, cmd
    assert not (tmp_path / "r.npz").exists()


def test_start_right_after_the_last_descriptor_write_sees_it():
    """START written straight after the field that decides an error flag (through the serial
    products for the buffer and partition checks): the register file holds START back until the
    products are done and the registered flags have settled, so a bad last write is refused and
    a last write that repairs the descriptor is accepted."""
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), partitions=2, gate_rate=0.5, seed=3)
    good = layer_jobs(layer, SQUARE)[0]

    def last(desc, field):
        d = {k: v for k, v in desc.items() if k != field}
        d[field] = desc[field]
        return d

    big = {**good.descriptor, "H_IN": 60, "W_IN": 60, "H_OUT": 58, "W_OUT": 1}
    jobs = [_job(last(big, "W_IN")),                                           # ACT_BUFFER
            _job(last({**good.descriptor, "C_IN": 64, "BASE_CIN": 32}, "C_IN")),  # WGT_BUFFER
            _job(last({**good.descriptor, "PARTITIONS": 3}, "PARTITIONS")),
            _job(last({**good.descriptor, "C_IN": 64}, "C_IN")),              # PARTITIONS
            _job(last(good.descriptor, "C_IN"), good.beats)]                  # repaired: runs
    results = simulate_jobs(jobs, SQUARE, max_cycles=50_000)  # (a hang fails in a minute)
    want = ["ACT_BUFFER", "WGT_BUFFER", "PARTITIONS", "PARTITIONS"]
    for flag, (words, status, error, _) in zip(want, results):
        assert error & (1 << ERR[flag]), (flag, hex(error))
        assert status & 0b110 == 0b110 and words == []
    words, status, error, _ = results[-1]
    assert error == 0 and status & 0b111 == 0b010 and len(words) > 0


def test_id_register():
    from sluice.hw.simulate import axil_read
    from sluice.hw.top import Sluice
    from amaranth.sim import Simulator
    from sluice.hw.params import ID_GATING_BIT, ID_STACKING_BIT, VERSION
    for stacking in (True, False):
        dut = Sluice(replace(TALL, stacking=stacking))
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        got = []

        async def bench(ctx):
            got.append(await axil_read(ctx, dut, REG["ID"].addr))
            got.append(await axil_read(ctx, dut, 0xFC))

        sim.add_testbench(bench)
        sim.run()
        assert got == [(VERSION << 24) | (stacking << ID_STACKING_BIT) | (1 << ID_GATING_BIT)
                       | (3 << 8) | 5, 0]


def test_back_pressure_keeps_results_exact():
    """Input beats with gaps and an output that is not always ready: same results, more cycles."""
    params, kw = CASES["gated_group_3x3"]
    layer = make_layer(**kw, seed=7, residual=True)
    res = run_layer_amaranth(layer, params, throttle_seed=1)
    y, gate = run_reference(layer)
    assert np.array_equal(res.y, y) and np.array_equal(res.gate, gate)
    _, gate_ref = run_reference(layer)
    assert res.cycles > predict(layer, gate_ref, params)["cycles"]


def test_a_nearly_stopped_output_fills_the_fifo_without_losing_words():
    """The output stream ready one cycle in 24: the drain must stop on the FIFO's room (the
    words on their way are a counter beside the pipeline) and lose nothing, and resume."""
    from sluice.hw.top import out_fifo_depth

    params, kw = CASES["gated_group_3x3"]
    layer = make_layer(**{**kw, "size": (6, 6)}, seed=11, residual=True)
    res = run_layer_amaranth(layer, params, throttle_seed=3, ready_prob=1 / 24)
    y, gate = run_reference(layer)
    assert np.array_equal(res.y, y) and np.array_equal(res.gate, gate)
    words = layer.h_out * layer.w_out * -(-layer.c_out // params.cols)  # rows x tiles, at most
    assert words > 2 * out_fifo_depth(params)  # more than the FIFO holds, at 1/24 of the rate
    assert res.cycles > 24 * words // 2


def test_ctrl_write_waits_for_the_descriptor_products_within_the_documented_bound():
    """The register file holds a CTRL write until the serial products of the descriptor and the
    error flags have settled: measured with every multiplier operand at its widest (the worst
    case), the wait is long (the products really run serially) and within CTRL_WAIT_MAX, the
    bound the register map states; with small fields it is much shorter (the multiplier skips
    the operands' leading zeros)."""
    from amaranth.sim import Simulator

    from sluice.hw.params import CTRL_WAIT_MAX, DESCRIPTOR
    from sluice.hw.simulate import axil_write
    from sluice.hw.top import Sluice

    dut = Sluice(SQUARE)
    waits = []

    async def bench(ctx):
        for value in (0xFFFF, 0x0003):
            for name, _ in DESCRIPTOR:
                await axil_write(ctx, dut, REG[name].addr, value)
            # not START (0): only the handshake is measured
            waits.append(await axil_write(ctx, dut, REG["CTRL"].addr, 0))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # (axil_write returns two cycles after the write was accepted)
    assert 100 < waits[0] + 2 <= CTRL_WAIT_MAX, waits
    assert waits[1] < waits[0] / 2, waits


@pytest.mark.parametrize("base_lo", [2, 3])
def test_a_first_base_range_inside_the_channels(monkeypatch, base_lo):
    """BASE_FIRST with BASE_LO > 1 (the host always sends 0; the descriptor takes any): the
    layer's input channels rotated by BASE_LO so that its base set [0, BASE_CIN) lies at
    [BASE_LO, BASE_LO + BASE_CIN), each column's weights in that job's channel sequence
    (`channel_order`), give the unrotated layer's outputs and gate bits, bit for bit, and the
    cycle model's counts from the same descriptors. The conditional channel walk steps over
    the base range in the middle (the skip-ahead flag's g_lo - 1 / g_lo - 2 from BASE_LO)."""
    import sluice.sim.host as host
    from sluice.hw.cycle_model import job_cycles

    params = SQUARE
    layer = make_layer(c_in=6, c_out=6, size=(5, 5), partitions=3, base="first",
                       gate_rate=0.5, seed=base_lo)
    assert layer.c_in // layer.partitions == 2 and layer.c_in > base_lo + 2
    rot = replace(layer, x=np.roll(layer.x, base_lo, axis=0), w=np.roll(layer.w, base_lo, axis=1))
    order = host.channel_order
    monkeypatch.setattr(host, "channel_order",
                        lambda c_in, lo, base_cin, gated: order(c_in, lo + base_lo, base_cin,
                                                                gated))
    jobs = host.layer_jobs(rot, params)
    for job in jobs:
        job.descriptor["BASE_LO"] = base_lo
        job.writes[:] = [(a, base_lo if a == REG["BASE_LO"].addr else v) for a, v in job.writes]
    y, gate = new_outputs(rot)
    cycles = 0
    for job, (words, _, error, counters) in zip(jobs, simulate_jobs(jobs, params)):
        assert error == 0
        decode_words(rot, job, words, y, gate, params)
        cycles += counters["cycles"]
    ref_y, ref_gate = run_reference(layer)
    assert np.array_equal(y, ref_y) and np.array_equal(gate, ref_gate)
    model = sum(job_cycles(rot, job.descriptor, ref_gate[:, job.y0:job.y0 + job.h_out], params,
                           dense=False)["cycles"] for job in jobs)
    assert model == cycles


def test_a_column_order_runs_bit_exact_and_moves_the_cycles():
    """A host column order (``Layer.column_order``, within base groups; ``sluice
    column-order``): the jobs put the channels on the columns in that order, the results come
    back in the layer's order, bit-exact, with the cycle model's cycles; a dense run ignores it.
    Of the orders tried, the one the model puts fastest is faster than as exported, on the RTL."""
    import itertools

    from sluice.model.layerfile import check_column_order

    layer = make_layer(c_in=8, c_out=8, size=(5, 6), partitions=2, gate_rate=0.25, seed=15)
    _, gate = run_reference(layer)
    base = predict(layer, gate, SQUARE)["cycles"]
    best, best_cycles = None, base
    for a, b in itertools.product(itertools.permutations(range(4)), repeat=2):
        order = np.array(list(a) + [4 + c for c in b])
        cycles = predict(layer.replace(column_order=order), gate, SQUARE)["cycles"]
        if cycles < best_cycles:
            best, best_cycles = order, cycles
    assert best is not None and best_cycles < base
    ordered = layer.replace(column_order=check_column_order(layer, best))
    (job,) = layer_jobs(ordered, SQUARE)
    assert job.channels == list(best)
    assert layer_jobs(ordered, SQUARE, dense=True)[0].channels == list(range(8))
    res, _ = check_run(ordered, SQUARE, dense=False)  # bit-exact, cycles = the model's
    assert res.cycles == best_cycles
    # base groups padded to whole skip groups keep their order inside each group
    odd = make_layer(c_in=4, c_out=6, size=(4, 4), partitions=2, gate_rate=0.4, seed=9)
    odd = odd.replace(column_order=check_column_order(odd, [2, 0, 1, 5, 3, 4]))
    (job,) = layer_jobs(odd, SQUARE)
    assert job.channels == [2, 0, 1, -1, 5, 3, 4, -1]
    check_run(odd, SQUARE, dense=False)
