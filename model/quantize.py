"""Post-training quantisation of a trained ResNet to the integer semantics of SPEC section 2.

- BN folded into each convolution: ``w_f = w * s_bn``, ``bias_f = beta - mean * s_bn``.
- Weights: per-output-channel symmetric int8 in [-127, 127]; accumulator unit of output
  channel o is ``s_x * s_w[o]``.
- Activations: one scale per tensor (layer output), calibrated on training images; the network
  input is exactly ``pixel - 128`` (see data.py), so no rounding happens there. Before that,
  outlier channels are scaled down into their consumers' weights (:func:`equalise`), an exact
  rewrite of the float network that gives per-tensor scales a usable resolution.
- Requantisation and the residual rescale: ``rescale(v, mult, shift)`` with
  ``mult / 2^shift`` closest to the ratio of scales, ``mult < 2^31``.
- Gate: the float gate is ``BN_noaffine(Yp) > Δ``, i.e. ``Yp > T = mean + Δ sqrt(var + eps)``
  on the unfolded base partial sum (which includes a conv bias, if any). The integer base sum
  (bias excluded) is ``acc_b ~= s_bn * (Yp - b_conv) / (s_x s_w)``, so with ``s_bn > 0``
  ``thresh = floor(s_bn * (T - b_conv) / (s_x s_w))`` and ``acc_b > thresh`` is the same test.
- Classifier: global average pool and FC in integers: ``logits_acc = W_q . sum_hw(f) + b_q``
  (int64), float logits ``logits_acc * logit_scale``.

:class:`QuantNet` runs the quantised network batched in PyTorch with exact integer arithmetic
(int8 x int8 convolutions exactly in float32 chunks or float64, see
:func:`exact_conv`; everything else in int64); ``intnet.py`` must
reproduce its ``logits_acc`` bit for bit from the exported layer files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sluice.errors import SluiceError, check_format
from sluice.hw.params import PROD_MAX

from .gated import group_base_weight, is_gated

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def mult_shift(ratio: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mult, shift) with ``mult / 2^shift ~= ratio``, mult in [0, 2^31),
    shift <= 62."""
    ratio = np.asarray(ratio, dtype=np.float64)
    if not np.all(np.isfinite(ratio)) or np.any(ratio < 0):
        raise SluiceError(f"{where}: requantisation ratio is negative or not finite")
    mult = np.zeros(ratio.shape, np.int64)
    shift = np.zeros(ratio.shape, np.int64)
    for i, r in enumerate(ratio.ravel()):
        if r == 0:
            continue
        s = min(62, math.floor(math.log2((2**31 - 1) / r)))
        if s < 0:
            raise SluiceError(f"{where}: scale ratio {r:.3g} too large for a 31-bit multiplier")
        m = round(r * 2**s)
        while m >= 2**31:
            s -= 1
            m = round(r * 2**s)
        mult.flat[i], shift.flat[i] = m, s
    return mult.astype(np.int32), shift.astype(np.int32)


def rescale_t(v: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """SPEC rescale in int64 torch; ``mult``/``shift`` broadcast against ``v``."""
    rnd = torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp(min=0),
                      torch.zeros_like(shift))
    return (v * mult + rnd) >> shift


# float32 holds every integer up to 2^24 exactly, so a float32 convolution of int8 values is
# exact while the sum of |products| stays within that: PROD_MAX (128 * 127) per product.
F32_EXACT_TERMS = (1 << 24) // PROD_MAX


