"""``sluice eval``: top-1, whole-network MAC reduction (SPEC section 3), per-layer gate rate.

MACs are counted at element level as SPEC section 3 counts them: a gated layer pays
``M * (C_in/p) * K^2`` for the base set plus ``(C_in - C_in/p) * K^2`` for every output whose gate
is on; dense layers (stem, 1x1 shortcuts, the classifier) are counted at full cost. Pooling and
additions are not counted.
"""

from __future__ import annotations

import json
from pathlib import Path

from sluice.errors import SluiceError, check_format

EVAL_FORMAT = "sluice.eval/1"


def layer_macs(c_in, c_out, kernel, h_out, w_out, images, partitions=None, gate_on=None):
    """(macs_dense, macs_theory) of one layer summed over ``images`` (SPEC section 3)."""
    m = c_out * h_out * w_out
    dense = m * c_in * kernel * kernel * images
    if partitions is None:
        return dense, dense
    cb = c_in // partitions
    base = m * cb * kernel * kernel * images
    return dense, base + int(gate_on) * (c_in - cb) * kernel * kernel


class WorkCounter:
    """Accumulates per-layer shapes and gate counts; produces the SPEC section 3 figures."""

    def __init__(self):
        self.layers = {}

    def add(self, name, c_in, c_out, kernel, stride, h_out, w_out, images, partitions=None,
            gate_on=None):
        e = self.layers.setdefault(name, dict(name=name, c_in=c_in, c_out=c_out, kernel=kernel,
                                              stride=stride, h_out=h_out, w_out=w_out,
                                              partitions=partitions, images=0, gate_on=0))
        e["images"] += int(images)
        if partitions is not None:
            e["gate_on"] += int(gate_on)

    def report(self) -> dict:
        rows, tot_dense, tot_theory, on, outs = [], 0, 0, 0, 0
        for e in self.layers.values():
            dense, theory = layer_macs(e["c_in"], e["c_out"], e["kernel"], e["h_out"],
                                       e["w_out"], e["images"], e["partitions"], e["gate_on"])
            n_out = e["c_out"] * e["h_out"] * e["w_out"] * e["images"]
            gated = e["partitions"] is not None
            rate = e["gate_on"] / n_out if gated and n_out else None
            if gated:
                on += e["gate_on"]
                outs += n_out
            tot_dense += dense
            tot_theory += theory
            per_image = max(e["images"], 1)
            rows.append(dict(name=e["name"], gated=gated, c_in=e["c_in"], c_out=e["c_out"],
                             kernel=e["kernel"], stride=e["stride"], h_out=e["h_out"],
                             w_out=e["w_out"], partitions=e["partitions"], gate_rate=rate,
                             macs_dense=dense // per_image, macs_theory=theory / per_image,
                             reduction=dense / theory if theory else None))
        return dict(macs_dense=tot_dense / max(self._images(), 1),
                    macs_theory=tot_theory / max(self._images(), 1),
                    reduction=tot_dense / tot_theory if tot_theory else None,
                    gate_rate=on / outs if outs else None, layers=rows)

    def _images(self):
        return max((e["images"] for e in self.layers.values()), default=0)


def count_float(model, counter: WorkCounter):
    """Forward hooks that record every conv's and the classifier's work; returns the handles."""
    import torch.nn as nn
    from .gated import is_gated
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(mod, inp, out, name=name):
                n, c, h, w = out.shape
                gated = is_gated(mod)
                counter.add(name, mod.in_channels, mod.out_channels, mod.kernel_size[0],
                            mod.stride[0], h, w, n, mod.partitions if gated else None,
                            int(mod.last_gate.sum()) if gated else None)
            handles.append(m.register_forward_hook(hook))
        elif isinstance(m, nn.Linear):
            def lhook(mod, inp, out, name=name):
                counter.add(name, mod.in_features, mod.out_features, 1, 1, 1, 1, out.shape[0])
            handles.append(m.register_forward_hook(lhook))
    return handles


def evaluate_checkpoint(path, *, int8=False, data_dir=None, limit=0, calib=1000,
                        batch_size=500, dataset=None, percentile=99.99) -> dict:
    import torch
    from .checkpoint import load_model, resolve
    from .data import load_dataset
    model, ckpt = load_model(path)
    ds_name = dataset or ckpt["data"]["dataset"]
    test = load_dataset(ds_name, "test", data_dir)
    if limit:
        test.images, test.labels = test.images[:limit], test.labels[:limit]
    counter = WorkCounter()
    correct = total = 0
    report = {"format": EVAL_FORMAT, "checkpoint": str(path), "dataset": ds_name,
              "split": "test", "int8": bool(int8), "config": ckpt["config"]}
    if not int8:
        handles = count_float(model, counter)
        with torch.no_grad():
            for x, y in test.batches(batch_size):
                correct += int((model(x).argmax(1) == y).sum())
                total += int(y.numel())
        for h in handles:
            h.remove()
    else:
        from .quantize import quantize_checkpoint
        qnet = quantize_checkpoint(model, ckpt, data_dir=data_dir, calib=calib,
                                   percentile=percentile, dataset=ds_name,
                                   path=resolve(path))
        report["calibration"] = qnet.stats["calibration"]
        agree = agree_n = 0
        batch_size = min(batch_size, 100)  # float64/int64 maps: keep them cache-sized
        for i in range(0, len(test), batch_size):
            u8, y = test.images[i:i + batch_size], test.labels[i:i + batch_size]
            rec = {}
            logits = qnet.logits(qnet.forward(qnet.quantise_input(u8), record=rec))
            correct += int((logits.argmax(1) == y).sum())
            total += int(y.numel())
            count_qnet(qnet, rec, counter)
            # end-to-end agreement of integer gates with the float model's gates
            fl = {}
            handles = [m.register_forward_hook(
                lambda mod, inp, out, n=n: fl.__setitem__(n, mod.last_gate))
                for n, m in model.named_modules() if hasattr(m, "last_gate")]
            with torch.no_grad():
                model(test.normalise(u8))
            for h in handles:
                h.remove()
            for n, g in fl.items():
                agree += int((rec[n][1] == g.to(torch.int64)).sum())
                agree_n += g.numel()
        report["gate_agreement_end_to_end"] = agree / agree_n if agree_n else None
        report["calibration_images"] = calib
        report["percentile"] = percentile
    report.update(images=total, top1=correct / max(total, 1))
    report.update(counter.report())
    return report


