"""Host sequence: a layer -> register writes and stream beats; result words -> ``y``, ``gate``.

Pure Python/NumPy, no simulator specifics: the Amaranth testbenches, the cocotb testbenches and
the board host all drive the accelerator with the transactions built here. Formats and addresses
come from ``sluice.hw.params`` (see ``hw/REGMAP.md``).

A layer whose activations or output pixels do not fit the on-chip buffers is split into bands of
output rows; each band is one *job* (its own descriptor, with its own top padding and input rows),
run one after the other. Base groups that are not a whole number of skip groups are padded with
unused channels (``job_channels``). A layer of images stacked along the height
(``Layer.stack``, ``sim.batch``) runs in bands of whole images where one image fits, each job
skipping the rows between its images (descriptor IMG_ROWS, IMG_GAP; ``job_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sluice.errors import SluiceError
from sluice.hw.params import (DEFAULT, FLAG_FIELDS, IMG_GAP_MAX, KERNELS, MAX_PADDING,
                              PARAM_ORDER, REG, STRIDES, HwParams, result_fields, walked_rows)

_FLAG = {name: lsb for name, lsb, _, _ in FLAG_FIELDS}


@dataclass
class Job:
    """One accelerator job: descriptor writes, input beats, and where its results go."""

    writes: list  # [(byte address, value)], descriptor registers then CTRL.START
    beats: list  # input stream TDATA values (ints)
    y0: int  # first output row of the band
    h_out: int
    descriptor: dict = field(default_factory=dict)
    channels: list = field(default_factory=list)  # layer channel of each job channel (-1: pad)

    @property
    def rows(self) -> list[int]:
        """The band's output rows the accelerator computes (relative to ``y0``): all, or
        without the rows between stacked images (``hw.params.walked_rows``)."""
        d = self.descriptor
        return walked_rows(self.h_out, d.get("IMG_ROWS", 0), d.get("IMG_GAP", 0))


def _words_from_bytes(raw: np.ndarray, nbytes: int) -> list:
    raw = np.asarray(raw, dtype=np.uint8).ravel()
    pad = (-len(raw)) % nbytes
    raw = np.concatenate([raw, np.zeros(pad, np.uint8)]).reshape(-1, nbytes)
    return [int.from_bytes(row.tobytes(), "little") for row in raw]


def _u32(v) -> int:
    return int(v) & 0xFFFFFFFF


def band_rows(layer, params: HwParams) -> int:
    """Most output rows per job that fit the activation and pixel buffers."""
    k, s, p = layer.kernel, layer.stride, layer.padding
    if layer.c_in * k * k > params.wgt_depth:
        raise SluiceError(f"{layer.name}: C_in*K*K = {layer.c_in * k * k} exceeds the weight "
                          f"buffer ({params.wgt_depth} words); build with a larger --wgt-depth")
    def fits(rows):
        if rows * layer.w_out > params.pix_depth:
            return False
        for y0 in range(0, layer.h_out, rows):
            y1 = min(layer.h_out, y0 + rows)
            in_rows = min(layer.h_in, (y1 - 1) * s - p + k) - max(0, y0 * s - p)
            if layer.c_in * in_rows * layer.w_in > params.act_depth:
                return False
        return True

    best = next((rows for rows in range(layer.h_out, 0, -1) if fits(rows)), 0)
    if best == 0:
        raise SluiceError(f"{layer.name}: one output row needs more than the activation buffer "
                          f"({params.act_depth} bytes) or pixel buffers ({params.pix_depth}); "
                          "build with larger --act-depth/--pix-depth")
    return best


def job_rows(layer, params: HwParams, band: int) -> list[tuple[int, int, int, int, int, int]]:
    """``(y0, y1, IMG_ROWS, IMG_GAP, top, bottom)`` of each job: output rows ``[y0, y1)`` in
    bands of at most ``band`` rows (:func:`band_rows`), reading input rows within ``[top,
    bottom)`` (the rest is padding). For stacked images (``layer.stack``) no band holds a row
    between two images: where every image fits one job, bands of as many whole images as the
    buffers hold, each ending on its last image's last row, the walker skipping the rows
    between its images; else each image in bands of its own, as a run of that image alone
    would have them (so too on an instance without ``HwParams.stacking``). A band's input
    stops at its first and last images' own rows."""
    if layer.stack is not None:
        step, rows, h = layer.stack
        gap = step - rows
        n_img = (layer.h_out - rows) // step + 1
        if gap < 0 or n_img < 1 or (n_img - 1) * step + rows != layer.h_out:
            raise SluiceError(f"{layer.name}: stack {layer.stack} (output rows per image with "
                              f"the rows between, per image, input rows) does not tile its "
                              f"{layer.h_out} output rows")
        k, s, p = layer.kernel, layer.stride, layer.padding
        top = [i * step * s for i in range(n_img)]  # each image's first input row

        def fits(i, j, y0, y1):  # output rows [y0, y1) of images i .. j - 1
            in_rows = min(top[j - 1] + h, (y1 - 1) * s - p + k) - max(top[i], y0 * s - p)
            return ((y1 - y0) * layer.w_out <= params.pix_depth
                    and layer.c_in * in_rows * layer.w_in <= params.act_depth)

        def image_bands(b):
            return [(i, y, min(i * step + rows, y + b)) for i in range(n_img)
                    for y in range(i * step, i * step + rows, b)]

        if gap > IMG_GAP_MAX or not params.stacking or not all(
                fits(i, i + 1, y0, y1) for i, y0, y1 in image_bands(rows)):
            b = next((b for b in range(rows, 0, -1)
                      if all(fits(i, i + 1, y0, y1) for i, y0, y1 in image_bands(b))), 0)
            if b:
                return [(y0, y1, 0, 0, top[i], top[i] + h) for i, y0, y1 in image_bands(b)]
        else:
            out, i = [], 0
            while i < n_img:
                j = i + 1  # images [i, j) in one job: as many as fit
                while j < n_img and fits(i, j + 1, i * step, j * step + rows):
                    j += 1
                many = j - i > 1
                out.append((i * step, (j - 1) * step + rows, rows if many else 0,
                            gap if many else 0, top[i], top[j - 1] + h))
                i = j
            return out
    return [(y0, min(layer.h_out, y0 + band), 0, 0, 0, layer.h_in)
            for y0 in range(0, layer.h_out, band)]