def exact_conv(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int,
               groups: int = 1) -> torch.Tensor:
    """int64 convolution of int8-valued float64 tensors ``x`` and ``w``, exactly.

    Computed in float32 over chunks of at most ``F32_EXACT_TERMS`` products per output (several
    times faster than float64 on the CPU), the chunks summed in float64 (exact below 2^53). A
    float32 algorithm that is not exact on integers (e.g. Winograd) leaves fractions behind:
    then the whole convolution is redone in float64, which is exact for any int8 layer."""
    kk = w.shape[2] * w.shape[3]
    step = max(1, F32_EXACT_TERMS // kk)
    cin = w.shape[1]
    if groups == 1 or cin <= step:
        x32, w32 = x.to(torch.float32), w.to(torch.float32)
        if groups == 1 and cin > step:
            y = sum(F.conv2d(x32[:, i:i + step], w32[:, i:i + step], None, stride,
                             padding).to(torch.float64) for i in range(0, cin, step))
        else:
            y = F.conv2d(x32, w32, None, stride, padding, groups=groups).to(torch.float64)
        if torch.equal(y, torch.round(y)):
            return y.to(torch.int64)
    return F.conv2d(x, w, None, stride, padding, groups=groups).round_().to(torch.int64)


@dataclass
class QLayer:
    """One quantised convolution, SPEC section 2 parameters plus its wiring."""

    name: str
    input: str                    # tensor name of x ("input" or a producing layer's name)
    residual: str | None          # tensor name of the residual, if any
    w: np.ndarray                 # int8 (C_out, C_in, K, K)
    bias: np.ndarray              # int32 (C_out,)
    mult: np.ndarray
    shift: np.ndarray
    kernel: int
    stride: int
    padding: int
    relu: bool
    partitions: int = 1
    base: str = "group"
    thresh: np.ndarray | None = None
    res_mult: np.ndarray | None = None
    res_shift: np.ndarray | None = None
    out_scale: float = 1.0        # float value of one step of this layer's int8 output
    w_scale: np.ndarray | None = None

    @property
    def gated(self):
        return self.thresh is not None


@dataclass
class QuantNet:
    """The whole quantised network; ``forward`` is integer-exact and batched."""

    layers: list[QLayer]
    input_scale: float
    pixel_offset: int
    feature: str                  # tensor fed to the pool + classifier
    fc_w: np.ndarray              # int8 (classes, C)
    fc_b: np.ndarray              # int64 (classes,)
    logit_scale: np.ndarray       # float64 (classes,)
    image_size: int = 32
    in_channels: int = 1
    stats: dict = field(default_factory=dict)

    def quantise_input(self, u8: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> int8 network input (exact: pixel - 128)."""
        return u8.to(torch.int64) - self.pixel_offset

    def _weights(self, L: QLayer):
        """float64 weights (full, and base-only as a grouped conv), cached per layer."""
        cache = self.__dict__.setdefault("_wcache", {})
        if L.name not in cache:
            w = torch.from_numpy(L.w.astype(np.float64))
            wb = None
            if L.gated:
                p, ci = L.partitions, w.shape[1]
                if L.base == "group":  # block diagonal: a grouped conv with 1/p of the work
                    wb = group_base_weight(w, p)
                else:
                    wb = w[:, :ci // p].contiguous()
            cache[L.name] = (w, wb)
        return cache[L.name]

    def _conv_acc(self, x: torch.Tensor, L: QLayer):
        """(acc_b, acc_c) int64, or (acc, None) for a dense layer (see :func:`exact_conv`)."""
        xf = x.to(torch.float64)
        w, wb = self._weights(L)
        full = exact_conv(xf, w, L.stride, L.padding)
        if not L.gated:
            return full, None
        if L.base == "group":
            acc_b = exact_conv(xf, wb, L.stride, L.padding, groups=L.partitions)
        else:
            acc_b = exact_conv(xf[:, :wb.shape[1]], wb, L.stride, L.padding)
        return acc_b, full - acc_b

    def run_layer(self, L: QLayer, x: torch.Tensor, residual: torch.Tensor | None):
        """(y int64 in int8 range, gate int64 0/1) for a batch; SPEC section 2."""
        ch = lambda a, dt=torch.int64: torch.from_numpy(np.asarray(a)).to(dt).view(1, -1, 1, 1)
        acc_b, acc_c = self._conv_acc(x, L)
        if L.gated:
            gate = (acc_b > ch(L.thresh)).to(torch.int64)
            acc = acc_b + gate * acc_c
        else:
            gate = torch.ones_like(acc_b)
            acc = acc_b
        acc = acc + ch(L.bias)
        if L.residual is not None:
            acc = acc + rescale_t(residual, ch(L.res_mult), ch(L.res_shift))
        y = rescale_t(acc, ch(L.mult), ch(L.shift)).clamp(0 if L.relu else -128, 127)
        return y, gate

    def forward(self, x_int8: torch.Tensor, record=None):
        """int8-valued input (N, C, H, W) -> int64 ``logits_acc`` (N, classes).

        ``record``: optional dict filled with name -> (y, gate) of every layer.
        """
        t = {"input": x_int8.to(torch.int64)}
        for L in self.layers:
            res = t[L.residual] if L.residual is not None else None
            y, gate = self.run_layer(L, t[L.input], res)
            t[L.name] = y
            if record is not None:
                record[L.name] = (y, gate)
        return self.classify(t[self.feature])

    def classify(self, feat: torch.Tensor) -> torch.Tensor:
        pooled = feat.to(torch.int64).sum(dim=(2, 3))
        w = torch.from_numpy(self.fc_w.astype(np.int64))
        return (pooled[:, None, :] * w[None]).sum(-1) + torch.from_numpy(self.fc_b)

    def logits(self, logits_acc: torch.Tensor) -> torch.Tensor:
        return logits_acc.to(torch.float64) * torch.from_numpy(self.logit_scale)


def graph(model):
    """(name, conv, bn, input tensor, residual tensor, relu) in execution order."""
    out = [("conv1", model.conv1, model.bn1, "input", None, True)]
    prev = "conv1"
    for sname in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(model, sname)
        if not isinstance(stage, torch.nn.Sequential):
            continue
        for j, b in enumerate(stage):
            pre = f"{sname}.{j}"
            out.append((f"{pre}.conv1", b.conv1, b.bn1, prev, None, True))
            res = prev
            if b.downsample is not None:
                out.append((f"{pre}.downsample.0", b.downsample[0], b.downsample[1], prev, None,
                            False))
                res = f"{pre}.downsample.0"
            out.append((f"{pre}.conv2", b.conv2, b.bn2, f"{pre}.conv1", res, True))
            prev = f"{pre}.conv2"
    return out, prev


@torch.no_grad()
def trace_float(model, x: torch.Tensor) -> dict:
    """Float value of every tensor of the integer graph (eval mode): name -> tensor."""
    g, _ = graph(model)
    t = {"input": x}
    for name, conv, bn, inp, res, relu in g:
        y = bn(conv(t[inp]))
        if res is not None:
            y = y + t[res]
        t[name] = torch.relu(y) if relu else y
    return t


#: default of :func:`equalise`'s ``spread`` in :func:`quantize` (measured on the embedded
#: default: int8 top-1 87.75% without, 90.65% with, float 91.10%, first 2000 test images)
EQUALISE_SPREAD = 2.0


def channel_spaces(model) -> list[list[str]]:
    """Tensors that share one channel space: a layer's output and its residual are added,
    so a residual stream (stem + the blocks of a stage) is one space. Input excluded."""
    g, _ = graph(model)
    parent = {name: name for name, *_ in g}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for name, _, _, _, res, _ in g:
        if res is not None:
            parent[find(name)] = find(res)
    spaces = {}
    for name, *_ in g:
        spaces.setdefault(find(name), []).append(name)
    return list(spaces.values())


@torch.no_grad()
def equalise(model, batches, percentile=99.99, spread=EQUALISE_SPREAD):
    """A copy of ``model`` (same float function) whose activations suit per-tensor int8
    (:func:`equalise_factors` measured on ``batches``, then :func:`apply_equalise`).

    A trained network often keeps a few channels far larger than the rest (a near-constant
    channel of a residual stream that the next layers use as a bias), and one scale per tensor
    then leaves the other channels a handful of levels: gates of the consuming layers flip and
    accuracy drops. For every channel space (:func:`channel_spaces`), a channel whose calibrated
    range ``r_c`` exceeds ``spread`` times the space's median range is divided by
    ``f_c = r_c / (spread * median)`` in every producing BN (weight and bias; ReLU and the
    residual addition commute with a positive per-channel scale) and its consumers' weights
    (convolutions reading the tensor, the classifier) are multiplied by ``f_c``. Gates compare
    pre-BN partial sums, so every gate decision and every output is unchanged in float
    (cross-layer equalisation, Nagel et al. 2019, restricted to shrinking outliers).
    """
    return apply_equalise(model, equalise_factors(model, batches, percentile, spread))


@torch.no_grad()
def equalise_factors(model, batches, percentile=99.99, spread=EQUALISE_SPREAD) -> dict:
    """:func:`equalise`'s per-channel divisors ``f_c`` (float64), measured on ``batches``:
    ``{first tensor of a channel space: f}`` for the spaces with any ``f_c > 1``. Measured in
    eval mode (a model in training mode is copied, so its BN statistics stay as they are)."""
    if model.training:
        import copy
        model = copy.deepcopy(model).eval()
    g, _ = graph(model)
    ranges = {}
    n = 0
    for x in batches:
        t = trace_float(model, x)
        for name, *_ in g:
            v = t[name].abs().transpose(0, 1).flatten(1)          # (C, N*H*W)
            k = max(1, min(v.shape[1], int(math.ceil(v.shape[1] * percentile / 100.0))))
            q = v.kthvalue(k, dim=1).values.double()
            ranges[name] = ranges.get(name, 0) + q
        n += 1
    if n == 0:
        raise SluiceError("quantisation: no calibration images")
    factors = {}
    for space in channel_spaces(model):
        r = torch.stack([ranges[name] / n for name in space]).amax(0)
        med = float(r.median())
        if med <= 0:
            continue
        f = torch.clamp(r / (spread * med), min=1.0)
        if not torch.all(f == 1.0):
            factors[space[0]] = f
    return factors


@torch.no_grad()
def apply_equalise(model, factors: dict):
    """A copy of ``model`` with :func:`equalise_factors`' divisors applied (see
    :func:`equalise`); the same float function."""
    import copy
    model = copy.deepcopy(model).eval()
    g, feature = graph(model)
    for space in channel_spaces(model):
        if space[0] not in factors:
            continue
        f = factors[space[0]]
        members = set(space)
        for name, conv, bn, inp, res, relu in g:
            if name in members:
                bn.weight.div_(f.to(bn.weight.dtype))
                bn.bias.div_(f.to(bn.bias.dtype))
            if inp in members:
                conv.weight.mul_(f.to(conv.weight.dtype).view(1, -1, 1, 1))
        if feature in members:
            model.fc.weight.mul_(f.to(model.fc.weight.dtype).view(1, -1))
    return model


def row_scale(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 scale per output row (dim 0): ``max |w| / 127``, 1 for an all-zero row.
    Used for the convolutions (:func:`weight_scale`) and the classifier, here and in QAT."""
    amax = w.detach().abs().flatten(1).amax(dim=1)
    return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))


