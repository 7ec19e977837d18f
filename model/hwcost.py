"""A differentiable latency term for hardware-aware gate training (METHODS.md, AFCP: the cycle
model as the latency predictor instead of FLOPs).

The accelerator's conditional phase (``hw/README.md``, ``hw/cycle_model.py``) works on one
channel tile of ``cols`` output channels at a time, split into skip groups of ``skip_cols``
adjacent channels. An output pixel costs its skip group a conditional step slot when *any* of
the group's gates is on there (the skip tile), and the groups of a tile advance in lockstep, so
the tile's conditional phase lasts as long as its busiest group's list. Per image and gated
layer that is, before the rounding of lists to whole passes of ``rows`` pixels::

    cycles_cond = sum over tiles of  max over groups (pixels where any gate of the group is on)
                  * (C_in - C_in / p) * k * k / rows

:func:`conditional_cost` computes it from the gates of the last forward pass (the hard 0/1
gates, with their straight-through gradient: ``any`` is ``1 - prod(1 - d)``, the busiest group
a hard max), as a fraction of the gated layers' dense cycles, averaged over the batch. Its
gradient pushes off only the gates that cost cycles: those of a tile's busiest group whose
skip-group partners are off; a gate beside one already on, or in a group that waits for the
busiest one anyway, is free. ``sluice train --hw-lambda`` adds it to the loss.

With ``whole_passes`` (``sluice train --hw-passes``) the value is the cycle model's own count,
rounded to whole passes: a tile's conditional phase runs ``P = ceil(busiest / rows)`` passes.
The rounding has no gradient of its own; the last pass is written as the sum of the *excess*
items (those of every group above ``rows * (P - 1)``) over their (detached) total, which is 1,
so each excess item carries ``1 / E`` of a pass: the pass saved when all ``E`` of them go. A
group's gates below the last pass are free, and a tile whose busiest group just spills into
a new pass pushes hard on the few items that made it spill. With ``row_slices`` 2 (the
generator's ``HwParams.row_slices``, 3 by default) a last pass whose busiest group has at most
``rows // 2`` items runs sliced and counts half a pass (two slices over half the conditional
channels each, since session 40; ``ceil(K/2) / K`` on the kernel-row slices before), and with
``row_slices`` 3 a 3 x 3 layer's with at most ``rows // 4`` counts ``1/3``
(``hw/cycle_model.py``'s ``last_pass_share``, exact for an even conditional channel count),
its items each carrying as much less.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sluice.errors import SluiceError
from sluice.hw.cycle_model import last_pass_share
from sluice.hw.params import HwParams


def layer_cost(d: torch.Tensor, c_in: int, kernel: int, partitions: int, rows: int, cols: int,
               skip_cols: int, whole_passes: bool = False,
               row_slices: int = 1) -> tuple[torch.Tensor, float]:
    """(conditional cycles per image, differentiable; dense cycles per image) of one gated
    layer whose gates of one forward pass are ``d`` (``N, C_out, H, W``); ``whole_passes``:
    rounded to whole passes, a sliced last pass (``row_slices`` 2 or 3) at its share (module
    docstring)."""
    n, c, h, w = d.shape
    pad = -c % cols
    if pad:  # padding channels of the last tile: gates off
        d = F.pad(d, (0, 0, 0, 0, 0, pad))
    tiles, groups = (c + pad) // cols, cols // skip_cols
    g = d.reshape(n, tiles, groups, skip_cols, h * w)
    items = (1 - torch.prod(1 - g, dim=3)).sum(dim=3)  # (n, tiles, groups): active pixels
    busiest = items.max(dim=2).values  # lockstep: the tile lasts as long as its busiest group
    steps = (c_in - c_in // partitions) * kernel * kernel
    if whole_passes:
        passes = torch.ceil(busiest.detach() / rows)  # (n, tiles)
        below = (rows * (passes - 1)).clamp(min=0).unsqueeze(2)
        excess = torch.relu(items - below)  # items in the last pass, per group
        total = excess.detach().sum(dim=2).clamp(min=1)
        last = excess.sum(dim=2) / total  # 1 where the tile has a last pass, else 0
        if row_slices > 1:  # the hardware slices a short last pass: the cycle model's share
            hw = HwParams(rows=rows, cols=cols, skip_cols=skip_cols, row_slices=row_slices)
            vals, inv = np.unique(busiest.detach().cpu().numpy(), return_inverse=True)
            share = torch.tensor([last_pass_share(v, kernel, hw) for v in vals],
                                 dtype=last.dtype, device=last.device)
            last = last * share[torch.from_numpy(inv.reshape(busiest.shape))]
        cond = ((passes - 1).clamp(min=0) + last).sum(dim=1).mean() * steps
    else:
        cond = busiest.sum(dim=1).mean() * steps / rows
    dense = c * h * w * c_in * kernel * kernel / (rows * cols)
    return cond, dense


def conditional_cost(model: torch.nn.Module, rows: int, cols: int,
                     skip_cols: int, whole_passes: bool = False,
                     row_slices: int = 1) -> torch.Tensor:
    """The gated layers' conditional cycles (as :func:`layer_cost`) over their dense cycles,
    from the live gates of the last training forward pass (``CGConv2d.live_gate``)."""
    from .gated import gated_modules

    if cols % skip_cols:
        raise SluiceError(f"--hw-skip-cols {skip_cols} must divide --hw-cols {cols}")
    cond, dense = [], 0.0
    for name, m in gated_modules(model):
        d = getattr(m, "live_gate", None)
        if d is None:
            raise SluiceError(f"{name}: no gates with gradient from the last forward pass "
                              "(the hardware cost needs a training forward)")
        c, dn = layer_cost(d, m.in_channels, m.kernel_size[0], m.partitions, rows, cols,
                           skip_cols, whole_passes, row_slices)
        cond.append(c)
        dense += dn
    if not cond:
        return torch.zeros(())
    return torch.stack(cond).sum() / dense
