"""Analytic cycle model of the top level (``sluice.hw.top``), same parameters and tiling.

It follows the RTL pass by pass (not cycle by cycle): for every job (band of output rows) and
channel tile, the loads, the column setup, and each phase's passes with the three things that can
hold a pass back: the row-set loader (``rows + 3`` cycles to fill the next row set), the drain of
the previous pass (its last step may only issue ``rows + skip_cols + 1 + array_extra`` cycles after
the previous pass's last step) and the pass length itself. Assumes the input stream always has
the next beat and the output stream is always ready (the host sequence's contract); under those
conditions it reproduces the RTL's CYCLES counter exactly (the tests check this).
"""

from __future__ import annotations

import numpy as np

from sluice.hw.params import DEFAULT, SLICE3_KERNEL, HwParams, walked_rows
from sluice.hw.postproc import post_latency

# fixed costs, in cycles (see the RTL): PHASE/COND states; TERM writes the terminating word
# once the last results have left the post-processing pipeline (post_latency(cols) - 1 cycles
# after the last phase ends) and FLUSH waits until it has left the output FIFO (3 cycles):
# TAIL + post_latency(cols) after the last phase.
PHASE_ENTRY = 1
TAIL = 3


def phase_cycles(npix: int, steps: int, p: HwParams, start: int = 0, need=None,
                 act_end: int = 0, last=None) -> tuple[int, int, int]:
    """One RUN state (one phase) whose first cycle is ``start``.

    Returns (last RUN cycle + 1, passes, cycles waiting for activations). ``need(n)``: the
    cycle from which step n of a pass may issue (its input channels are loaded); only
    consulted for steps that could issue before ``act_end``. ``last``: ``(steps, need)`` of
    the phase's last pass when it differs (a sliced pass, ``HwParams.row_slices``). The drain
    takes ``post_cols``
    cycles per row (one column per post-processing unit and cycle): a pass's last step waits
    until the previous pass's last row has left the array (``spacing``), and the phase ends
    once the last row's last column has entered its unit.
    """
    R, C, PU = p.rows, p.cols, p.post_cols
    spacing = p.skip_cols + (R - 1) * PU + 2 + p.array_extra
    n_pass = -(-npix // R)
    s = start + R + 2  # swap cycle of the first row set
    e_prev = None
    ready = None
    wait = 0
    for j in range(n_pass):
        if j > 0:
            s = e_prev if ready <= e_prev else ready
        a = s + 1
        n_steps, nd_of = (last if last is not None and j == n_pass - 1 else (steps, need))
        if nd_of is not None and a < act_end:
            t = a - 1
            for n in range(n_steps):
                lo = t + 1
                nd = nd_of(n)
                t = max(lo, nd)
                if n == n_steps - 1 and e_prev is not None:
                    t = max(t, e_prev + spacing)
                wait += max(0, min(t, nd) - lo)
            e = t
        else:
            e = a + n_steps - 1
            if e_prev is not None:
                e = max(e, e_prev + spacing)
        ready = s + R + 3
        e_prev = e
    return e_prev + p.skip_cols + R * PU + 3 + p.array_extra, n_pass, wait


def sliced_last(busiest: int, kernel: int, p: HwParams) -> int:
    """Row slices of a tile's last conditional pass (``HwParams.row_slices``; 0: not sliced):
    3 where the layer is 3 x 3 and its busiest skip group, ``busiest`` active pixels in the
    tile, has at most ``slice3_rows`` of them left for that pass; else 2 where it has at most
    ``slice_rows`` left and the kernel has rows to split. The row-set loader decides it so
    when it starts filling the pass's row set; no earlier pass qualifies (the busiest group
    then has more than ``rows`` left)."""
    if not p.slice_rows or kernel < 3 or busiest == 0:
        return 0
    last = last_pass_items(busiest, p.rows)
    if kernel == SLICE3_KERNEL and last <= p.slice3_rows:
        return 3
    return 2 if last <= p.slice_rows else 0


def pass_steps(kernel: int, slices: int, n_cond: int) -> int:
    """Steps of a conditional pass over ``n_cond`` conditional channels: every kernel tap of
    every channel unsliced, of the first ``ceil(n_cond / 2)`` channels on two slices (split by
    channels since session 40), one kernel row of every channel on three (3 x 3: a kernel
    row per slice)."""
    kk = kernel * kernel
    return {0: n_cond * kk, 1: n_cond * kk, 2: -(-n_cond // 2) * kk, 3: n_cond * kernel}[slices]


def last_pass_items(items: int, rows: int) -> int:
    """A list of ``items`` (> 0) pixels on ``rows`` rows per pass: the pixels of its last pass
    (1 .. rows)."""
    return items - (-(-items // rows) - 1) * rows


def pass_time(items: int, kernel: int, p: HwParams, n_cond: int | None = None) -> float:
    """Conditional passes of a skip group with ``items`` active pixels in a tile, running
    alone, in units of one full pass's steps: ``ceil(items / rows)``, the last one counting
    its share (:func:`last_pass_share`) when it would run on slices."""
    if items == 0:
        return 0
    return -(-items // p.rows) - 1 + last_pass_share(items, kernel, p, n_cond)


def last_pass_share(busiest: int, kernel: int, p: HwParams, n_cond: int | None = None) -> float:
    """A tile's last conditional pass in units of a full pass's steps: 1, or on two row
    slices ``ceil(n / 2) / n`` of the layer's ``n_cond`` conditional channels (1/2 when
    ``n_cond`` is not given: exact for an even count), ``1/3`` on three (:func:`sliced_last`
    of its busiest group's ``busiest`` pixels; ``model/hwcost.py`` takes the training term's
    share from here)."""
    n = n_cond or 2
    return pass_steps(kernel, sliced_last(busiest, kernel, p), n) / (n * kernel * kernel)


def active_items(gate_band, t: int, p: HwParams) -> list[int]:
    """Per skip group of tile t: pixels with any gate on in the group's columns."""
    C, G = p.cols, p.skip_cols
    g = gate_band[t * C:t * C + C].reshape(-1, gate_band[0].size)
    out = []
    for j in range(p.groups):
        cols = g[j * G:(j + 1) * G]
        out.append(int(cols.any(axis=0).sum()) if len(cols) else 0)
    return out


def job_cycles(layer, job_desc: dict, gate_band, p: HwParams, dense: bool) -> dict:
    """Cycles of one job; ``gate_band`` is the job's ``C_out, H_out, W_out`` gate bits.

    Cycle 1 is the first busy cycle. The loader fills the first part of tile 0's bank (the base
    phase's weights, the parameters, the residual), streams the activations, the bank's second
    part (the conditional phase's weights), then fills the banks of tiles 1, 2, ... alternately,
    each in its two parts; the compute side starts a tile the cycle after it sees the tile's
    first part, starts its conditional phase once it sees the second (waiting in COND_WAIT),
    frees the bank when the tile's last phase ends, and a step waits until the activations of
    its input channels are in. Returns the counters' values (``cycles``, ``load_cycles``, ...)
    and ``cond_wait``: the load cycles spent in COND_WAIT.
    """
    C, B, G = p.cols, p.stream_bytes, p.skip_cols
    kk = layer.kernel * layer.kernel
    c_in = layer.c_in
    c_out = job_desc["C_OUT"]
    hw_in = job_desc["H_IN"] * job_desc["W_IN"]
    hw_out = job_desc["H_OUT"] * job_desc["W_OUT"]
    # the pixels the walker visits (stacked images: not the rows between them)
    npix = len(walked_rows(job_desc["H_OUT"], job_desc.get("IMG_ROWS", 0),
                           job_desc.get("IMG_GAP", 0))) * job_desc["W_OUT"]
    gated = layer.gated and not dense
    base_cin = job_desc["BASE_CIN"]
    first = bool(job_desc["FLAGS"] & 8)
    group_cout = job_desc["GROUP_COUT"]
    cond_empty = base_cin == c_in
    n_tiles = -(-c_out // C)
    # a tile's section: the base phase's WGT words, PAR and RES (then the tile may start),
    # then the rest of WGT (in tile 0's section after the activations; HwParams.wgt_parts)
    n_first, n_second = p.wgt_parts(c_in, base_cin, kk, gated)
    n_load = (n_first + p.par_beats
              + (p.res_beats(hw_out) if layer.residual is not None else 0))
    A = -(-c_in * hw_in // B)

    def group_lo(o):
        if first:
            return job_desc["BASE_LO"]
        return (min(o, c_out) // group_cout) * base_cin  # columns beyond C_OUT: next group

    AP = p.act_pieces  # cycles per activation beat (one buffer word each)
    f0 = n_load + 2  # tile 0's first part seen; the activations stream in from this cycle
    act_end = f0 + A * AP + 1  # the last beat written (a cycle after it arrives) and seen

    def avail(i):  # the RTL sees the beat count a cycle late
        if i >= c_in or p.act_shared:  # shared copies: every pass waits for all of them
            return act_end
        return min(f0 + -(-(i + 1) * hw_in // B) * AP + 1, act_end)

    def need_for(t, kind, per_ch=kk):
        los = [group_lo(t * C + j * G) for j in range(p.groups)]

        def chan(lo, k):
            if kind == "dense":
                return k
            if kind == "base":
                return lo + k
            return k if k < lo else k + base_cin

        return lambda n: max(avail(chan(lo, n // per_ch)) for lo in los)

    full, ends = [], []
    load_wait = cond_wait = 0
    steps_total = passes = active_total = sliced = sliced3 = 0
    w = 1  # loader enters L_WAIT
    a = 1  # compute enters TILE_WAIT
    for t in range(n_tiles):
        free = ends[t - 2] + 1 if t >= 2 else 0
        y = max(w, free)
        f = y + n_load + 1  # the first part seen in the bank
        full.append(f)
        # the second part follows (tile 0: after the activations); the bank is complete, and
        # the loader free again, once it is in (seen from ``cf`` on)
        cf = f + (A * AP if t == 0 else 0) + n_second
        w = cf
        s = max(a, f) + 1
        load_wait += max(0, f - a)
        run = s + C + PHASE_ENTRY  # first RUN cycle
        if not gated:
            steps = c_in * kk
            end, n, wt = phase_cycles(npix, steps, p, run, need_for(t, "dense"), act_end)
        else:
            steps = base_cin * kk
            end, n, wt = phase_cycles(npix, steps, p, run, need_for(t, "base"), act_end)
        steps_total += n * steps
        passes += n
        load_wait += wt
        fin = end  # the job's end counts from the last phase's drain, not its exit
        if gated:
            # the base phase also waits for its last row to leave the drain's d2 stage, which
            # the post-processing units' serial columns cover when post_cols > 1
            end += p.post_cols == 1
            items = active_items(gate_band, t, p)
            n_active = max(items)
            if not cond_empty:
                active_total += sum(items)
            if n_active and not cond_empty:
                steps = (c_in - base_cin) * kk
                last = None
                slices = sliced_last(n_active, layer.kernel, p)
                if slices:  # (two slices wait for every activation: act_end)
                    last = (pass_steps(layer.kernel, slices, c_in - base_cin),
                            need_for(t, "cond", layer.kernel) if slices == 3
                            else (lambda n: act_end))
                if cf >= end:  # waits in COND_WAIT (LOAD_CYCLES) until it sees them
                    load_wait += cf - end + 1
                    cond_wait += cf - end + 1
                    end = cf + 1
                end, n, wt = phase_cycles(n_active, steps, p, end + PHASE_ENTRY,
                                          need_for(t, "cond"), act_end, last)
                steps_total += n * steps - (steps - last[0] if last else 0)
                passes += n
                sliced += last is not None
                sliced3 += slices == 3
                load_wait += wt
                fin = end
        ends.append(end - 1)
        a = end
    cycles = fin - 1 + TAIL + post_latency(p.cols)
    return {"cycles": cycles, "load_cycles": load_wait,
            "stall_cycles": cycles - load_wait - steps_total,
            "steps": steps_total, "passes": passes, "active_pixels": active_total,
            "sliced_passes": sliced, "sliced3_passes": sliced3, "cond_wait": cond_wait}


def predict(layer, gate=None, params: HwParams = DEFAULT, dense: bool = False) -> dict:
    """Predicted counters for a whole layer (all jobs). ``gate``: the layer's gate bits
    (from the reference); needed for gated runs."""
    if gate is None:
        if layer.gated and not dense:
            raise ValueError("a gated run needs the gate bits")
        gate = np.ones((layer.c_out, layer.h_out, layer.w_out), np.uint8)
    total = {}
    for job, band in job_bands(layer, gate, params, dense):
        for key, v in job_cycles(layer, job.descriptor, band, params, dense).items():
            total[key] = total.get(key, 0) + v
    return total


def job_bands(layer, gate, params: HwParams, dense: bool):
    """(job, the job's ``C_out, H_out, W_out`` gate bits in its channel order) for every job
    of the layer; padding channels have their gates off."""
    from sluice.sim.host import layer_jobs

    for job in layer_jobs(layer, params, dense=dense):
        band = gate[:, job.y0:job.y0 + job.h_out]
        rows = job.rows
        if len(rows) < job.h_out:  # the rows between stacked images: never computed
            band, full = np.zeros_like(band), band
            band[:, rows] = full[:, rows]
        yield job, host_gate(band, job.channels)


def host_gate(gate, channels) -> np.ndarray:
    """``gate`` (``C_out, H, W``) with its channels in the job's column order ``channels``
    (``sim.host.job_channels``: layer channel per column, -1 for a padding column, whose gates
    are off)."""
    out = np.zeros((len(channels),) + gate.shape[1:], gate.dtype)
    real = [n for n, c in enumerate(channels) if c >= 0]
    out[real] = gate[[channels[n] for n in real]]
    return out


#: the terms of :func:`loss_breakdown`, in the order they are reported
LOSS_TERMS = ("ideal", "base_fill", "skip_tile", "packing", "overhead")
#: the two parts of ``packing``, from the gate bits
PACKING_TERMS = ("partial_pass", "lockstep")


def array_steps(cycles: int, counters: dict) -> int:
    """The cycles in which a step entered the array: ``CYCLES - LOAD_CYCLES - STALL_CYCLES``
    (``counters`` as a result file or :func:`predict` names them). On a board the serial link's
    waits land in LOAD and STALL, so this stays the array's own work."""
    return cycles - counters["load_cycles"] - counters["stall_cycles"]


def loss_breakdown(layer, gate, counters: dict, params: HwParams = DEFAULT,
                   dense: bool = False) -> dict:
    """Where a run's cycles go, from its performance counters (RTL or :func:`predict`).

    ``cycles = ideal + base_fill + skip_tile + packing + overhead`` exactly, in cycles:

    - ``ideal``: the element-level MACs (SPEC ``macs_theory``) on all ``rows * cols`` PEs;
    - ``base_fill``: dense or base phase steps beyond their MACs: partial passes (map size not
      a multiple of ``rows``), partial tiles and padding channels (``C_out`` vs ``cols``);
    - ``skip_tile``: the conditional work of whole skip groups: an active (pixel, group) item
      (counter ACTIVE_PIXELS) streams all ``skip_cols`` columns, though only some gates are on;
    - ``packing``: conditional passes beyond ACTIVE_PIXELS items perfectly packed ``rows`` per
      group: partial last passes per tile and groups with shorter lists waiting for the
      busiest one (they run in lockstep);
    - ``overhead``: STALL_CYCLES + LOAD_CYCLES (row-set fills, drain waits, column setup,
      waiting for the input stream).

    ``packing`` is split further from the gate bits (per tile and skip group, ``n`` items and
    the tile's ``P`` conditional passes, ``P`` set by its busiest group), in the same units:
    ``partial_pass``, each group's last pass only partly full (``ceil(n / rows) - n / rows``
    passes; a last pass the group would run sliced, :func:`sliced_last`, counts as the share
    of steps it takes), and ``lockstep``, passes a group runs beyond its own while the busiest
    group finishes. The two add up to ``packing`` when the counters are the RTL's
    (the tests check it).
    """
    from sluice.model.reference import work_figures
    from sluice.sim.host import layer_jobs

    R, C, NG = params.rows, params.cols, params.groups
    kk = layer.kernel * layer.kernel
    gated = layer.gated and not dense
    base_cin = layer.c_in // layer.partitions if gated else layer.c_in
    first_steps = 0  # steps of the dense or base phase, all jobs and tiles
    rows = np.zeros(layer.h_out, bool)  # computed (stacked images: not the rows between)
    for job in layer_jobs(layer, params, dense=dense):
        tiles = -(-len(job.channels) // C)
        first_steps += tiles * -(-len(job.rows) * layer.w_out // R) * base_cin * kk
        rows[[job.y0 + r for r in job.rows]] = True
    fig = work_figures(layer, (gate if gated else np.ones_like(gate))[:, rows],
                       out_rows=int(rows.sum()))
    cycles = counters["cycles"]
    overhead = counters["stall_cycles"] + counters["load_cycles"]
    issued = array_steps(cycles, counters)
    first_macs = fig["macs_base"] if gated else fig["macs_dense"]
    out = {"cycles": cycles, "ideal": fig["macs_theory"] / (R * C),
           "base_fill": first_steps - first_macs / (R * C), "overhead": overhead}
    cond_steps = issued - first_steps
    cond_macs = fig["macs_theory"] - first_macs
    tiled = counters.get("active_pixels", 0) * (layer.c_in - base_cin) * kk / (R * NG)
    out["skip_tile"] = tiled - cond_macs / (R * C) if gated else 0.0
    out["packing"] = cond_steps - tiled if gated else 0.0
    part = lock = 0.0
    if gated and base_cin < layer.c_in:
        n_cond = layer.c_in - base_cin
        steps = n_cond * kk  # one conditional pass, in cycles per group
        for job, band in job_bands(layer, gate, params, dense):
            for t in range(-(-len(job.channels) // C)):
                items = active_items(band, t, params)
                tile = pass_time(max(items), layer.kernel, params, n_cond)
                for n in items:
                    own = pass_time(n, layer.kernel, params, n_cond)
                    part += (own - n / R) * steps / NG
                    lock += (tile - own) * steps / NG
    out["partial_pass"], out["lockstep"] = part, lock
    return out