def weight_scale(w_f: torch.Tensor, b_f: torch.Tensor, s_in: float,
                 s_res: float | None) -> torch.Tensor:
    """Per-output-channel weight scale of a folded convolution (float64, shape (C_out,)).

    Symmetric: ``max |w_f| / 127``. SPEC: ``|acc| < 2^31`` for every int8 input. Bias and
    residual grow in accumulator units as ``s_w`` shrinks (near-dead channels, BN scale ~0), so
    ``s_w`` is floored where they would not fit; such a channel just uses fewer weight levels.
    Shared by :func:`quantize` and the quantisation-aware fine-tuning (``qat.py``).
    """
    w_f, b_f = w_f.detach().double(), b_f.detach().double()
    s_w = row_scale(w_f)
    budget = 0.9 * (INT32_MAX - PROD_MAX * w_f.shape[1] * w_f.shape[2] * w_f.shape[3])
    extra = b_f.abs() + (128.0 * s_res if s_res is not None else 0.0)
    return torch.maximum(s_w, extra / (s_in * budget))


def activation_scales(ranges: dict, input_scale: float) -> dict:
    """Per-tensor scale (float value of one int8 step) from calibrated ranges."""
    scales = {"input": float(input_scale)}
    for name, r in ranges.items():
        if name != "input":
            scales[name] = (r if r > 0 else 1.0) / 127.0
    return scales


