"""Layer files (``*.layer.npz``) and result files (``*.result.npz``): SPEC sections 4 and 5.

This module holds the one reader and the one writer of each format. Every part of Sluice
(exporter, integer reference, testbenches, board host) goes through it. Readers validate
everything and raise :class:`LayerFileError`, whose message names the file and the field.
Writers validate too and write atomically (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field

import numpy as np

from sluice.errors import SluiceError
from sluice.fileio import atomic_write_bytes
from sluice.hw.params import PROD_MAX

LAYER_FORMAT = "sluice.layer/1"
RESULT_FORMAT = "sluice.result/1"
BASE_MODES = ("group", "first")

INT32_MAX = 2**31 - 1
MAX_SHIFT = 62

# name -> dtype of the per-layer arrays (SPEC section 2 and 4)
_ARRAY_DTYPES = {
    "x": np.int8,
    "w": np.int8,
    "bias": np.int32,
    "thresh": np.int32,
    "mult": np.int32,
    "shift": np.int32,
    "residual": np.int8,
    "res_mult": np.int32,
    "res_shift": np.int32,
    "y_ref": np.int8,
    "gate_ref": np.uint8,
}
_REQUIRED_ARRAYS = ("x", "w", "bias", "mult", "shift")
_RESIDUAL_ARRAYS = ("residual", "res_mult", "res_shift")
_INT_SCALARS = ("kernel", "stride", "padding", "partitions")
_STR_SCALARS = ("format", "base", "name")


class LayerFileError(SluiceError):
    """A layer or result file (or an in-memory layer) breaks the SPEC; names file and field."""


def _fail(source, fld, msg):
    raise LayerFileError(f"{source}: field '{fld}': {msg}")


@dataclass
class Layer:
    """One gated (or dense) convolution layer with integer parameters, SPEC section 2."""

    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    kernel: int
    stride: int = 1
    padding: int = 0
    partitions: int = 1
    base: str = "group"
    relu: bool = True
    name: str = "layer"
    thresh: np.ndarray | None = None
    residual: np.ndarray | None = None
    res_mult: np.ndarray | None = None
    res_shift: np.ndarray | None = None
    y_ref: np.ndarray | None = None
    gate_ref: np.ndarray | None = None
    #: the host's column order for the gated run: layer output channel per job column before
    #: padding (a permutation that keeps every channel in its base group), or None (as
    #: exported). A scheduling choice of the network run (manifest field ``column_order``,
    #: ``sluice column-order``), not part of the layer file: results are the same either way.
    column_order: np.ndarray | None = None
    #: images stacked along the height (``sim.batch.stack_layer``): ``(step, rows, h_in)``,
    #: output rows per image with the rows between two images, the image's own output rows
    #: and its own input rows; the host has the accelerator skip the rows between them
    #: (descriptor IMG_ROWS, IMG_GAP, ``sim.host.job_rows``). Not part of the layer file.
    stack: tuple[int, int, int] | None = None

    @property
    def c_in(self) -> int:
        return int(self.x.shape[0])

    @property
    def c_out(self) -> int:
        return int(self.w.shape[0])

    @property
    def h_in(self) -> int:
        return int(self.x.shape[1])

    @property
    def w_in(self) -> int:
        return int(self.x.shape[2])

    @property
    def h_out(self) -> int:
        return (self.h_in + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def w_out(self) -> int:
        return (self.w_in + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.c_out, self.h_out, self.w_out)

    @property
    def gated(self) -> bool:
        return self.thresh is not None

    @property
    def has_residual(self) -> bool:
        return self.residual is not None

    def replace(self, **changes) -> "Layer":
        return dataclasses.replace(self, **changes)

    def validate(self, source: str = "<layer>") -> None:
        validate_layer(self, source)


def check_column_order(layer: Layer, order, source: str = "<layer>") -> np.ndarray:
    """``order`` as an int array if it is a valid column order for ``layer`` (a permutation of
    its output channels that keeps each in its base group: ``C_out / p`` channels each with
    ``base`` "group"); else LayerFileError naming ``source`` and the field."""
    fld = "column_order"
    if not layer.gated:
        _fail(source, fld, "only a gated layer has one (its conditional phase)")
    try:
        a = np.asarray(order)
    except (TypeError, ValueError):
        _fail(source, fld, "not a list of integers")
    if a.ndim != 1 or a.dtype.kind not in "iu" or len(a) != layer.c_out:
        _fail(source, fld, f"expected {layer.c_out} integers (one per output channel)")
    if sorted(a.tolist()) != list(range(layer.c_out)):
        _fail(source, fld, f"not a permutation of 0..{layer.c_out - 1}")
    groups = layer.partitions if layer.base == "group" else 1
    gc = layer.c_out // groups
    for g in range(groups):
        moved = [int(c) for c in a[g * gc:(g + 1) * gc] if not g * gc <= c < (g + 1) * gc]
        if moved:
            _fail(source, fld, f"channel {moved[0]} leaves its base group "
                               f"({g * gc}..{(g + 1) * gc - 1} at those columns)")
    return a.astype(np.int64)


def overflow_bound(layer: Layer) -> int:
    """Worst-case |acc| over all int8 inputs: products, bias and the residual term (SPEC 2)."""
    worst = PROD_MAX * layer.c_in * layer.kernel * layer.kernel
    worst += int(np.abs(layer.bias.astype(np.int64)).max(initial=0))
    if layer.residual is not None:
        # |rescale(r, M, s)| <= (128 * M + 2^(s-1)) >> s for r in [-128, 127]
        m = layer.res_mult.astype(np.int64)
        s = layer.res_shift.astype(np.int64)
        rnd = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
        worst += int(((128 * m + rnd) >> s).max(initial=0))
    return worst


def validate_layer(layer: Layer, source: str = "<layer>") -> None:
    """Check every SPEC rule; raise LayerFileError naming ``source`` and the field."""
    for name, dtype in _ARRAY_DTYPES.items():
        arr = getattr(layer, name)
        if arr is None:
            if name in _REQUIRED_ARRAYS:
                _fail(source, name, "missing")
            continue
        if not isinstance(arr, np.ndarray):
            _fail(source, name, f"expected a numpy array, got {type(arr).__name__}")
        if arr.dtype != dtype:
            _fail(source, name, f"dtype is {arr.dtype}, expected {np.dtype(dtype).name}")

    for name in _INT_SCALARS:
        v = getattr(layer, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            _fail(source, name, f"expected an integer, got {v!r}")
    if not isinstance(layer.relu, (bool, np.bool_)):
        _fail(source, "relu", f"expected a bool, got {layer.relu!r}")
    if not isinstance(layer.name, str) or not layer.name:
        _fail(source, "name", "expected a non-empty string")
    if layer.base not in BASE_MODES:
        _fail(source, "base", f"is {layer.base!r}, expected one of {', '.join(BASE_MODES)}")

    if layer.x.ndim != 3:
        _fail(source, "x", f"shape {layer.x.shape} is not (C_in, H, W)")
    if layer.w.ndim != 4:
        _fail(source, "w", f"shape {layer.w.shape} is not (C_out, C_in, K, K)")
    k = layer.kernel
    if k < 1:
        _fail(source, "kernel", f"is {k}, must be >= 1")
    if layer.stride < 1:
        _fail(source, "stride", f"is {layer.stride}, must be >= 1")
    if layer.padding < 0:
        _fail(source, "padding", f"is {layer.padding}, must be >= 0")
    if layer.x.shape[0] < 1 or layer.x.shape[1] < 1 or layer.x.shape[2] < 1:
        _fail(source, "x", f"shape {layer.x.shape} has a zero dimension")
    if layer.w.shape[0] < 1:
        _fail(source, "w", "has zero output channels")
    if layer.w.shape[1] != layer.c_in:
        _fail(source, "w", f"has {layer.w.shape[1]} input channels but x has {layer.c_in}")
    if layer.w.shape[2:] != (k, k):
        _fail(source, "w", f"kernel dimensions {layer.w.shape[2:]} do not match kernel={k}")
    if layer.h_out < 1 or layer.w_out < 1:
        _fail(source, "x", f"map {layer.h_in}x{layer.w_in} with padding {layer.padding} "
                           f"is smaller than kernel {k}")
    if int(layer.w.min(initial=0)) < -127:
        _fail(source, "w", "holds -128; weights must lie in [-127, 127]")

    c_out = layer.c_out
    for name in ("bias", "mult", "shift", "thresh", "res_mult", "res_shift"):
        arr = getattr(layer, name)
        if arr is not None and arr.shape != (c_out,):
            _fail(source, name, f"shape {arr.shape}, expected ({c_out},) (one per output channel)")
    if int(layer.mult.min()) < 0:
        _fail(source, "mult", "is negative; must lie in [0, 2^31)")
    for name in ("shift", "res_shift"):
        arr = getattr(layer, name)
        if arr is not None and (int(arr.min()) < 0 or int(arr.max()) > MAX_SHIFT):
            _fail(source, name, f"must lie in [0, {MAX_SHIFT}]")

    present = [n for n in _RESIDUAL_ARRAYS if getattr(layer, n) is not None]
    if present and len(present) != len(_RESIDUAL_ARRAYS):
        missing = [n for n in _RESIDUAL_ARRAYS if getattr(layer, n) is None][0]
        _fail(source, missing, f"missing while {present[0]} is present")
    if layer.res_mult is not None and int(layer.res_mult.min()) < 0:
        _fail(source, "res_mult", "is negative; must lie in [0, 2^31)")
    for name in ("residual", "y_ref", "gate_ref"):
        arr = getattr(layer, name)
        if arr is not None and arr.shape != layer.out_shape:
            _fail(source, name,
                  f"shape {arr.shape}, expected {layer.out_shape} (C_out, H_out, W_out)")
    if layer.gate_ref is not None and int(layer.gate_ref.max(initial=0)) > 1:
        _fail(source, "gate_ref", "holds values other than 0 and 1")

    p = layer.partitions
    if p < 1:
        _fail(source, "partitions", f"is {p}, must be >= 1")
    if layer.c_in % p:
        _fail(source, "partitions", f"{p} does not divide C_in = {layer.c_in}")
    if c_out % p:
        _fail(source, "partitions", f"{p} does not divide C_out = {c_out}")

    bound = overflow_bound(layer)
    if bound > INT32_MAX:
        _fail(source, "w", f"layer '{layer.name}' could overflow int32: worst-case accumulator "
                           f"{bound} > {INT32_MAX}")


def _scalar(v):
    return np.asarray(v)


def _atomic_savez(path, arrays: dict) -> None:
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))


def write_layer(path, layer: Layer) -> None:
    """Validate ``layer`` and write it to ``path`` atomically."""
    validate_layer(layer, str(path))
    arrays = {"format": _scalar(LAYER_FORMAT)}
    for name in _ARRAY_DTYPES:
        arr = getattr(layer, name)
        if arr is not None:
            arrays[name] = arr
    for name in _INT_SCALARS:
        arrays[name] = _scalar(int(getattr(layer, name)))
    arrays["base"] = _scalar(layer.base)
    arrays["relu"] = _scalar(bool(layer.relu))
    arrays["name"] = _scalar(layer.name)
    _atomic_savez(path, arrays)


def _zip_magic(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _load_npz(path) -> dict:
    source = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise LayerFileError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise LayerFileError(f"{source}: is a directory, not an .npz file") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        if not _zip_magic(path):  # not even the start of a zip archive: say what it is not
            raise LayerFileError(f"{source}: not an .npz archive (a layer or result file is a "
                                 "zip archive of NumPy arrays)") from None
        raise LayerFileError(f"{source}: not a readable .npz archive (truncated or corrupt?): "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                             .rstrip(": ")) from None


def _get_scalar(data, source, name, kind):
    if name not in data:
        _fail(source, name, "missing")
    arr = data[name]
    if arr.ndim != 0:
        _fail(source, name, f"expected a scalar (0-d array), got shape {arr.shape}")
    if kind == "int":
        if arr.dtype.kind not in "iu":
            _fail(source, name, f"dtype is {arr.dtype}, expected an integer")
        return int(arr)
    if kind == "bool":
        if arr.dtype.kind != "b":
            _fail(source, name, f"dtype is {arr.dtype}, expected bool")
        return bool(arr)
    if arr.dtype.kind != "U":
        _fail(source, name, f"dtype is {arr.dtype}, expected a string")
    return str(arr)


def _check_format(data, source, expected):
    fmt = _get_scalar(data, source, "format", "str")
    if fmt != expected:
        _fail(source, "format", f"is {fmt!r}, expected {expected!r}")


def read_layer(path) -> Layer:
    """Read and fully validate a layer file."""
    source = str(path)
    data = _load_npz(path)
    _check_format(data, source, LAYER_FORMAT)
    kw = {}
    for name in _REQUIRED_ARRAYS:
        if name not in data:
            _fail(source, name, "missing")
    for name in _ARRAY_DTYPES:
        if name in data:
            kw[name] = data[name]
    for name in _INT_SCALARS:
        kw[name] = _get_scalar(data, source, name, "int")
    kw["base"] = _get_scalar(data, source, "base", "str")
    kw["name"] = _get_scalar(data, source, "name", "str")
    kw["relu"] = _get_scalar(data, source, "relu", "bool")
    layer = Layer(**kw)
    validate_layer(layer, source)
    return layer


@dataclass
class Result:
    """Output of any runner of a layer (SPEC section 5)."""

    y: np.ndarray
    gate: np.ndarray
    runner: str
    cycles: int = 0
    rows: int = 0
    cols: int = 0
    counters: dict[str, int] = field(default_factory=dict)


_RESULT_CORE = ("format", "y", "gate", "cycles", "runner", "rows", "cols")


def validate_result(result: Result, source: str = "<result>") -> None:
    if not isinstance(result.y, np.ndarray) or result.y.dtype != np.int8 or result.y.ndim != 3:
        _fail(source, "y", "expected an int8 array of shape (C_out, H_out, W_out)")
    if not isinstance(result.gate, np.ndarray) or result.gate.dtype != np.uint8:
        _fail(source, "gate", "expected a uint8 array")
    if result.gate.shape != result.y.shape:
        _fail(source, "gate", f"shape {result.gate.shape} differs from y's {result.y.shape}")
    if int(result.gate.max(initial=0)) > 1:
        _fail(source, "gate", "holds values other than 0 and 1")
    if not isinstance(result.runner, str) or not result.runner:
        _fail(source, "runner", "expected a non-empty string")
    for name in ("cycles", "rows", "cols"):
        v = getattr(result, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            _fail(source, name, f"expected a non-negative integer, got {v!r}")
    for name, v in result.counters.items():
        if name in _RESULT_CORE:
            _fail(source, name, "counter name clashes with a core field")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            _fail(source, name, f"counter must be an integer, got {v!r}")


def write_result(path, result: Result) -> None:
    validate_result(result, str(path))
    arrays = {
        "format": _scalar(RESULT_FORMAT),
        "y": result.y,
        "gate": result.gate,
        "cycles": np.asarray(result.cycles, dtype=np.int64),
        "runner": _scalar(result.runner),
        "rows": _scalar(int(result.rows)),
        "cols": _scalar(int(result.cols)),
    }
    for name, v in result.counters.items():
        arrays[name] = np.asarray(int(v), dtype=np.int64)
    _atomic_savez(path, arrays)


def read_result(path) -> Result:
    source = str(path)
    data = _load_npz(path)
    _check_format(data, source, RESULT_FORMAT)
    for name in ("y", "gate"):
        if name not in data:
            _fail(source, name, "missing")
    counters = {}
    for name, arr in data.items():
        if name in _RESULT_CORE:
            continue
        if arr.ndim != 0 or arr.dtype.kind not in "iu":
            _fail(source, name, "extra fields must be integer scalars (performance counters)")
        counters[name] = int(arr)
    result = Result(
        y=data["y"], gate=data["gate"],
        cycles=_get_scalar(data, source, "cycles", "int"),
        runner=_get_scalar(data, source, "runner", "str"),
        rows=_get_scalar(data, source, "rows", "int"),
        cols=_get_scalar(data, source, "cols", "int"),
        counters=counters,
    )
    validate_result(result, source)
    return result
