"""What the efficiency levers would give on an exported network: a cycle-model study.

``python -m sluice.hw.levers EXPORT_DIR [--images 1 8] [--rows R --cols C --skip-cols S]
[--slices 4]``

For each image count N it runs the network's layers on N images of the export's data set
(``manifest.json``'s sample: same data set and split, images index, index + 1, ...) stacked
along the height of every feature map, with zero rows between the images (the throughput
mode of :mod:`sluice.sim.batch`, which ``sluice run-model --images N`` runs on the RTL: bands
of whole images whose jobs skip the output rows between the images, IMG_ROWS and IMG_GAP),
and reports for the whole network:

- ``lockstep``: the cycle model (exact against the RTL) on the stacked layers, i.e. what the
  current hardware would do in a throughput mode that stacks N images (with its row slices,
  ``HwParams.row_slices``: a tile's last conditional pass split over two row slices by input
  channels or on 3 x 3 layers over three by kernel rows). The rows between the images are
  not computed (since session 41; before, they were, in both runs); the MAC reduction counts
  the images' own outputs;
- ``independent``: an estimate for hardware whose skip groups advance through their own
  active lists across channel tiles (each group with its own weight read port), not built:
  a layer's conditional passes become the busiest group's sum over tiles instead of the sum
  over tiles of the busiest group, everything else unchanged (one whole-layer band);
- ``paired``: an estimate for hardware that runs the conditional passes of two consecutive
  channel tiles together, each on half of the rows (a second weight feed entering half-way
  down the columns), not built: :func:`paired_passes`, everything else unchanged;
- ``shared``: an estimate for hardware whose skip groups take whole conditional passes of
  each other's lists within a tile (a group done with its own list runs the next ``rows``
  pixels of a busier group's with that group's weights), not built: :func:`shared_passes`,
  everything else unchanged;
- ``decoupled``: an estimate for hardware whose skip groups each run their own tile sequence
  (base phase, then the group's own conditional passes, then the next tile), sharing only the
  loader and its two weight banks (not built): :func:`decoupled_passes`, a group entering
  tile ``t`` once the loader has filled tile ``t``'s bank, which it starts once every group
  has left tile ``t - 2``; the lockstep figure counted with the same loader, everything else
  unchanged (one whole-layer band). Each skip group already has its own activation feeds,
  row-set slots and weight columns; it would need its own phase and tile state, bank select,
  parameters and drain tile index;
- ``sliced``: an estimate for hardware that splits a tile's last conditional pass over up
  to ``s`` row slices by input channels (``--slices``, default 4: a weight feed per slice,
  the slices' sums added at the drain) where every skip group has at most ``rows / s``
  pixels left for it, the pass then taking ``ceil(n / s)`` of its ``n`` conditional channels
  (the RTL builds two such slices since session 40, and on 3 x 3 layers three kernel-row
  slices, a third of a pass; 1 x 1 layers are never sliced), not built beyond two:
  :func:`sliced_passes`, counted against the RTL's own last pass.

``--shared-post`` also gives the cycles with one post-processing unit shared by all columns
(``HwParams.post_cols = cols``; the largest fixed block of logic, a third of a 4 x 4 build:
``boards/README.md``): the drain then takes ``cols`` cycles per row instead of one.

Efficiency = speedup over dense mode / element-level MAC reduction, as in ``sluice cycles``.
With N = 1 and the lockstep figure this is ``sluice cycles EXPORT_DIR`` exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from sluice.errors import SluiceError
from sluice.hw.cycle_model import (active_items, host_gate, last_pass_items, pass_steps,
                                   pass_time, predict, sliced_last)
from sluice.hw.params import DEFAULT, HwParams
from sluice.model.intnet import IntNet
from sluice.model.reference import run_reference, work_figures
from sluice.sim.batch import bind_batch, split
from sluice.sim.host import computed_rows


def network_tensors(net: IntNet, x_int8: np.ndarray) -> tuple[dict, dict]:
    """Every layer's output (by tensor name) and gate bits (by layer name) for one image,
    from the integer network's own forward pass."""
    record = {}
    net.forward(x_int8, record=record)
    t = {"input": np.asarray(x_int8, np.int8), **{k: y for k, (y, _) in record.items()}}
    return t, {k: g for k, (_, g) in record.items()}