def _fold(conv, bn):
    """(folded weight float64, folded bias float64, s_bn float64)."""
    w = conv.weight.detach().to(torch.float64)
    s_bn = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    b_conv = (conv.bias.detach().double() if conv.bias is not None
              else torch.zeros(w.shape[0], dtype=torch.float64))
    b = bn.bias.detach().double() + (b_conv - bn.running_mean.double()) * s_bn
    return w * s_bn.view(-1, 1, 1, 1), b, s_bn, b_conv


@torch.no_grad()
def calibrate(model, batches, percentile=99.99) -> dict:
    """Per-tensor activation ranges (mean over batches of the |x| percentile)."""
    model.eval()
    sums, n = {}, 0
    for x in batches:
        t = trace_float(model, x)
        for name, v in t.items():
            a = v.abs().flatten()
            k = max(1, min(a.numel(), int(math.ceil(a.numel() * percentile / 100.0))))
            q = float(a.kthvalue(k).values) if percentile < 100 else float(a.max())
            sums[name] = sums.get(name, 0.0) + q
        n += 1
    if n == 0:
        raise SluiceError("quantisation: no calibration images")
    return {k: v / n for k, v in sums.items()}


@torch.no_grad()
def quantize(model, calib_batches, input_scale: float, pixel_offset: int = 128,
             percentile: float = 99.99, image_size: int = 32,
             spread: float | None = EQUALISE_SPREAD, calibration: dict | None = None
             ) -> QuantNet:
    """Quantise a trained (eval-mode) ResNet; ``calib_batches``: a list of normalised float
    batches. ``spread``: equalise channel ranges first (:func:`equalise`; None: do not).

    The float forward passes over the calibration images are the only step whose result
    depends on the machine (the float32 convolution kernels' rounding moves the measured
    ranges in their last bits, and with them every requantisation multiplier); everything
    after them is exact float64 and integer arithmetic. ``calibration``: a recorded
    :func:`calibration_record` (equalisation divisors and activation ranges, checked by
    :func:`read_calibration`) used instead of measuring them, which makes the integer
    network the same on every machine; ``calib_batches`` is then not read."""
    from .gated import is_gated as _is_gated
    model.eval()
    if calibration is not None:
        factors = calibration["equalise"]
    else:
        calib_batches = list(calib_batches)
        factors = (equalise_factors(model, calib_batches, percentile, spread)
                   if spread is not None else {})
    if spread is not None or factors:
        model = apply_equalise(model, factors)
    for _, m in model.named_modules():
        if _is_gated(m) and m.shuffle:
            raise SluiceError("quantisation: channel shuffle is not expressible in SPEC's "
                              "contiguous base sets; train without --shuffle")
    ranges = (dict(calibration["ranges"]) if calibration is not None
              else calibrate(model, calib_batches, percentile))
    g, feature = graph(model)
    scales = activation_scales(ranges, input_scale)
    layers = []
    for name, conv, bn, inp, res, relu in g:
        k = conv.kernel_size[0]
        if conv.kernel_size[0] != conv.kernel_size[1] or conv.groups != 1 or \
                conv.dilation != (1, 1) or conv.stride[0] != conv.stride[1] or \
                conv.padding[0] != conv.padding[1]:
            raise SluiceError(f"quantisation: layer {name}: only square, ungrouped, "
                              f"undilated convolutions are supported")
        w_f, b_f, s_bn, b_conv = _fold(conv, bn)
        s_w = weight_scale(w_f, b_f, scales[inp], scales[res] if res is not None else None)
        w_q = torch.round(w_f / s_w.view(-1, 1, 1, 1)).clamp(-127, 127)
        s_acc = scales[inp] * s_w                                 # float64 per channel
        bias = torch.round(b_f / s_acc)
        if bias.abs().max() > INT32_MAX:
            raise SluiceError(f"quantisation: layer {name}: folded bias does not fit int32")
        mult, shift = mult_shift((s_acc / scales[name]).numpy(), f"layer {name}")
        L = QLayer(name=name, input=inp, residual=res, w=w_q.numpy().astype(np.int8),
                   bias=bias.numpy().astype(np.int32), mult=mult, shift=shift, kernel=k,
                   stride=conv.stride[0], padding=conv.padding[0], relu=relu,
                   out_scale=scales[name], w_scale=s_w.numpy())
        if is_gated(conv):
            if torch.any(s_bn <= 0):
                bad = int(torch.nonzero(s_bn <= 0)[0])
                raise SluiceError(f"quantisation: layer {name}: BN scale of output channel {bad} "
                                  f"is not positive, so the gate cannot be expressed as "
                                  f"acc_b > thresh (train with model.constrain())")
            T = conv.threshold_float().double()
            th = torch.floor(s_bn * (T - b_conv) / s_acc).clamp(INT32_MIN, INT32_MAX)
            L.thresh = th.numpy().astype(np.int32)
            L.partitions, L.base = conv.partitions, conv.base
        if res is not None:
            L.res_mult, L.res_shift = mult_shift((scales[res] / s_acc).numpy(),
                                                 f"layer {name} residual")
        layers.append(L)
    fc = model.fc
    wfc = fc.weight.detach().double()
    s_wfc = row_scale(wfc)
    fc_w = torch.round(wfc / s_wfc[:, None]).clamp(-127, 127)
    # pooled sum over the H*W positions of the final map; scale of one unit of logits_acc
    feat_hw = _final_hw(layers, image_size)
    unit = s_wfc * scales[feature] / feat_hw
    fc_b = torch.round(fc.bias.detach().double() / unit) if fc.bias is not None else \
        torch.zeros_like(unit)
    return QuantNet(layers=layers, input_scale=float(input_scale), pixel_offset=pixel_offset,
                    feature=feature, fc_w=fc_w.numpy().astype(np.int8),
                    fc_b=fc_b.numpy().astype(np.int64), logit_scale=unit.numpy(),
                    image_size=image_size, in_channels=int(model.conv1.in_channels),
                    stats={"calibration_ranges": ranges, "percentile": percentile,
                           "equalise": factors, "spread": spread})


