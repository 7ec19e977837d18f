"""Random valid layers, for users and tests (``sluice make-layer``).

Thresholds are set per output channel at the quantile of the base partial sums that gives the
requested gate rate, and the requantisation maps the accumulator spread onto the int8 range, so
outputs exercise the whole datapath rather than saturating.
"""

from __future__ import annotations

import numpy as np

from sluice.errors import SluiceError
from sluice.hw.params import PROD_MAX
from sluice.model.layerfile import BASE_MODES, Layer
from sluice.model.reference import partial_sums, run_reference


def _mult_shift_for(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mult, shift), mult in [2^30, 2^31), with ``mult / 2^shift ~ scale``."""
    mult = np.zeros(scale.shape, np.int32)
    shift = np.zeros(scale.shape, np.int32)
    for o, s in enumerate(scale):
        m, e = np.frexp(s)  # s = m * 2^e, m in [0.5, 1)
        mi = int(round(m * 2**31))
        sh = 31 - int(e)
        if mi == 2**31:
            mi //= 2
            sh -= 1
        sh = min(max(sh, 0), 62)
        mult[o], shift[o] = mi, sh
    return mult, shift


def make_layer(*, c_in=8, c_out=8, size=(6, 6), kernel=3, stride=1, padding=1, partitions=4,
               base="group", gate_rate=0.3, residual=False, relu=True, dense=False,
               seed=0, name="random") -> Layer:
    """A random layer per SPEC section 2 with ``y_ref``/``gate_ref`` filled in."""
    if base not in BASE_MODES:
        raise SluiceError(f"--base: {base!r} is not one of {', '.join(BASE_MODES)}")
    if not 0.0 <= gate_rate <= 1.0:
        raise SluiceError(f"--gate-rate: {gate_rate} is not in [0, 1]")
    if c_in < 1 or c_out < 1 or size[0] < 1 or size[1] < 1:
        raise SluiceError("--cin/--cout/--size: every dimension must be >= 1")
    if dense:
        partitions = 1
    if c_in % partitions or c_out % partitions:
        raise SluiceError(f"--partitions: {partitions} must divide --cin {c_in} and --cout {c_out}")
    h_out = (size[0] + 2 * padding - kernel) // stride + 1
    w_out = (size[1] + 2 * padding - kernel) // stride + 1
    if h_out < 1 or w_out < 1:
        raise SluiceError(f"--size: {size[0]}x{size[1]} with padding {padding} is smaller than "
                          f"kernel {kernel}")
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (c_in, *size), dtype=np.int8)
    w = rng.integers(-127, 128, (c_out, c_in, kernel, kernel), dtype=np.int8)
    ones = np.ones(c_out, np.int32)
    layer = Layer(x=x, w=w, bias=np.zeros(c_out, np.int32), mult=ones, shift=0 * ones,
                  kernel=kernel, stride=stride, padding=padding, partitions=partitions,
                  base=base, relu=relu, name=name)
    acc_b, acc_c = partial_sums(layer)
    spread = np.sqrt(((acc_b + acc_c).reshape(c_out, -1).astype(np.float64) ** 2).mean(1)) + 1.0
    bias = (rng.normal(0, 0.3, c_out) * spread).astype(np.int32)
    if not dense:
        flat = acc_b.reshape(c_out, -1)
        if gate_rate >= 1.0:
            thresh = flat.min(1) - 1
        elif gate_rate <= 0.0:
            thresh = flat.max(1)
        else:
            thresh = np.quantile(flat, 1.0 - gate_rate, axis=1, method="lower")
        thresh = np.clip(thresh, -(2**31), 2**31 - 1).astype(np.int32)
    else:
        thresh = None
    kw = {}
    if residual:
        r_mult, r_shift = _mult_shift_for(rng.uniform(0.5, 2.0, c_out) * spread / 128.0)
        kw = dict(residual=rng.integers(-128, 128, (c_out, h_out, w_out), dtype=np.int8),
                  res_mult=r_mult, res_shift=r_shift)
    mult, shift = _mult_shift_for(60.0 / (2.0 * spread))
    layer = layer.replace(bias=bias, thresh=thresh, mult=mult, shift=shift, **kw)
    y, gate = run_reference(layer)
    return layer.replace(y_ref=y, gate_ref=gate)


def extreme_sums_layer(c_in: int, *, seed: int = 4, name: str = "extreme_sums") -> Layer:
    """A gated 1 x 1 layer (4 output channels, 3 x 3 map, 2 partitions) whose sums reach both
    ends of what ``c_in`` products can give: at pixels (0, 0) and (1, 2) every activation is
    -128, channel 0's weights are -127 (+16,256 a product) and channel 1's 127 (-16,256);
    channel 0's gate is on exactly where its base sum is the largest possible. The
    requantisation maps the largest sum, ``c_in * 16,256``, to between 32 and 64 (no ReLU), so a
    wrapped sum shows in the outputs. With ``c_in`` = an instance's ``wgt_depth`` it is the
    longest pass the instance accepts (``HwParams.sum_bits``)."""
    if c_in < 2 or c_in % 2:
        raise SluiceError(f"--cin: {c_in} must be even for --extreme-sums (two partitions)")
    layer = make_layer(c_in=c_in, c_out=4, size=(3, 3), kernel=1, padding=0, partitions=2,
                       gate_rate=0.5, seed=seed, name=name)
    x, w = layer.x.copy(), layer.w.copy()
    x[:, 0, 0] = x[:, 1, 2] = -128
    w[0], w[1] = -127, 127
    ones = np.ones(4, np.int32)
    thresh = layer.thresh.copy()
    thresh[0] = (c_in // 2) * PROD_MAX - 1  # (each product's magnitude at those pixels)
    top = (c_in * PROD_MAX).bit_length()  # the largest sum is below 2^top
    layer = layer.replace(x=x, w=w, bias=0 * ones, thresh=thresh, mult=ones << 30,
                          shift=ones * (30 + top - 6), relu=False)
    y, gate = run_reference(layer)
    return layer.replace(y_ref=y, gate_ref=gate)