def count_qnet(qnet, record, counter: WorkCounter):
    for L in qnet.layers:
        y, gate = record[L.name]
        n, c, h, w = y.shape
        counter.add(L.name, L.w.shape[1], L.w.shape[0], L.kernel, L.stride, h, w, n,
                    L.partitions if L.gated else None, int(gate.sum()) if L.gated else None)
    counter.add("fc", qnet.fc_w.shape[1], qnet.fc_w.shape[0], 1, 1, 1, 1, n)


def _run_name(path) -> str:
    p = Path(path)
    return f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem


def plot_gate_rates(report: dict, out_png) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in report["layers"] if r["gated"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if rows:
        ax.bar(range(len(rows)), [100 * r["gate_rate"] for r in rows])
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=60, ha="right",
                      fontsize=7)
    ax.set_ylabel("gates on (%)")
    kind = "int8" if report["int8"] else "float"
    red = report["reduction"]
    ax.set_title(f"{Path(report['checkpoint']).parent.name} ({kind}): top-1 "
                 f"{100 * report['top1']:.2f}%, MAC reduction {red:.2f}x", fontsize=9)
    fig.tight_layout()
    _save_fig(fig, out_png)
    plt.close(fig)


def plot_tradeoff(reports: list[dict], out_png) -> None:
    """Top-1 against whole-network MAC reduction, one colour per run (circle: float, square:
    int8), named in a legend beside the axes (runs crowd together near the target), with the
    best dense run's top-1 minus 0.5 points dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(dict.fromkeys(Path(r["checkpoint"]).parent.name for r in reports))
    colours = plt.get_cmap("tab20")
    for r in reports:
        name = Path(r["checkpoint"]).parent.name
        ax.scatter(r["reduction"], 100 * r["top1"], marker="s" if r["int8"] else "o",
                   color=colours(names.index(name) % 20), s=28, alpha=0.85)
    dense = [r["top1"] for r in reports if r.get("gate_rate") is None]
    if dense:
        ax.axhline(100 * max(dense) - 0.5, ls="--", lw=0.8, color="grey")
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours(i % 20), label=n)
               for i, n in enumerate(names)]
    handles += [plt.Line2D([], [], ls="", marker="o", color="k", label="float"),
                plt.Line2D([], [], ls="", marker="s", color="k", label="int8")]
    if dense:
        handles.append(plt.Line2D([], [], ls="--", color="grey", label="best dense - 0.5 pt"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    ax.set_xlabel("whole-network MAC reduction (x, SPEC section 3)")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_fig(fig, out_png)
    plt.close(fig)


def _save_fig(fig, path):
    from .checkpoint import atomic_write_bytes
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))


def add_arguments(p) -> None:
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="model.pt / last.pt files (none: only plot the --compare reports)")
    p.add_argument("-o", "--out", default="eval", help="output directory (JSON + PNG)")
    p.add_argument("--int8", action="store_true", help="evaluate the quantised integer model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default=None, help="override the checkpoint's data set")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N test images")
    p.add_argument("--calib", type=int, default=1000, help="calibration images (--int8)")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="activation range percentile for calibration (--int8)")
    p.add_argument("--compare", nargs="*", default=[], metavar="JSON",
                   help="earlier eval reports to add to the accuracy/reduction plot")
    p.add_argument("--threads", type=int, default=2)


def run(args) -> int:
    import torch
    from .checkpoint import atomic_write_bytes
    if not args.checkpoints and not args.compare:
        raise SluiceError("CKPT: give checkpoints to evaluate, or --compare JSON ... to plot "
                          "earlier reports")
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    reports = []
    for path in args.compare:
        try:
            r = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise SluiceError(f"{path}: not a readable eval report: {e}") from None
        check_format(r, EVAL_FORMAT, path)
        reports.append(r)
    for ck in args.checkpoints:
        r = evaluate_checkpoint(ck, int8=args.int8, data_dir=args.data_dir, limit=args.limit,
                                calib=args.calib, dataset=args.dataset,
                                percentile=args.percentile)
        stem = _run_name(ck) + (".int8" if args.int8 else "")
        js = out / f"{stem}.eval.json"
        atomic_write_bytes(js, lambda f: f.write(json.dumps(r, indent=1).encode()))
        plot_gate_rates(r, out / f"{stem}.gates.png")
        reports.append(r)
        gr = f", gates on {100 * r['gate_rate']:.2f}%" if r["gate_rate"] is not None else ""
        extra = (f", gate agreement with float {100 * r['gate_agreement_end_to_end']:.2f}%"
                 if r.get("gate_agreement_end_to_end") is not None else "")
        if args.int8:
            extra += (f", calibration from {Path(r['calibration']).name}" if r.get("calibration")
                      else ", calibration measured here")
        print(f"{ck}{' [int8]' if args.int8 else ''}: top-1 {100 * r['top1']:.2f}% on "
              f"{r['images']} images, MAC reduction {r['reduction']:.3f}x{gr}{extra} -> {js}")
    plot_tradeoff(reports, out / "accuracy_vs_reduction.png")
    return 0