def _final_hw(layers, size: int) -> int:
    """Number of positions of the final feature map for a ``size`` x ``size`` input."""
    sizes = {"input": size}
    for L in layers:
        sizes[L.name] = (sizes[L.input] + 2 * L.padding - L.kernel) // L.stride + 1
    return sizes[layers[-1].name] ** 2


def quantize_checkpoint(model, ckpt, *, data_dir=None, calib=1000, percentile=99.99,
                        dataset=None, path=None) -> QuantNet:
    """Quantise a loaded checkpoint, calibrating on its first ``calib`` training images.

    Deterministic (no augmentation, fixed images), so ``sluice eval --int8`` and
    ``sluice export`` build the same integer network. When the checkpoint file ``path`` has a
    calibration record beside it (:func:`calibration_path`) for these settings (data set,
    ``calib``, ``percentile``, the equalisation spread), its recorded ranges are used instead
    of the float passes, so the integer network is the same on every machine
    (:func:`quantize`); ``qnet.stats["calibration"]`` names the record, or None.
    """
    from .data import load_dataset
    name = dataset or ckpt["data"]["dataset"]
    ds = load_dataset(name, "train", data_dir)
    settings = calibration_settings(name, calib, percentile)
    record = rpath = None
    digest = weights_digest(model)
    if path is not None and (rpath := calibration_path(path)).is_file():
        record = read_calibration(rpath, model, digest)
        if record["settings"] != settings:
            record = None  # recorded for other settings: measure these
    batches = calibration_batches(ds, calib) if record is None else []
    qnet = quantize(model, batches, input_scale=ds.scale, pixel_offset=128,
                    percentile=percentile, image_size=int(ds.images.shape[-1]),
                    calibration=record)
    qnet.stats["calibration"] = str(rpath) if record is not None else None
    qnet.stats["settings"] = settings
    qnet.stats["weights"] = digest
    return qnet


