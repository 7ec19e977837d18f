"""Throughput mode: several images in one job per layer, stacked along the feature maps' height.

The host stacks N images' input maps (and residuals) along H with zero rows between them: a
stacked layer is a taller layer whose ``Layer.stack`` tells the host where the images are. Each
image's outputs and gate bits are rows of the stacked layer's (:func:`stack_layer`'s ``rows``).
The output rows between two images (whose windows straddle the separator) are never computed:
the host runs bands of whole images with the descriptor's IMG_ROWS and IMG_GAP set, and the
pixel walker jumps over those rows (``sim.host.job_rows``); where one image does not fit the
buffers, each image runs in bands of its own, as it would alone. On small maps this fills the
array's rows with more pixels per channel tile, which is where single-image runs lose most
(``hw/README.md``); on maps too large for two images per job it changes nothing.

Used by ``sluice run-model --images N`` (the testbench and the checks) and by the cycle-model
study in :mod:`sluice.hw.levers`.
"""

from __future__ import annotations

import numpy as np


def separator(h: int, layer) -> int:
    """Zero rows between stacked images of height ``h``: at least the padding (at least 1),
    ``h + s`` a multiple of the stride, so every image's outputs start on an output row, and
    each image's output rows ending before the next image's begin (a padding wider than the
    kernel's reach, e.g. a 1 x 1 layer with padding 1, needs more rows than the padding)."""
    s = max(1, layer.padding)
    h_out = (h + 2 * layer.padding - layer.kernel) // layer.stride + 1
    while (h + s) % layer.stride or (h + s) // layer.stride < h_out:
        s += 1
    return s


def stack(maps, s: int) -> np.ndarray:
    """(C, H, W) maps stacked along H with ``s`` zero rows between them."""
    c, _, w = maps[0].shape
    parts = []
    for n, x in enumerate(maps):
        if n:
            parts.append(np.zeros((c, s, w), x.dtype))
        parts.append(x)
    return np.concatenate(parts, axis=1)


def stack_layer(layer, xs, residuals=None):
    """``layer`` with the inputs ``xs`` (and ``residuals``, one per image, or None) stacked.

    Returns ``(stacked layer, rows)``: ``rows[i]`` are the output rows of the stacked layer that
    are image i's own outputs (and gate bits). One image gives the layer with that input.
    """
    s = separator(layer.h_in, layer)
    res = None
    if residuals is not None:
        res = stack(residuals, (layer.h_in + s) // layer.stride - layer.h_out)
    step = (layer.h_in + s) // layer.stride  # output rows per stacked image
    big = layer.replace(x=stack(xs, s), residual=res, y_ref=None, gate_ref=None,
                        stack=(step, layer.h_out, layer.h_in) if len(xs) > 1 else None)
    rows = [np.arange(i * step, i * step + layer.h_out) for i in range(len(xs))]
    return big, rows


def bind_batch(net, entry: dict, layer, tensors: list[dict]):
    """:meth:`IntNet.bind` for N images: ``tensors[i]`` holds image i's tensors by name.
    Returns ``(stacked layer, rows)`` as :func:`stack_layer`."""
    bound = [net.bind(entry, layer, t) for t in tensors]
    res = [b.residual for b in bound] if entry.get("residual") is not None else None
    return stack_layer(layer, [b.x for b in bound], res)


def split(y: np.ndarray, rows) -> list[np.ndarray]:
    """Each image's own (C, H, W) rows of a stacked layer's output or gate bits."""
    return [np.ascontiguousarray(y[:, r]) for r in rows]