def channel_order(c_in: int, base_lo: int, base_cin: int, gated: bool) -> list[int]:
    """The input channel sequence one column streams: all channels (dense), or its base set
    ``[base_lo, base_lo + base_cin)`` then the others in increasing order (gated)."""
    if not gated:
        return list(range(c_in))
    base = list(range(base_lo, base_lo + base_cin))
    return base + [i for i in range(c_in) if not base_lo <= i < base_lo + base_cin]


def job_channels(layer, params: HwParams = DEFAULT, dense: bool = False) -> tuple[list, int]:
    """The job's output channels, column order: layer channel per job channel (-1: padding),
    and the job's GROUP_COUT.

    A gated layer with channel grouping whose base groups are not a whole number of skip groups
    (e.g. ``C_out / p`` odd with ``skip_cols = 2``) gets each base group padded with unused
    channels (zero weights, results dropped) up to a multiple of ``skip_cols``, so the columns
    of a skip group always share their base set. A gated run puts the channels on the columns
    in ``layer.column_order`` when it has one (``sluice column-order``: within base groups, so
    every column keeps its base set); the results come back in the layer's order either way.
    """
    p = layer.partitions
    gated = layer.gated and not dense
    gc = layer.c_out // p
    G = params.skip_cols
    # the gated run's column order (Layer.column_order: within base groups), else as exported
    order = ([int(c) for c in layer.column_order]
             if gated and layer.column_order is not None else list(range(layer.c_out)))
    if gated and layer.base == "group" and p > 1 and gc % G:
        gcp = -(-gc // G) * G
        chans = []
        for g in range(p):
            chans += order[g * gc:(g + 1) * gc] + [-1] * (gcp - gc)
        return chans, gcp
    return order, (gc if layer.base == "group" else layer.c_out)


def check_runnable(layer, params: HwParams = DEFAULT, dense: bool = False) -> int:
    """Refuse (SluiceError, naming the field) a layer this instance cannot run: a kernel,
    stride or padding outside the accelerator's, a gated run on a dense-only build, buffers
    too small for one output row. Returns the output rows per job (:func:`band_rows`).

    Cheap, so callers check before any simulator build or board traffic (the RTL's ERROR
    flags would refuse such a job too, but only then)."""
    k, s, pad = layer.kernel, layer.stride, layer.padding
    for field_name, v, ok, allowed in (("kernel", k, k in KERNELS, ", ".join(map(str, KERNELS))),
                                       ("stride", s, s in STRIDES, " or ".join(map(str, STRIDES))),
                                       ("padding", pad, 0 <= pad <= MAX_PADDING,
                                        f"0 to {MAX_PADDING}")):
        if not ok:
            raise SluiceError(f"{layer.name}: {field_name} {v} is not supported by the "
                              f"accelerator ({allowed})")
    if layer.gated and not dense and not params.gating:
        raise SluiceError(f"layer {layer.name!r} is gated but the accelerator was generated "
                          "dense-only (gating off); run it in dense mode (--dense)")
    return band_rows(layer, params)


def check_network(layers, params: HwParams = DEFAULT, dense: bool = False) -> None:
    """:func:`check_runnable` for every ``(entry, layer)`` of an export (``IntNet.layers``):
    a network with a layer the instance cannot run is refused before the simulator is built
    or the first layer reaches a board, not once the layers before it have run."""
    for _, layer in layers:
        check_runnable(layer, params, dense)


def layer_jobs(layer, params: HwParams = DEFAULT, dense: bool = False) -> list[Job]:
    """The jobs that run ``layer`` (``dense``: gating off, every output gets the full sum):
    one per band of output rows (one band when the buffers are large enough)."""
    C, WP, PP, RP = params.cols, params.wgt_pack, params.par_pack, params.res_pack
    k, s, pad = layer.kernel, layer.stride, layer.padding
    p = layer.partitions
    gated = layer.gated and not dense
    band = check_runnable(layer, params, dense)
    first = layer.base == "first"
    base_cin = layer.c_in // p
    chans, group_cout = job_channels(layer, params, dense)
    c_out = len(chans)
    n_tiles = -(-c_out // C)
    cpad = n_tiles * C
    chans_pad = chans + [-1] * (cpad - c_out)
    real = [n for n, o in enumerate(chans_pad) if o >= 0]
    src = [chans_pad[n] for n in real]

    def per_col(a):
        out = np.zeros(cpad, np.int64)
        if a is not None:
            out[real] = np.asarray(a, np.int64)[src]
        return out

    params_cols = {
        "bias": per_col(layer.bias), "thresh": per_col(layer.thresh),
        "mult": per_col(layer.mult), "shift": per_col(layer.shift),
        "res_mult": per_col(layer.res_mult), "res_shift": per_col(layer.res_shift),
    }
    # per column: its own input channel sequence (SPEC base sets)
    w = np.zeros((cpad, layer.c_in, k, k), np.int8)
    for n in real:
        lo = 0 if first else (n // group_cout) * base_cin
        w[n] = layer.w[chans_pad[n]][channel_order(layer.c_in, lo, base_cin, gated)]
    flags = ((gated << _FLAG["GATED"]) | (bool(layer.relu) << _FLAG["RELU"])
             | ((layer.residual is not None) << _FLAG["RESIDUAL"])
             | (first << _FLAG["BASE_FIRST"]))

    jobs = []
    for y0, y1, img_rows, img_gap, top, bottom in job_rows(layer, params, band):
        in_lo = y0 * s - pad
        in_hi = (y1 - 1) * s - pad + k
        lo, hi = max(top, in_lo), min(bottom, in_hi)
        x = layer.x[:, lo:hi, :]
        desc = {
            "C_IN": layer.c_in, "C_OUT": c_out, "H_IN": hi - lo, "W_IN": layer.w_in,
            "H_OUT": y1 - y0, "W_OUT": layer.w_out, "KERNEL": k, "STRIDE": s,
            "PAD_TOP": lo - in_lo, "PAD_LEFT": pad, "PARTITIONS": p,
            "BASE_CIN": base_cin, "GROUP_COUT": group_cout, "FLAGS": flags, "BASE_LO": 0,
            "IMG_ROWS": img_rows, "IMG_GAP": img_gap,
        }
        act = _words_from_bytes(x.view(np.uint8), params.stream_bytes)
        hw = (y1 - y0) * layer.w_out
        res_all = None
        if layer.residual is not None:
            res_all = np.zeros((cpad, y1 - y0, layer.w_out), np.int8)
            res_all[real] = layer.residual[src, y0:y1]
        beats = []
        # WGT in two parts (HwParams.wgt_parts): the base phase's words first, the rest after
        # the residual, and in tile 0's section after the activations
        n_first, _ = params.wgt_parts(layer.c_in, base_cin, k * k, gated)
        for t in range(n_tiles):
            wt = w[t * C:(t + 1) * C]  # C, C_in (column order), K, K
            steps = wt.reshape(C, -1).T.astype(np.int8)  # C_in*K*K, C
            wgt = _words_from_bytes(steps.reshape(-1).view(np.uint8), WP * C)
            beats += wgt[:n_first]
            for name in PARAM_ORDER:  # each parameter from a fresh beat: column c in slot c % PP
                vals = [_u32(v) for v in params_cols[name][t * C:(t + 1) * C]]
                beats += [sum(v << 32 * j for j, v in enumerate(vals[i:i + PP]))
                          for i in range(0, C, PP)]
            if res_all is not None:
                rows = res_all[t * C:(t + 1) * C].reshape(C, hw).T  # hw, C
                beats += _words_from_bytes(rows.reshape(-1).view(np.uint8), RP * C)
            if t == 0:
                beats += act
            beats += wgt[n_first:]
        writes = [(REG[name].addr, int(v)) for name, v in desc.items()]
        writes.append((REG["CTRL"].addr, 1))
        jobs.append(Job(writes=writes, beats=beats, y0=y0, h_out=y1 - y0, descriptor=desc,
                        channels=chans))
    return jobs


def decode_words(layer, job: Job, words: list, y: np.ndarray, gate: np.ndarray,
                 params: HwParams = DEFAULT) -> None:
    """Place one job's result words into ``y`` and ``gate`` (``C_out, H_out, W_out``).

    Checks that every (output pixel, channel) of the job arrives exactly once.
    """
    C, G, NG = params.cols, params.skip_cols, params.groups
    f = {name: (lsb, width) for name, lsb, width, _ in result_fields(params)}
    hw = job.h_out * layer.w_out
    computed = np.zeros(hw, bool)  # the pixels the job computes (not the rows between images)
    for r in job.rows:
        computed[r * layer.w_out:(r + 1) * layer.w_out] = True
    chans = job.channels or list(range(layer.c_out))
    c_out = len(chans)
    n_tiles = -(-c_out // C)
    seen = np.zeros((n_tiles * C, hw), np.int32)

    def field(word, name, j=None):
        lsb, width = f[name if j is None else f"{name}{j}"]
        return (word >> lsb) & ((1 << width) - 1)

    for n, word in enumerate(words):
        valid = field(word, "VALID")
        tile = field(word, "TILE")
        gbits = field(word, "GATE")
        for j in range(NG):
            if not (valid >> j) & 1:
                continue
            pix = field(word, "PIXEL", j)
            if pix >= hw or tile >= n_tiles:
                raise SluiceError(f"result word {n}: pixel {pix} / tile {tile} out of range")
            yy, xx = divmod(pix, layer.w_out)
            for c in range(j * G, (j + 1) * G):
                n_ch = tile * C + c
                seen[n_ch, pix] += 1
                if n_ch >= c_out or chans[n_ch] < 0:
                    continue
                o = chans[n_ch]
                v = (word >> (8 * c)) & 0xFF
                y[o, job.y0 + yy, xx] = v - 256 if v >= 128 else v
                gate[o, job.y0 + yy, xx] = (gbits >> c) & 1
    if not (seen == computed).all():
        bad = int((seen != computed).sum())
        raise SluiceError(f"job at output row {job.y0}: {bad} (channel, pixel) results missing "
                          "or repeated in the result words")


def computed_rows(layer, params: HwParams = DEFAULT, dense: bool = False) -> np.ndarray:
    """Which of ``layer``'s output rows its jobs compute (a bool per row): all of them, or
    for stacked images (``layer.stack``) all but the rows between the images
    (``Job.rows``); the others get no results and no gate bits (zero in ``new_outputs``)."""
    mask = np.zeros(layer.h_out, bool)
    for y0, y1, img_rows, img_gap, _, _ in job_rows(layer, params,
                                                    check_runnable(layer, params, dense)):
        mask[[y0 + r for r in walked_rows(y1 - y0, img_rows, img_gap)]] = True
    return mask


def new_outputs(layer):
    shape = (layer.c_out, layer.h_out, layer.w_out)
    return np.zeros(shape, np.int8), np.zeros(shape, np.uint8)