#: the format of a calibration record (``CKPT.calib.json`` beside a checkpoint)
CALIBRATION_FORMAT = "sluice.calibration/1"


def calibration_path(checkpoint) -> Path:
    """Where a checkpoint's calibration record lives: ``X.pt`` -> ``X.calib.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".calib.json")


def calibration_settings(dataset: str, calib: int, percentile: float) -> dict:
    """What a calibration record was measured with; a record is used only for the same."""
    return {"dataset": dataset, "calib": int(calib), "percentile": float(percentile),
            "spread": EQUALISE_SPREAD}


def weights_digest(model) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes, bytes): which
    weights a calibration record belongs to."""
    import hashlib
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def calibration_record(qnet: QuantNet, settings: dict, weights: str) -> dict:
    """The machine-dependent part of a quantisation (:func:`quantize`): the equalisation
    divisors and the activation ranges, as JSON (floats written exactly), for the model whose
    :func:`weights_digest` is ``weights``."""
    return {"format": CALIBRATION_FORMAT, "settings": settings, "weights": weights,
            "equalise": {k: [float(v) for v in f] for k, f in qnet.stats["equalise"].items()},
            "ranges": {k: float(v) for k, v in qnet.stats["calibration_ranges"].items()}}


def calibration_json(record: dict) -> str:
    """:func:`calibration_record` as JSON text, each divisor vector on one line."""
    import json
    import re
    text = json.dumps(record, indent=1)
    return re.sub(r"\[\s+([^\[\]]*?)\s+\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def read_calibration(path, model, digest: str | None = None) -> dict:
    """A calibration record checked against ``model`` (recorded for its weights, every
    tensor's range a non-negative finite number, every divisor vector one per channel of its
    space, each at least 1); one-line errors naming the file and field. The divisors come
    back as float64 tensors. ``digest``: the model's :func:`weights_digest` where the caller
    has it already."""
    import json
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SluiceError(f"{path}: not a readable calibration record "
                          f"({type(e).__name__})") from None
    check_format(rec, CALIBRATION_FORMAT, path)
    for key in ("settings", "equalise", "ranges"):
        if not isinstance(rec.get(key), dict):
            raise SluiceError(f"{path}: field {key!r} missing or not an object")
    if rec.get("weights") != (digest or weights_digest(model)):
        raise SluiceError(f"{path}: field 'weights' does not match the checkpoint's weights "
                          f"(a record of another checkpoint: remove it, and copy the "
                          f"calibration.json of an export of this one in its place)")
    g, _ = graph(model)
    names = ["input"] + [name for name, *_ in g]
    ranges = rec["ranges"]
    for name in names:
        r = ranges.get(name)
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r) \
                or r < 0:
            raise SluiceError(f"{path}: field 'ranges.{name}' is {r!r}, expected a "
                              f"non-negative number (a range per tensor of the network)")
    if extra := sorted(set(ranges) - set(names)):
        raise SluiceError(f"{path}: field 'ranges.{extra[0]}': no such tensor in the network")
    width = {name: int(bn.num_features) for name, conv, bn, *_ in g}
    spaces = {space[0]: space for space in channel_spaces(model)}
    factors = {}
    for key, f in rec["equalise"].items():
        if key not in spaces:
            raise SluiceError(f"{path}: field 'equalise.{key}': not the first tensor of a "
                              f"channel space of the network")
        ok = isinstance(f, list) and len(f) == width[key] and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 1.0 for v in f)
        if not ok:
            raise SluiceError(f"{path}: field 'equalise.{key}': expected {width[key]} "
                              f"numbers of at least 1 (one per channel)")
        factors[key] = torch.tensor(f, dtype=torch.float64)
    return {**rec, "equalise": factors}


def calibration_batches(train_set, calib=1000) -> list:
    """Normalised batches of the first ``calib`` images of the (loaded) training set: the
    calibration data of :func:`quantize_checkpoint` (and of quantisation-aware fine-tuning, so
    that the scales it trains with are the ones the export computes)."""
    if calib < 1:
        raise SluiceError(f"--calib must be >= 1, got {calib}")
    u8 = train_set.images[:calib]
    return [train_set.normalise(u8[i:i + 250]) for i in range(0, len(u8), 250)]
