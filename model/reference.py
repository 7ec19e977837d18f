"""The integer reference: SPEC section 2, exact in int64, vectorised.

This is the single oracle of Sluice. The quantised PyTorch model, the RTL (through the cocotb
testbenches) and the boards are all compared with it bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from sluice.model.layerfile import Layer, validate_layer


def rescale(v, mult, shift):
    """``(v * M + 2^(s-1)) >> s`` for s > 0, ``v * M`` for s = 0; floor shift, int64.

    ``mult`` and ``shift`` broadcast against ``v`` (per-channel arrays need a trailing
    ``[:, None, None]`` against ``C, H, W`` tensors).
    """
    v = np.asarray(v, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    rnd = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (v * mult + rnd) >> shift


def base_mask(c_out: int, c_in: int, partitions: int, base: str) -> np.ndarray:
    """Boolean ``[C_out, C_in]``: True where input channel i is in output channel o's base set."""
    gi = c_in // partitions
    i = np.arange(c_in)
    if base == "first":
        return np.broadcast_to(i < gi, (c_out, c_in)).copy()
    if base == "group":
        go = c_out // partitions
        g = np.arange(c_out) // go
        return (i[None, :] // gi) == g[:, None]
    raise ValueError(f"unknown base mode {base!r}")


def windows(layer: Layer) -> np.ndarray:
    """im2col: int64 ``[C_in * K * K, H_out * W_out]`` of the padded input."""
    k, s, p = layer.kernel, layer.stride, layer.padding
    x = np.pad(layer.x.astype(np.int64), ((0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    win = win[:, ::s, ::s][:, : layer.h_out, : layer.w_out]  # C_in, H_out, W_out, K, K
    return win.transpose(0, 3, 4, 1, 2).reshape(layer.c_in * k * k, -1)


def partial_sums(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """``(acc_b, acc_c)``, int64 ``[C_out, H_out, W_out]``: base and conditional sums (no bias)."""
    k = layer.kernel
    cols = windows(layer)
    mask = base_mask(layer.c_out, layer.c_in, layer.partitions, layer.base)
    w = layer.w.astype(np.int64)
    w_base = (w * mask[:, :, None, None]).reshape(layer.c_out, -1)
    w_cond = (w * ~mask[:, :, None, None]).reshape(layer.c_out, -1)
    shape = layer.out_shape
    assert w_base.shape[1] == layer.c_in * k * k
    return (w_base @ cols).reshape(shape), (w_cond @ cols).reshape(shape)


def gate_bits(layer: Layer, acc_b: np.ndarray, dense: bool = False) -> np.ndarray:
    """``d`` as uint8: ``acc_b > thresh[o]``, or all ones for a dense layer / dense run."""
    if dense or layer.thresh is None:
        return np.ones(layer.out_shape, dtype=np.uint8)
    return (acc_b > layer.thresh.astype(np.int64)[:, None, None]).astype(np.uint8)


def requantise(acc: np.ndarray, layer: Layer) -> np.ndarray:
    """``clamp(rescale(acc, mult, shift), lo, 127)`` as int8; ``lo = 0`` with ReLU."""
    y = rescale(acc, layer.mult[:, None, None], layer.shift[:, None, None])
    return np.clip(y, 0 if layer.relu else -128, 127).astype(np.int8)


def accumulate(layer: Layer, acc_b, acc_c, gate) -> np.ndarray:
    """``acc = acc_b + d * acc_c + bias (+ rescaled residual)``, int64."""
    acc = acc_b + gate.astype(np.int64) * acc_c + layer.bias.astype(np.int64)[:, None, None]
    if layer.residual is not None:
        acc = acc + rescale(layer.residual, layer.res_mult[:, None, None],
                            layer.res_shift[:, None, None])
    return acc


def run_reference(layer: Layer, dense: bool = False, check: bool = True):
    """Run one layer per SPEC section 2. Returns ``(y int8, gate uint8)``.

    ``dense=True`` computes the full sum everywhere (``d = 1``), as the hardware's dense mode.
    """
    if check:
        validate_layer(layer, layer.name)
    acc_b, acc_c = partial_sums(layer)
    gate = gate_bits(layer, acc_b, dense)
    acc = accumulate(layer, acc_b, acc_c, gate)
    return requantise(acc, layer), gate


def work_figures(layer: Layer, gate: np.ndarray, rows: int = 0, cols: int = 0,
                 out_rows: int | None = None) -> dict:
    """Work counted as SPEC section 3 (element level). ``bound_cycles`` needs ``rows * cols``.
    ``out_rows``: count that many output rows (``gate`` holding only theirs), not all
    ``h_out`` (the rows a stacked run computes, ``sim.host.computed_rows``)."""
    kk = layer.kernel * layer.kernel
    m = layer.c_out * (layer.h_out if out_rows is None else out_rows) * layer.w_out
    macs_dense = m * layer.c_in * kk
    if layer.thresh is None:
        macs_base = macs_theory = macs_dense
    else:
        c_base = layer.c_in // layer.partitions
        macs_base = m * c_base * kk
        macs_theory = macs_base + int(gate.sum()) * (layer.c_in - c_base) * kk
    fig = {
        "macs_dense": macs_dense,
        "macs_base": macs_base,
        "macs_theory": macs_theory,
        "reduction": macs_dense / macs_theory,
        "gate_rate": float(gate.mean()),
    }
    if rows and cols:
        fig["bound_cycles"] = math.ceil(macs_theory / (rows * cols))
    return fig
