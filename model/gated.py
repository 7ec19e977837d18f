"""Gated convolutions: a drop-in ``nn.Conv2d`` with channel gating (CGNet, SPEC section 1).

``CGConv2d`` follows the reference training code (cornell-zhang/dnn-gating, ``CGConv2d``): the
base partial sum ``Yp`` comes from the base input channels of each output channel, a gate
``d = BN_noaffine(Yp) > Δ`` (learnable per-output-channel Δ, sigmoid of slope α with a
straight-through step) decides per output whether the conditional channels are added, and the
output is ``Y*d + Yp*(1-d)``.

The gating method is a pluggable part: a gated convolution is any ``nn.Conv2d`` subclass with
``gate_loss(target)`` and the counters ``gate_on``/``gate_total``; networks take a conv factory
(:func:`conv_factory`) so FBS or Gator-style gates can be added without touching the networks.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from sluice.errors import SluiceError

BASE_MODES = ("group", "first")


class _StepST(torch.autograd.Function):
    """``s > 0.5`` forward; identity gradient backward (straight-through)."""

    @staticmethod
    def forward(ctx, s):
        return (s > 0.5).to(s.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _StepSparse(torch.autograd.Function):
    """``s > 0.5`` forward; gradient only where the gate is on (sparse backprop)."""

    @staticmethod
    def forward(ctx, s):
        d = (s > 0.5).to(s.dtype)
        ctx.save_for_backward(d)
        return d

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        return grad * d


def gate_step(s: torch.Tensor, sparse_bp: bool = False) -> torch.Tensor:
    """Hard 0/1 step at 0.5 with a straight-through (or sparse) gradient."""
    return (_StepSparse if sparse_bp else _StepST).apply(s)


def base_mask(c_out: int, c_in: int, partitions: int, base: str) -> torch.Tensor:
    """bool[C_out, C_in]: True where input channel i is in output channel o's base set."""
    cip, cop = c_in // partitions, c_out // partitions
    o = torch.arange(c_out)[:, None]
    i = torch.arange(c_in)[None, :]
    if base == "group":
        return (i // cip) == (o // cop)
    return (i < cip).expand(c_out, c_in)


def group_base_weight(w: torch.Tensor, partitions: int) -> torch.Tensor:
    """The ``group`` base sets' block-diagonal part of ``w`` (C_out, C_in, K, K) as the weight
    of a grouped convolution (C_out, C_in/p, K, K): output group g keeps input group g."""
    p, (co, ci), k = partitions, w.shape[:2], w.shape[2:]
    return torch.diagonal(w.view(p, co // p, p, ci // p, *k), dim1=0, dim2=2).permute(
        4, 0, 1, 2, 3).reshape(co, ci // p, *k)


def check_partitions(c_in: int, c_out: int, partitions: int, base: str, where: str = "") -> None:
    where = f"{where}: " if where else ""
    if base not in BASE_MODES:
        raise SluiceError(f"{where}base must be one of {', '.join(BASE_MODES)}, got {base!r}")
    if partitions < 1:
        raise SluiceError(f"{where}partitions must be >= 1, got {partitions}")
    if c_in % partitions or c_out % partitions:
        raise SluiceError(f"{where}partitions={partitions} must divide both C_in={c_in} and "
                          f"C_out={c_out}")


class CGConv2d(nn.Conv2d):
    """Channel-gated convolution; same constructor as ``nn.Conv2d`` plus the gating options.

    Parameters (beyond ``nn.Conv2d``)
    ----------
    partitions : int
        ``p``; the base set holds ``C_in / p`` input channels.
    base : str
        ``"group"`` (output group g uses input group g) or ``"first"`` (first C_in/p channels).
    alpha : float
        Sigmoid slope of the gate (only shapes the gradient; the forward is a hard step).
    threshold_init : float
        Initial Δ (in BN_noaffine units).
    sparse_bp : bool
        Zero the gate's gradient where the gate is off, instead of straight-through.
    shuffle : bool
        Channel-shuffle the input (across ``p`` groups) before the convolution. Not exportable
        to the SPEC's contiguous base sets.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, padding_mode="zeros", device=None, dtype=None, *,
                 partitions=4, base="group", alpha=2.0, threshold_init=0.0, sparse_bp=False,
                 shuffle=False):
        if groups != 1:
            raise SluiceError(f"CGConv2d: groups must be 1, got {groups}")
        check_partitions(in_channels, out_channels, partitions, base, "CGConv2d")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        self.partitions = int(partitions)
        self.base = base
        self.alpha = float(alpha)
        self.sparse_bp = bool(sparse_bp)
        self.shuffle = bool(shuffle)
        # BN_noaffine(Yp): normalises the base partial sum before the threshold.
        self.gate_bn = nn.BatchNorm2d(out_channels, affine=False, device=device, dtype=dtype)
        self.threshold = nn.Parameter(torch.full((out_channels,), float(threshold_init),
                                                 device=device, dtype=dtype))
        self.register_buffer("mask", base_mask(out_channels, in_channels, partitions, base)
                             [:, :, None, None].to(self.weight.dtype), persistent=False)
        self.reset_gate_counters()

    def extra_repr(self):
        return (super().extra_repr() + f", partitions={self.partitions}, base={self.base}, "
                f"alpha={self.alpha}, sparse_bp={self.sparse_bp}, shuffle={self.shuffle}")

    # --- counters -------------------------------------------------------------------
    def reset_gate_counters(self):
        """Outputs seen and outputs gated on (summed over forwards, as tensors: no sync)."""
        self.gate_on = torch.zeros((), dtype=torch.float64)
        self.gate_total = 0
        self.last_gate = None
        self.live_gate = None

    # --- forward --------------------------------------------------------------------
    def _shuffled(self, x):
        if not self.shuffle:
            return x
        n, c, h, w = x.shape
        return x.view(n, self.partitions, c // self.partitions, h, w).transpose(1, 2).reshape(
            n, c, h, w)

    def base_conv(self, x, weight=None, bias=None):
        """Yp: the convolution over each output channel's base input channels only; with this
        layer's weight and bias, or with ``weight`` and ``bias`` given (e.g. fake-quantised
        folded weights, ``qat.py``)."""
        if weight is None:
            weight, bias = self.weight, self.bias
        p, cip = self.partitions, self.in_channels // self.partitions
        if self.padding_mode != "zeros":
            return self._conv_forward(x, weight * self.mask, bias)
        if self.base == "first":
            return F.conv2d(x[:, :cip], weight[:, :cip], bias, self.stride, self.padding,
                            self.dilation)
        # group: block-diagonal weights, computed as a grouped convolution (1/p of the work)
        return F.conv2d(x, group_base_weight(weight, p), bias, self.stride, self.padding,
                        self.dilation, groups=p)

    def gate(self, y_base):
        z = self.gate_bn(y_base)
        s = torch.sigmoid(self.alpha * (z - self.threshold.view(1, -1, 1, 1)))
        return gate_step(s, self.sparse_bp)

    def forward(self, x):
        x = self._shuffled(x)
        y_full = self._conv_forward(x, self.weight, self.bias)
        y_base = self.base_conv(x)
        d = self.gate(y_base)
        self.count_gates(d)
        return y_base + d * (y_full - y_base)

    def count_gates(self, d: torch.Tensor) -> None:
        """Add one forward's gate decisions ``d`` (0/1) to the counters."""
        dd = d.detach()
        self.gate_on = self.gate_on.to(dd.device) + dd.sum(dtype=torch.float64)
        self.gate_total += dd.numel()
        self.last_gate = dd
        # the gates with their gradient, for a loss on them (``hwcost.py``); training only
        self.live_gate = d if d.requires_grad else None

    def gate_loss(self, target: float) -> torch.Tensor:
        """``Σ (Δ - target)^2`` over output channels (multiply by λ outside)."""
        return ((self.threshold - target) ** 2).sum()

    def threshold_float(self) -> torch.Tensor:
        """Per-channel threshold on Yp itself (eval mode): ``mean + Δ * sqrt(var + eps)``."""
        bn = self.gate_bn
        return bn.running_mean + self.threshold.detach() * torch.sqrt(bn.running_var + bn.eps)


def is_gated(m: nn.Module) -> bool:
    return isinstance(m, CGConv2d)


GATINGS = ("none", "cgnet")


def conv_factory(gating: str = "cgnet", **options):
    """A callable with ``nn.Conv2d``'s signature building the convolution for ``gating``.

    ``gating="none"`` gives plain ``nn.Conv2d`` (dense baseline); ``"cgnet"`` gives
    :class:`CGConv2d` with ``options`` (partitions, base, alpha, threshold_init, sparse_bp,
    shuffle).
    """
    if gating == "none":
        return nn.Conv2d
    if gating == "cgnet":
        return functools.partial(CGConv2d, **options)
    raise SluiceError(f"gating must be one of {', '.join(GATINGS)}, got {gating!r}")


def gated_modules(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if is_gated(m)]


def total_gate_loss(model: nn.Module, target: float) -> torch.Tensor:
    losses = [m.gate_loss(target) for _, m in gated_modules(model)]
    if not losses:
        return torch.zeros(())
    return torch.stack(losses).sum()


def reset_gate_counters(model: nn.Module) -> None:
    for _, m in gated_modules(model):
        m.reset_gate_counters()


def gate_rate(model: nn.Module) -> float:
    """Fraction of gated outputs switched on since the last reset (nan without gated layers)."""
    on = sum(float(m.gate_on) for _, m in gated_modules(model))
    tot = sum(m.gate_total for _, m in gated_modules(model))
    return on / tot if tot else float("nan")