def _tile_items(gate: np.ndarray, params: HwParams) -> list[list[int]]:
    """Per channel tile of a whole-layer band: each skip group's active pixels
    (:func:`sluice.hw.cycle_model.active_items`; groups past the last channel count 0)."""
    return [active_items(gate, t, params) for t in range(-(-gate.shape[0] // params.cols))]


def layer_tiles(layer, gate: np.ndarray, params: HwParams) -> list[list[int]]:
    """:func:`_tile_items` of a layer's gate bits with the channels on the columns as the host
    lays them out (``sim.host.job_channels``: the host column order when the layer has one,
    padding columns of odd base groups off), so that the estimates count the skip groups the
    RTL runs, as the cycle model does."""
    from sluice.sim.host import job_channels

    return _tile_items(host_gate(gate, job_channels(layer, params)[0]), params)


def group_passes(gate: np.ndarray, params: HwParams, kernel: int = 1) -> tuple[float, float]:
    """(lockstep, independent) conditional passes of a whole-layer band, in full passes: per
    channel tile and skip group, ``ceil(active pixels / rows)``, a last pass the hardware
    slices counted as its share of steps (``cycle_model.pass_time``; ``kernel`` 1: none);
    lockstep sums the tiles' busiest group, independent takes the busiest group's sum over
    the tiles."""
    return _group_passes(_tile_items(gate, params), params, kernel)


def _group_passes(tiles, params, kernel):
    passes = np.array([[pass_time(n, kernel, params) for n in items] for items in tiles])
    return passes.max(axis=1).sum(), passes.sum(axis=0).max()


def decoupled_passes(tiles, params: HwParams, kernel: int, base: float, load: float,
                     banks: int = 2) -> tuple[float, float]:
    """(lockstep, decoupled) time of a whole-layer band in conditional passes, for the
    ``decoupled`` estimate; ``tiles``: each tile's skip groups' active pixels
    (:func:`layer_tiles`), ``base``: a tile's base phase and ``load``: the loader's time for
    a tile's bank, both in conditional passes. The loader fills tile ``t``'s bank once it has
    filled tile ``t - 1``'s and every group has left tile ``t - banks``; lockstep, every group
    enters a tile together once all have left the one before and its bank is full; decoupled,
    a group enters tile ``t`` once it has left tile ``t - 1`` and the bank is full. A tile
    takes ``base`` plus the group's own passes (``cycle_model.pass_time``)."""
    P = [[pass_time(n, kernel, params) for n in items] for items in tiles]

    def run(decoupled: bool) -> float:
        fin, loaded = [], 0.0
        for t, own in enumerate(P):
            loaded = max(loaded, max(fin[t - banks]) if t >= banks else 0.0) + load
            prev = fin[t - 1] if t else [0.0] * len(own)
            start = [max(f if decoupled else max(prev), loaded) for f in prev]
            fin.append([st + base + n for st, n in zip(start, own)])
        return max(fin[-1])

    return run(False), run(True)


def paired_passes(gate: np.ndarray, params: HwParams, kernel: int = 1) -> tuple[float, float]:
    """(lockstep, paired) conditional passes of a whole-layer band: lockstep as
    :func:`group_passes`; paired, consecutive channel tiles taken two at a time (greedily,
    from the first) where sharing is shorter: ``ceil(max(busiest) / (rows // 2))`` full passes
    for the pair instead of each tile's own (``cycle_model.pass_time``)."""
    return _paired_passes(_tile_items(gate, params), params, kernel)


def _paired_passes(tiles, params, kernel):
    R = params.rows
    busiest = [max(items) for items in tiles]
    own = [pass_time(b, kernel, params) for b in busiest]
    paired, t = 0, 0
    while t < len(busiest):
        if t + 1 < len(busiest) and R >= 2:
            both = -(-max(busiest[t], busiest[t + 1]) // (R // 2))
            if both < own[t] + own[t + 1]:
                paired += both
                t += 2
                continue
        paired += own[t]
        t += 1
    return sum(own), paired


def shared_passes(gate: np.ndarray, params: HwParams, kernel: int = 1) -> tuple[float, float]:
    """(lockstep, shared) conditional passes of a whole-layer band: lockstep as
    :func:`group_passes`; shared, a tile's skip groups taking whole passes of each other's
    lists (a group whose own list is done runs the next ``rows`` pixels of a busier group's
    list with that group's weights and gate bits, its results written as that group's; not
    built): per tile ``ceil(sum of ceil(n / rows) over the groups / groups)`` full passes
    where that is shorter than the busiest group's own (``cycle_model.pass_time``, with the
    hardware's row slices)."""
    return _shared_passes(_tile_items(gate, params), params, kernel)


def _shared_passes(tiles, params, kernel):
    lock = shared = 0
    for items in tiles:
        own = max(pass_time(n, kernel, params) for n in items)
        chunks = sum(-(-n // params.rows) for n in items)
        lock += own
        shared += min(own, -(-chunks // params.groups))
    return lock, shared


def sliced_passes(gate: np.ndarray, params: HwParams, max_slices: int = 2) -> list[int]:
    """Channel slices of each channel tile's last conditional pass (1: not sliced), for a
    whole-layer band: the last pass runs on ``s`` row slices, each over ``1/s`` of the
    conditional steps (a weight feed per slice, the slices' sums added at the drain; the RTL
    builds two, ``HwParams.row_slices``), where every skip group has at most ``rows / s``
    pixels left for it; ``s`` a power of two up to ``max_slices`` and ``rows``. The earlier
    passes are full for the busiest group."""
    return [s for s, _ in _slices(_tile_items(gate, params), params, max_slices)]


def _slices(tiles, params, max_slices):
    """(slices, busiest group's pixels) per channel tile with a conditional pass."""
    R = params.rows
    out = []
    for items in tiles:
        busiest = max(items)
        if busiest == 0:
            continue
        last = last_pass_items(busiest, R)  # the busiest group's pixels in its last pass
        s = 1
        while 2 * s <= min(max_slices, R) and last <= R // (2 * s):
            s *= 2
        out.append((s, busiest))
    return out


def study(net: IntNet, runs, params: HwParams = DEFAULT, max_slices: int = 4) -> dict:
    """Whole-network figures for images stacked; ``runs``: :func:`network_tensors` of each
    image (computed once, shared by every image count and array); ``max_slices``: the channel
    slices of the ``sliced`` estimate (:func:`sliced_passes`; 2: as many as the RTL's). The
    ``independent``, ``paired`` and ``shared`` estimates count a sliced pass as its share of a
    full one, as the RTL runs it (each group's own last pass
    per tile in the independent one). ``alone``, ``dense_alone``: the cycles of the same
    images each run alone (the cycle model), what stacking them is compared with."""
    per_image = [t for t, _ in runs]
    n = len(runs)
    tot = {"dense": 0, "lockstep": 0, "independent": 0, "paired": 0, "shared": 0, "sliced": 0,
           "decoupled": 0, "macs_dense": 0, "macs_theory": 0, "alone": 0, "dense_alone": 0}
    for e, layer in net.layers:
        big, rows = bind_batch(net, e, layer, per_image)
        y, gate = run_reference(big, check=False)
        # the stacked layer's real rows are exactly each image's own outputs and gates
        for i, (yi, gi) in enumerate(zip(split(y, rows), split(gate, rows))):
            if not (np.array_equal(yi, per_image[i][e["name"]])
                    and np.array_equal(gi, runs[i][1][e["name"]])):
                raise RuntimeError(f"layer {e['name']}: stacked outputs or gates differ from "
                                   f"image {i}'s own")
        # the MACs of the real outputs: each image's own, counted as SPEC section 3
        for _, g in runs:
            fig = work_figures(layer, g[e["name"]])
            tot["macs_dense"] += fig["macs_dense"]
            tot["macs_theory"] += fig["macs_theory"]
        tot["dense"] += predict(big, None, params, dense=True)["cycles"]
        gated = predict(big, gate, params, dense=not layer.gated)["cycles"]
        # the same images each run alone (the throughput the stacking is compared with)
        for i in range(n):
            one = net.bind(e, layer, per_image[i])
            tot["alone"] += predict(one, runs[i][1][e["name"]], params,
                                    dense=not layer.gated)["cycles"]
            tot["dense_alone"] += predict(one, None, params, dense=True)["cycles"]
        kept = computed_rows(big, params)  # (not the rows between the images)
        gate = gate[:, kept]
        tot["lockstep"] += gated
        tot["independent"] += gated
        tot["paired"] += gated
        tot["shared"] += gated
        tot["sliced"] += gated
        tot["decoupled"] += gated
        if layer.gated:
            tiles = layer_tiles(big, gate, params)  # (once per layer: the estimates share it)
            lock, indep = _group_passes(tiles, params, layer.kernel)
            kk = layer.kernel ** 2
            base_cin = layer.c_in // layer.partitions
            n_cond = layer.c_in - base_cin
            cond_steps = n_cond * kk
            tot["independent"] -= (lock - indep) * cond_steps
            tot["paired"] -= (lock - _paired_passes(tiles, params, layer.kernel)[1]) * cond_steps
            tot["shared"] -= (lock - _shared_passes(tiles, params, layer.kernel)[1]) * cond_steps
            if cond_steps:
                base = -(-gate.shape[1] * big.w_out // params.rows) * base_cin * kk / cond_steps
                load = (params.wgt_beats(layer.c_in * kk)
                        + params.par_beats) / cond_steps
                lock_t, dec_t = decoupled_passes(tiles, params, layer.kernel, base, load)
                tot["decoupled"] -= (lock_t - dec_t) * cond_steps
                # the channel slices, against the RTL's last pass (two channel slices, or
                # three kernel-row ones)
                for s, busiest in _slices(tiles, params, max_slices):
                    rtl = pass_steps(layer.kernel, sliced_last(busiest, layer.kernel, params),
                                     n_cond)
                    tot["sliced"] -= max(0, rtl - -(-n_cond // s) * kk)
    red = tot["macs_dense"] / tot["macs_theory"]
    out = {"images": n, "reduction": red, **tot}
    for k in ("lockstep", "independent", "paired", "shared", "sliced", "decoupled"):
        out[f"speedup_{k}"] = tot["dense"] / tot[k]
        out[f"efficiency_{k}"] = out[f"speedup_{k}"] / red
    out["efficiency_alone"] = tot["dense_alone"] / tot["alone"] / red
    return out


def channel_order(rate: np.ndarray, groups: int, skip_cols: int, across: bool) -> np.ndarray:
    """Output channels by falling gate rate ``rate``: within each of ``groups`` base groups
    (contiguous, as channel grouping lays them out), or, with ``across``, the groups' skip-group
    pairs (consecutive after the within-group sort) sorted again over the whole layer."""
    gc = len(rate) // groups
    order = []
    for g in range(groups):
        idx = np.arange(g * gc, (g + 1) * gc)
        order += list(idx[np.argsort(-rate[idx], kind="stable")])
    order = np.array(order)
    if across:
        tiles = order.reshape(-1, skip_cols)
        order = tiles[np.argsort(-rate[tiles].sum(axis=1), kind="stable")].reshape(-1)
    return order


def pass_cost_table(kernel: int, params: HwParams, pixels: int) -> np.ndarray:
    """:func:`cycle_model.pass_time` of a skip group with 0 .. ``pixels`` active pixels, in
    sixths of a pass: integers (a sliced last pass takes a half or a third), so that the
    search's ties compare exactly."""
    sixths = [pass_time(n, kernel, params) * 6 for n in range(pixels + 1)]
    table = np.array([round(v) for v in sixths])
    assert np.allclose(table, sixths), "a pass share that is not a whole number of sixths"
    return table


def searched_order(gates, layer, params: HwParams = DEFAULT, iters: int = 1000,
                   seed: int = 0) -> np.ndarray:
    """Output channels put on the columns by a local search within base groups: random swaps
    of two channels of one base group, kept when they do not lengthen the conditional passes
    the cycle model charges (each tile's busiest skip group, ``pass_time``) summed over the
    calibration images' gate bits ``gates`` (``C_out, H, W`` each) of the gated ``layer``. An
    order fixed offline that, unlike :func:`channel_order`'s sort by gate rate, sees which
    channels fire together (skip groups) and how the tile's groups balance (lockstep). The
    columns are counted as the host lays them out (``sim.host.job_channels``: base groups of
    an odd size padded to whole skip groups)."""
    import random

    from sluice.sim.host import job_channels

    rnd = random.Random(seed)
    act = np.stack([np.asarray(g).reshape(len(g), -1) for g in gates]).astype(bool)
    n_img, c_out, pixels = act.shape
    act = np.concatenate([act, np.zeros((n_img, 1, pixels), bool)], axis=1)  # [c_out]: padding
    C, G = params.cols, params.skip_cols
    groups = layer.partitions if layer.base == "group" else 1
    gc = c_out // groups
    kernel = layer.kernel
    chans, _ = job_channels(layer.replace(column_order=None), params)
    column = {c: n for n, c in enumerate(chans) if c >= 0}
    slot = [column[i] for i in range(c_out)]  # column of order[i]
    n_tiles = -(-len(chans) // C)  # the last tile filled up with padding columns
    layout = np.full(n_tiles * C, c_out)
    table = pass_cost_table(kernel, params, pixels)

    def tile_cost(t):
        a = act[:, layout[t * C:(t + 1) * C]]
        counts = a.reshape(n_img, C // G, G, pixels).any(axis=2).sum(axis=2)
        return int(table[counts].max(axis=1).sum())

    order = list(range(c_out))
    layout[slot] = order
    cost = [tile_cost(t) for t in range(n_tiles)]
    for _ in range(iters if gc > 1 else 0):
        g = rnd.randrange(groups)
        i, j = rnd.sample(range(g * gc, (g + 1) * gc), 2)
        ti, tj = slot[i] // C, slot[j] // C
        order[i], order[j] = order[j], order[i]
        layout[slot[i]], layout[slot[j]] = order[i], order[j]
        new = {t: tile_cost(t) for t in {ti, tj}}
        if sum(new.values()) <= sum(cost[t] for t in new):
            for t, v in new.items():
                cost[t] = v
        else:
            order[i], order[j] = order[j], order[i]
            layout[slot[i]], layout[slot[j]] = order[i], order[j]
    return np.array(order)


ORDERS = ("as exported", "calibrated, within base groups", "calibrated, across base groups",
          "calibrated search, within base groups", "own gates, within base groups",
          "own gates, across base groups")


def order_study(net: IntNet, runs, cal_runs, params: HwParams = DEFAULT,
                search_iters: int = 1000) -> dict:
    """Gated cycles (cycle model, each image alone) with the output channels of every gated
    layer put on the columns in another order, for :data:`ORDERS`: as exported; by the
    channels' gate rates over ``cal_runs`` (:func:`network_tensors` of calibration images), an
    order fixed offline; by a search over the calibration images' gate bits
    (:func:`searched_order`, ``search_iters`` swaps); by each image's own gate counts (an upper
    bound for any order sorted by rate). Within
    base groups a channel keeps its group's columns, so the current RTL runs it as it is (the
    host's column order); across base groups each column would need its own base set (not
    built). Needs base groups that are whole skip groups (no padding columns)."""
    tot = {"dense": 0, **{k: 0 for k in ORDERS}}
    searched = {}
    for e, layer in net.layers:
        name = e["name"]
        layer = layer.replace(column_order=None)  # (the orders here permute the gate bits)
        for t, g in runs:
            dense = predict(layer, None, params, dense=True)["cycles"]
            tot["dense"] += dense
            if not layer.gated:
                for k in ORDERS:
                    tot[k] += dense
                continue
            gate = g[name]
            groups = layer.partitions if layer.base == "group" else 1
            if (layer.c_out // groups) % params.skip_cols:
                raise SluiceError(f"layer {name}: base groups of {layer.c_out // groups} "
                                  f"channels are not whole skip groups of {params.skip_cols}")
            cal = np.mean([c[name].reshape(layer.c_out, -1).mean(axis=1) for _, c in cal_runs],
                          axis=0)
            own = gate.reshape(layer.c_out, -1).mean(axis=1)
            if name not in searched:  # (one order per layer, for every test image)
                searched[name] = searched_order([c[name] for _, c in cal_runs], layer,
                                                params, search_iters)
            orders = [np.arange(layer.c_out)] + [
                channel_order(r, groups, params.skip_cols, across)
                for r in (cal, own) for across in (False, True)]
            orders.insert(3, searched[name])
            for k, order in zip(ORDERS, orders):
                tot[k] += predict(layer, gate[order], params)["cycles"]
    return tot


def sample_runs(net: IntNet, n: int, data_dir=None) -> list:
    """:func:`network_tensors` of the export's sample image and the ``n - 1`` after it."""
    return [network_tensors(net, x) for x in sample_images(net, n, data_dir)]


def sample_images(net: IntNet, n: int, data_dir=None, labels=False):
    """The export's sample image and the ``n - 1`` after it, quantised (with ``labels``:
    ``(images, labels)``)."""
    sample = net.manifest.get("sample") or {}
    for key in ("dataset", "index"):
        if key not in sample:
            raise SluiceError(f"{net.dir / 'manifest.json'}: field 'sample.{key}' missing")
    return dataset_images(net, sample.get("split", "test"), int(sample["index"]), n, data_dir,
                          labels=labels)


def dataset_images(net: IntNet, split: str, i0: int, n: int, data_dir=None, what="--images",
                   labels=False):
    """Images ``i0 .. i0 + n - 1`` of the export's data set (``split``), quantised; ``what``
    names the option that asked for them in an error; with ``labels``: ``(images, labels)``."""
    from sluice.model.data import load_dataset
    if n == 0:
        return ([], []) if labels else []
    name = (net.manifest.get("sample") or {}).get("dataset")
    if name is None:
        raise SluiceError(f"{net.dir / 'manifest.json'}: field 'sample.dataset' missing")
    ds = load_dataset(name, split, data_dir)
    if i0 + n > len(ds.images):
        raise SluiceError(f"{what}: {n} images from index {i0} run past the "
                          f"{len(ds.images)} of {name} {split}")
    xs = [net.quantise_input(np.asarray(ds.images[i])) for i in range(i0, i0 + n)]
    return (xs, [int(ds.labels[i]) for i in range(i0, i0 + n)]) if labels else xs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sluice.hw.levers", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("--images", type=int, nargs="+", default=[1, 8],
                    help="image counts to stack (default 1 8)")
    ap.add_argument("--rows", type=int, default=DEFAULT.rows)
    ap.add_argument("--cols", type=int, default=DEFAULT.cols)
    ap.add_argument("--skip-cols", type=int, default=DEFAULT.skip_cols)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--shared-post", action="store_true",
                    help="also estimate one post-processing unit shared by the columns")
    ap.add_argument("--channel-order", type=int, default=0, metavar="N",
                    help="also: the gated cycles with the output channels ordered by their "
                         "gate rates over the first N training images (each test image alone)")
    ap.add_argument("--search-iters", type=int, default=1000, metavar="N",
                    help="with --channel-order: swaps tried by the calibrated search "
                         "(searched_order; default 1000)")
    ap.add_argument("--slices", type=int, default=4,
                    help="row slices of the last conditional pass in the channel-slices "
                         "estimate, at most (a power of two; default 4; 2: as built)")
    ap.add_argument("--row-slices", type=int, default=DEFAULT.row_slices,
                    help="the hardware's HwParams.row_slices (1, 2 or 3; default "
                         f"{DEFAULT.row_slices})")
    ap.add_argument("--json", action="store_true", help="one JSON object per image count")
    args = ap.parse_args(argv)
    try:
        if min(args.images) < 1:
            raise SluiceError(f"--images: counts must be at least 1, got {args.images}")
        if args.slices < 1 or args.slices & (args.slices - 1):
            raise SluiceError(f"--slices: {args.slices} must be a power of two")
        if args.search_iters < 0:
            raise SluiceError(f"--search-iters: {args.search_iters} must be at least 0")
        if args.channel_order < 0:
            raise SluiceError(f"--channel-order: {args.channel_order} must be at least 0")
        params = HwParams(rows=args.rows, cols=args.cols, skip_cols=args.skip_cols,
                          row_slices=args.row_slices)
        net = IntNet(args.export_dir)
        runs = sample_runs(net, max(args.images), args.data_dir)
        cal_runs = [network_tensors(net, x) for x in
                    dataset_images(net, "train", 0, args.channel_order, args.data_dir,
                                   "--channel-order")]
    except SluiceError as e:
        print(f"levers: error: {e}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{Path(args.export_dir)}: {params.rows}x{params.cols}, skip_cols "
              f"{params.skip_cols}")
        print("| images | dense cycles | lockstep cycles | efficiency | independent groups "
              f"(estimate) | efficiency | paired tiles (estimate) | efficiency | shared passes "
              f"(estimate) | efficiency | {args.slices} channel slices (estimate) | efficiency "
              "| decoupled groups (estimate) | efficiency | MAC reduction | each image alone: "
              "gated cycles | efficiency |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.images:
        r = study(net, runs[:n], params, args.slices)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"| {n} | {r['dense']:,} | {r['lockstep']:,} | "
                  f"{r['efficiency_lockstep']:.3f} | {round(r['independent']):,} | "
                  f"{r['efficiency_independent']:.3f} | {round(r['paired']):,} | "
                  f"{r['efficiency_paired']:.3f} | {round(r['shared']):,} | "
                  f"{r['efficiency_shared']:.3f} | {round(r['sliced']):,} | "
                  f"{r['efficiency_sliced']:.3f} | {round(r['decoupled']):,} | "
                  f"{r['efficiency_decoupled']:.3f} | {r['reduction']:.3f} | "
                  f"{r['alone']:,} | {r['efficiency_alone']:.3f} |", flush=True)
        if args.shared_post:
            s = study(net, runs[:n], dataclasses.replace(params, post_cols=params.cols))
            if args.json:
                print(json.dumps(dict(s, shared_post=True)))
            else:
                print(f"  one post-processing unit for all columns (--post-cols {params.cols}): "
                      f"dense {s['dense']:,} (+{s['dense'] / r['dense'] - 1:.1%}), gated "
                      f"{s['lockstep']:,} "
                      f"(+{s['lockstep'] / r['lockstep'] - 1:.1%}), efficiency "
                      f"{s['efficiency_lockstep']:.3f}", flush=True)
    if args.channel_order:
        try:
            o = order_study(net, runs, cal_runs, params, args.search_iters)
        except SluiceError as e:
            print(f"levers: error: {e}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(dict(o, channel_order=args.channel_order)))
        else:
            print(f"\nchannel order ({len(runs)} test images, each alone; calibration: "
                  f"{args.channel_order} training images)\n")
            print("| order | gated cycles | speedup |\n|---|---|---|")
            for k in ORDERS:
                print(f"| {k} | {o[k]:,} | {o['dense'] / o[k]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
