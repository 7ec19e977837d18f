"""Whole-network integer forward pass from an export directory, using only the reference.

Every convolution runs through :func:`sluice.model.reference.run_reference` on the layer file
with ``x`` (and ``residual``) replaced by the tensors the manifest wires in; the host part
(global sum pool + integer classifier) follows ``manifest.json``. The result must equal the
quantised PyTorch model's ``logits_acc`` bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sluice.errors import SluiceError, check_format
from sluice.model.layerfile import check_column_order, read_layer
from sluice.model.reference import run_reference

MODEL_FORMAT = "sluice.model/1"
CLASSIFIER_FORMAT = "sluice.classifier/1"


class IntNet:
    """An exported network loaded from DIR."""

    def __init__(self, export_dir):
        self.dir = Path(export_dir)
        mpath = self.dir / "manifest.json"
        try:
            self.manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise SluiceError(f"{mpath}: missing (not a `sluice export` directory)") from None
        except ValueError as e:
            raise SluiceError(f"{mpath}: not valid JSON: {e}") from None
        check_format(self.manifest, MODEL_FORMAT, mpath)
        for key in ("layers", "input", "output", "classifier"):
            if key not in self.manifest:
                raise SluiceError(f"{mpath}: field {key!r} missing")
        self.layers = []
        known = {"input"}
        for e in self.manifest["layers"]:
            for key in ("name", "file", "input"):
                if key not in e:
                    raise SluiceError(f"{mpath}: layer entry {e.get('index')}: field {key!r} "
                                      f"missing")
            for src in (e["input"], e.get("residual")):
                if src is not None and src not in known:
                    raise SluiceError(f"{mpath}: layer {e['name']}: tensor {src!r} is used "
                                      f"before any layer produces it")
            layer = read_layer(self.dir / e["file"])
            if layer.name != e["name"]:
                raise SluiceError(f"{self.dir / e['file']}: field 'name' is {layer.name!r}, "
                                  f"manifest says {e['name']!r}")
            if e.get("column_order") is not None:  # the host's column order (column-order)
                layer = layer.replace(column_order=check_column_order(
                    layer, e["column_order"], f"{mpath}: layer {e['name']}"))
            self.layers.append((e, layer))
            known.add(e["name"])
        cpath = self.dir / self.manifest["classifier"]["file"]
        try:
            with np.load(cpath, allow_pickle=False) as z:
                c = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise SluiceError(f"{cpath}: not a readable classifier file: {e}") from None
        if str(c.get("format")) != CLASSIFIER_FORMAT:
            raise SluiceError(f"{cpath}: field 'format' is not {CLASSIFIER_FORMAT!r}")
        for key, dt in (("fc_w", np.int8), ("fc_b", np.int64), ("logit_scale", np.float64)):
            if key not in c or c[key].dtype != dt:
                raise SluiceError(f"{cpath}: field {key!r} missing or not {np.dtype(dt).name}")
        self.fc_w, self.fc_b, self.logit_scale = c["fc_w"], c["fc_b"], c["logit_scale"]

    def quantise_input(self, u8: np.ndarray) -> np.ndarray:
        return (np.asarray(u8, np.int16) - self.manifest["input"]["pixel_offset"]).astype(np.int8)

    @staticmethod
    def bind(entry: dict, layer, tensors: dict):
        """``layer`` with the input (and residual) that the manifest wires in from ``tensors``."""
        res = entry.get("residual")
        return layer.replace(x=tensors[entry["input"]],
                             residual=tensors[res] if res is not None else None,
                             y_ref=None, gate_ref=None)

    def head(self, tensors: dict) -> np.ndarray:
        """The host's part: global sum pool of the output tensor and the integer classifier."""
        pooled = tensors[self.manifest["output"]].astype(np.int64).sum(axis=(1, 2))
        return self.fc_w.astype(np.int64) @ pooled + self.fc_b

    def forward(self, x_int8: np.ndarray, record=None) -> np.ndarray:
        """int8 (C, H, W) image -> int64 logits_acc (classes,)."""
        t = {"input": np.asarray(x_int8, dtype=np.int8)}
        for e, layer in self.layers:
            y, gate = run_reference(self.bind(e, layer, t))
            t[e["name"]] = y
            if record is not None:
                record[e["name"]] = (y, gate)
        return self.head(t)

    def logits(self, logits_acc: np.ndarray) -> np.ndarray:
        return logits_acc.astype(np.float64) * self.logit_scale


def check_export(export_dir) -> IntNet:
    """Every layer file reproduces its y_ref/gate_ref alone, and the chained network gives the
    manifest's sample logits exactly; raises SluiceError naming the first mismatch."""
    net = IntNet(export_dir)
    for e, layer in net.layers:
        if layer.y_ref is None or layer.gate_ref is None:
            continue
        y, gate = run_reference(layer)
        if not (np.array_equal(y, layer.y_ref) and np.array_equal(gate, layer.gate_ref)):
            raise SluiceError(f"{net.dir / e['file']}: y_ref/gate_ref differ from the reference")
    sample = net.manifest.get("sample")
    if sample and "logits_acc" in sample:
        first = net.layers[0][1]
        logits = net.forward(first.x)
        if [int(v) for v in logits] != sample["logits_acc"]:
            raise SluiceError(f"{net.dir}: the integer network's logits {logits.tolist()} differ "
                              f"from the manifest's sample logits_acc {sample['logits_acc']}")
    return net
