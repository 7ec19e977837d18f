"""``sluice export CKPT -o DIR``: quantise a checkpoint and write the network as files.

DIR holds:
- ``manifest.json`` (format ``sluice.model/1``): layer order and wiring (which tensor feeds
  each layer's ``x`` and ``residual``), input quantisation, the classifier, the sample image;
- ``NN_<name>.layer.npz``: one SPEC layer file per convolution, in execution order, with
  ``x``, ``residual``, ``y_ref`` and ``gate_ref`` of the sample image;
- ``classifier.npz``: ``fc_w`` (int8), ``fc_b`` (int64), ``logit_scale`` (float64);
- ``calibration.json``: the calibration this export used (``quantize.calibration_record``:
  equalisation divisors and activation ranges, the only machine-dependent part of the
  quantisation); copied beside the checkpoint as ``CKPT.calib.json``, every later export and
  ``sluice eval --int8`` of that checkpoint use it and build the same integer network on any
  machine.

Tensors are named after the layer that produces them; the network input is ``"input"``.
The host does the global average pool and the classifier in integers:
``logits_acc = fc_w @ sum_hw(feature) + fc_b`` (int64), float logits
``logits_acc * logit_scale`` (the 1/(H*W) of the pool is folded into ``logit_scale``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sluice.errors import SluiceError

MODEL_FORMAT = "sluice.model/1"
CLASSIFIER_FORMAT = "sluice.classifier/1"
CALIBRATION_FILE = "calibration.json"


def layer_filename(index: int, name: str) -> str:
    return f"{index:02d}_{name}.layer.npz"


def export_qnet(qnet, out_dir, *, sample_u8, sample_info: dict, extra: dict | None = None) -> dict:
    """Write ``qnet`` with reference outputs for one image (uint8 C,H,W). Returns the manifest."""
    import torch
    from sluice.model.layerfile import Layer, write_layer
    from .checkpoint import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the manifest goes last and names the files: an earlier export's manifest is removed
    # first, so an export that fails half-way leaves a folder every reader refuses, never an
    # old manifest beside new layer files
    (out / "manifest.json").unlink(missing_ok=True)
    x = qnet.quantise_input(torch.as_tensor(sample_u8)[None])
    rec = {}
    logits_acc = qnet.forward(x, record=rec)[0]
    tensors = {"input": x[0]}
    tensors.update({k: v[0][0] for k, v in rec.items()})
    entries = []
    for i, L in enumerate(qnet.layers):
        y, gate = rec[L.name]
        as8 = lambda t: t.numpy().astype(np.int8)
        layer = Layer(
            x=as8(tensors[L.input]), w=L.w, bias=L.bias, mult=L.mult, shift=L.shift,
            kernel=L.kernel, stride=L.stride, padding=L.padding,
            partitions=L.partitions if L.gated else 1, base=L.base, relu=bool(L.relu),
            name=L.name, thresh=L.thresh,
            residual=as8(tensors[L.residual]) if L.residual is not None else None,
            res_mult=L.res_mult, res_shift=L.res_shift,
            y_ref=as8(y[0]), gate_ref=gate[0].numpy().astype(np.uint8))
        fname = layer_filename(i, L.name)
        write_layer(out / fname, layer)  # validates, including the int32 overflow bound
        entries.append({"index": i, "name": L.name, "file": fname, "input": L.input,
                        "residual": L.residual, "gated": L.gated, "relu": bool(L.relu),
                        "kernel": L.kernel, "stride": L.stride, "padding": L.padding,
                        "c_in": int(L.w.shape[1]), "c_out": int(L.w.shape[0]),
                        "partitions": L.partitions if L.gated else 1, "base": L.base,
                        "output_shape": list(y.shape[1:]), "output_scale": L.out_scale})
    atomic_write_bytes(out / "classifier.npz", lambda f: np.savez(
        f, format=np.asarray(CLASSIFIER_FORMAT), fc_w=qnet.fc_w, fc_b=qnet.fc_b,
        logit_scale=qnet.logit_scale))
    logits = qnet.logits(logits_acc[None])[0]
    manifest = {
        "format": MODEL_FORMAT,
        "input": {"tensor": "input", "shape": [qnet.in_channels, qnet.image_size,
                                               qnet.image_size],
                  "dtype": "int8", "pixel_offset": qnet.pixel_offset,
                  "quantisation": "x = pixel - pixel_offset (uint8 pixel, exact)",
                  "scale": qnet.input_scale,
                  "float_value": "x * scale (= the float model's normalised input)"},
        "layers": entries,
        "tensors": "each layer's output tensor is named after the layer; 'input' is the image",
        "output": qnet.feature,
        "classifier": {
            "file": "classifier.npz", "arithmetic": "integer (host)",
            "pool": "global average pool as an int64 sum over H*W of the output tensor; "
                    "1/(H*W) is folded into logit_scale",
            "fc": "logits_acc = fc_w (int8, classes x C) @ pooled (int64) + fc_b (int64)",
            "logits": "logits = logits_acc * logit_scale (float64, per class); "
                      "prediction = argmax",
            "classes": int(qnet.fc_w.shape[0])},
        "sample": dict(sample_info, logits_acc=[int(v) for v in logits_acc],
                       logits=[float(v) for v in logits], predicted=int(logits.argmax())),
    }
    if extra:
        manifest.update(extra)
    atomic_write_bytes(out / "manifest.json",
                       lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--sample", type=int, default=0, help="test-set index of the sample image")
    p.add_argument("--calib", type=int, default=1000, help="calibration images")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="activation range percentile for calibration")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=2)


def run(args) -> int:
    import torch
    from sluice.fileio import atomic_write_text

    from .checkpoint import load_model, resolve
    from .data import load_dataset
    from .intnet import check_export
    from .quantize import (calibration_json, calibration_path, calibration_record,
                           quantize_checkpoint)

    torch.set_num_threads(max(1, args.threads))
    model, ckpt = load_model(args.checkpoint)
    ds_name = ckpt["data"]["dataset"]
    test = load_dataset(ds_name, "test", args.data_dir)
    if not 0 <= args.sample < len(test):
        raise SluiceError(f"--sample {args.sample} is outside the test set (0..{len(test) - 1})")
    qnet = quantize_checkpoint(model, ckpt, data_dir=args.data_dir, calib=args.calib,
                               percentile=args.percentile, path=resolve(args.checkpoint))
    recorded = qnet.stats["calibration"]
    info = {"dataset": ds_name, "split": "test", "index": args.sample,
            "label": int(test.labels[args.sample])}
    extra = {"checkpoint": str(args.checkpoint), "config": ckpt["config"],
             "quantisation": {"calibration": f"first {args.calib} training images",
                              "percentile": args.percentile,
                              "ranges": (f"recorded in {recorded}" if recorded else
                                         "measured by float passes on this machine"),
                              "calibration_record": CALIBRATION_FILE,
                              "weights": "per-output-channel symmetric int8, BN folded",
                              "activations": "per-tensor symmetric int8"}}
    manifest = export_qnet(qnet, args.out, sample_u8=test.images[args.sample],
                           sample_info=info, extra=extra)
    # the calibration this export used: beside a checkpoint as CKPT.calib.json, it makes the
    # same integer network on any machine (quantize.quantize_checkpoint)
    atomic_write_text(Path(args.out) / CALIBRATION_FILE,
                      calibration_json(calibration_record(qnet, qnet.stats["settings"],
                                                          qnet.stats["weights"])))
    check_export(args.out)  # every layer reproduces y_ref/gate_ref; logits match exactly
    gated = sum(e["gated"] for e in manifest["layers"])
    print(f"sluice export: {len(manifest['layers'])} layers ({gated} gated) + classifier in "
          f"{args.out}; sample {args.sample} (label {info['label']}) predicted "
          f"{manifest['sample']['predicted']}; integer network reproduces it exactly; "
          + (f"calibration from {recorded}" if recorded else
             f"calibration measured here (to pin it, copy {Path(args.out) / CALIBRATION_FILE} "
             f"beside the checkpoint as {calibration_path(resolve(args.checkpoint)).name})"))
    return 0
