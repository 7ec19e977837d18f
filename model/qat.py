"""Quantisation-aware fine-tuning: train the float network through the int8 arithmetic it will run.

:class:`FakeQuantNet` wraps a trained ResNet and computes its forward pass the way
:func:`quantize.quantize` and :class:`quantize.QuantNet` will run it, with straight-through
gradients:

- BN frozen (running statistics) and folded into each convolution: ``w_f = w * s_bn``,
  ``b_f = beta + (b_conv - mean) * s_bn``; the BN affine parameters still learn through the fold.
- Weights fake-quantised per output channel with :func:`quantize.weight_scale` (the same scale,
  budget floor included, that the export computes from the same weights).
- Every layer output fake-quantised per tensor at the scale the export's calibration gives (the
  same training images and percentile; :meth:`recalibrate` refreshes them, the training loop
  does so once per epoch), clamped to ``[0 or -128, 127]`` steps.
- Gates on the quantised base sum, as the integer ``acc_b > thresh`` decides them: with the
  folded base sum ``Yp_f`` (exact multiples of ``s_x * s_w``), ``Yp = Yp_f / s_bn + b_conv`` goes
  through the layer's own gate (``BN_noaffine`` in eval mode, learnable Δ, sigmoid slope α,
  straight-through step), which is the float form of that test.
- Classifier: fake-quantised rows, average pool, bias.

What is not emulated, all below one accumulator or output step: the bias and the residual
rounded to accumulator units, and round-half-up (SPEC) versus PyTorch's round-half-even. The test
suite bounds the difference to the integer network.

The wrapped model keeps its own parameters (``FakeQuantNet.model``), so the checkpoint is an
ordinary float checkpoint that ``sluice eval --int8`` and ``sluice export`` quantise as always.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gated import is_gated
from .quantize import activation_scales, calibrate, graph, row_scale, weight_scale


def fake_quant(x: torch.Tensor, scale, lo: int, hi: int) -> torch.Tensor:
    """``clamp(round(x / scale), lo, hi) * scale`` forward; gradient 1 inside the clamp range,
    0 outside (the clamp is differentiable, the rounding straight-through)."""
    xc = torch.clamp(x, min=lo * scale, max=hi * scale)
    return xc + (torch.round(xc / scale) * scale - xc).detach()


class FakeQuantNet(nn.Module):
    """A trained ResNet seen through its int8 quantisation (see the module docstring).

    Give it the network after :func:`quantize.equalise` (an exact rewrite of the float network,
    as the export does first; ``sluice train --qat`` does so before building the optimiser), so
    that the export's own equalisation finds little left to move. The module stays in eval mode:
    BN statistics are frozen by design (``train()`` keeps eval mode).
    """

    def __init__(self, model, calib_batches, input_scale: float, percentile: float = 99.99):
        super().__init__()
        self.calib_batches = list(calib_batches)
        self.percentile = percentile
        self.input_scale = float(input_scale)
        self.model = model.eval()
        self.scales: dict = {}
        self.recalibrate()

    def train(self, mode: bool = True):
        # BN statistics stay frozen: they are folded into the weights the export quantises.
        return super().train(False)

    @torch.no_grad()
    def recalibrate(self) -> None:
        """Activation scales from the float network on the calibration images (as the export)."""
        self.scales = activation_scales(calibrate(self.model, self.calib_batches,
                                                  self.percentile), self.input_scale)

    def layer(self, entry, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """One convolution of :func:`quantize.graph` (``entry``) on fake-quantised inputs."""
        name, conv, bn, inp, res, relu = entry
        s_bn = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b_conv = conv.bias if conv.bias is not None else torch.zeros_like(s_bn)
        b_f = bn.bias + (b_conv - bn.running_mean) * s_bn
        w_f = conv.weight * s_bn.view(-1, 1, 1, 1)
        s_w = weight_scale(w_f, b_f, self.scales[inp],
                           self.scales[res] if res is not None else None)
        w_q = fake_quant(w_f, s_w.to(w_f.dtype).view(-1, 1, 1, 1), -127, 127)
        y = F.conv2d(x, w_q, None, conv.stride, conv.padding)
        if is_gated(conv):
            yb = conv.base_conv(x, w_q)
            d = conv.gate(yb / s_bn.view(1, -1, 1, 1) + b_conv.view(1, -1, 1, 1))
            conv.count_gates(d)
            y = yb + d * (y - yb)
        y = y + b_f.view(1, -1, 1, 1)
        if residual is not None:
            y = y + residual
        return fake_quant(y, self.scales[name], 0 if relu else -128, 127)

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        g, feature = graph(self.model)
        t = {"input": x}
        for entry in g:
            name, inp, res = entry[0], entry[3], entry[4]
            t[name] = self.layer(entry, t[inp], t[res] if res is not None else None)
            if record is not None:
                record[name] = t[name]
        fc = self.model.fc
        s_fc = row_scale(fc.weight).view(-1, 1)
        w_fc = fake_quant(fc.weight, s_fc, -127, 127)
        return F.linear(t[feature].mean(dim=(2, 3)), w_fc, fc.bias)
