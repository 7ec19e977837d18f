"""Analytic cycle model of the top level (``sluice.hw.top``), same parameters and tiling.

It follows the RTL pass by pass (not cycle by cycle): for every job (band of output rows) and
channel tile, the loads, the column setup, and each phase's passes with the three things that can
hold a pass back: the row-set loader (``rows + 3`` cycles to fill the next row set), the drain of
the previous pass (its last step may only issue ``rows + cols + 1`` cycles after the previous
pass's last step) and the pass length itself. Assumes the input stream always has the next beat
and the output stream is always ready (the host sequence's contract); under those conditions it
reproduces the RTL's CYCLES counter exactly (the tests check this).
"""

from __future__ import annotations

import numpy as np

from sluice.hw.params import DEFAULT, PARAM_ORDER, HwParams

# fixed costs, in cycles (see the RTL): PHASE/COND states; TERM writes the terminating word
# (1 cycle) and FLUSH waits until it has left the output FIFO (3 cycles).
PHASE_ENTRY = 1
TAIL = 4


def phase_cycles(npix: int, steps: int, p: HwParams) -> tuple[int, int]:
    """Cycles of one RUN state (one phase) and the number of passes."""
    R, C = p.rows, p.cols
    n_pass = -(-npix // R)
    s = R + 2  # swap cycle of the first row set
    e_prev = None
    ready = None
    for j in range(n_pass):
        if j > 0:
            s = e_prev if ready <= e_prev else ready
        a = s + 1
        e = a + steps - 1
        if e_prev is not None:
            e = max(e, e_prev + C + R + 1)
        ready = s + R + 3
        e_prev = e
    return e_prev + C + R + 3, n_pass


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

    Cycle 1 is the first busy cycle. The loader reads the activations (cycles 1..A), then fills
    tile banks alternately; the compute side starts a tile the cycle after it sees the tile's
    bank full and frees the bank when the tile's last phase ends.
    """
    C, B = p.cols, p.stream_bytes
    kk = layer.kernel * layer.kernel
    c_in = layer.c_in
    c_out = job_desc["C_OUT"]
    hw_out = job_desc["H_OUT"] * job_desc["W_OUT"]
    n_act = c_in * job_desc["H_IN"] * job_desc["W_IN"]
    gated = layer.gated and not dense
    base_cin = job_desc["BASE_CIN"]
    cond_empty = base_cin == c_in
    n_tiles = -(-c_out // C)
    n_load = c_in * kk + len(PARAM_ORDER) * C + (hw_out if layer.residual is not None else 0)

    # compute-side work per tile: (cycles from COL_SETUP to the last RUN cycle, steps, passes)
    work = []
    for t in range(n_tiles):
        steps = (base_cin if gated else c_in) * kk
        cyc, n = phase_cycles(hw_out, steps, p)
        span, st, ps = C + PHASE_ENTRY + cyc, n * steps, n
        if gated:
            n_active = max(active_items(gate_band, t, p))
            if n_active and not cond_empty:
                steps = (c_in - base_cin) * kk
                cyc, n = phase_cycles(n_active, steps, p)
                span += PHASE_ENTRY + cyc
                st += n * steps
                ps += n
        work.append((span, st, ps))

    A = -(-n_act // B)
    full = []  # cycle in which bank of tile t is first seen full
    ends = []  # last RUN cycle of tile t
    load_wait = 0
    w = A + 1  # loader enters L_WAIT
    a = 1  # compute enters TILE_WAIT
    for t in range(n_tiles):
        free = ends[t - 2] + 1 if t >= 2 else 0
        # the loader's tile t load may depend on the compute of tile t-2: interleave
        y = max(w, free)
        f = y + n_load + 1
        full.append(f)
        w = f
        s = max(a, f) + 1
        load_wait += max(0, f - a)
        e = s + work[t][0] - 1
        ends.append(e)
        a = e + 1
    cycles = ends[-1] + TAIL
    steps_total = sum(x[1] for x in work)
    return {"cycles": cycles, "load_cycles": load_wait,
            "stall_cycles": cycles - load_wait - steps_total,
            "steps": steps_total, "passes": sum(x[2] for x in work)}


def predict(layer, gate=None, params: HwParams = DEFAULT, dense: bool = False) -> dict:
    """Predicted counters for a whole layer (all jobs). ``gate``: the layer's gate bits
    (from the reference); needed for gated runs."""
    from sluice.sim.host import layer_jobs

    if gate is None:
        if layer.gated and not dense:
            raise ValueError("a gated run needs the gate bits")
        gate = np.ones((layer.c_out, layer.h_out, layer.w_out), np.uint8)
    total = {}
    for job in layer_jobs(layer, params, dense=dense):
        band = gate[job.o0:job.o0 + (job.c_out or layer.c_out), job.y0:job.y0 + job.h_out]
        for key, v in job_cycles(layer, job.descriptor, band, params, dense).items():
            total[key] = total.get(key, 0) + v
    return total
