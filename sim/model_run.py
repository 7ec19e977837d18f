"""``sluice run-model``: a whole exported network on the RTL, checked and tabulated.

Every layer runs on the RTL with its input taken from the RTL's own outputs of earlier layers
(as the manifest wires them); its output and gate bits are compared with the integer reference
on that same input, and the final logits with the integer model's. Gated layers run again in
dense mode for the speedup baseline. Writes ``layers.md``, ``layers.csv``, ``speedup.png`` and
``summary.json`` into the output folder.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from sluice.errors import SluiceError
from sluice.fileio import atomic_write_bytes, atomic_write_text
from sluice.hw.params import HwParams
from sluice.model.layerfile import read_result
from sluice.model.reference import run_reference, work_figures

COLUMNS = ("layer", "gated", "gate_rate", "cycles_gated", "cycles_dense", "speedup",
           "reduction", "efficiency", "utilisation", "model_gated", "model_dense", "exact")




def run_model(export_dir, out_dir, *, sim="icarus", params: HwParams | None = None,
              limit: int = 0, images: int = 1, data_dir=None, progress=print) -> dict:
    """Run the export on the RTL; returns the summary (also written to ``out_dir``).

    ``images`` > 1: the throughput mode of :mod:`sluice.sim.batch`, on the export's sample
    image and the ``images - 1`` after it in its data set (``data_dir`` as for ``sluice
    train``): every layer runs once on all of them stacked, each image's rows are checked
    against the reference on that image's own input, and each image's logits against the
    integer model's. The MAC reduction counts the images' own outputs only; the cycles
    include the separator rows between them."""
    from sluice.model.intnet import IntNet
    from sluice.sim.host import check_network
    from sluice.sim.runner import RtlSim

    params = params or HwParams()
    check_images(images)
    net = IntNet(export_dir)  # validates the manifest and every layer file
    layers = net.layers[:limit or None]
    check_network(layers, params, dense=not params.gating)
    xs, labels = network_images(net, images, data_dir)
    extra = {}
    out = Path(out_dir).resolve()
    res_dir = out / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    if images > 1:
        atomic_write_bytes(out / "images.npz", lambda f: np.savez(f, x=np.stack(xs)))
        extra["images"] = str(out / "images.npz")
    progress(f"building the {sim} simulation of the {params.rows}x{params.cols} array ...")
    t0 = time.monotonic()
    rtl = RtlSim(params, sim)
    t_build = time.monotonic() - t0
    progress(f"running {len(layers)} layers on {sim} (gated, plus dense for gated layers"
             + (f"; {images} images stacked" if images > 1 else "") + ") ...")
    t0 = time.monotonic()
    rtl.run([], testcase="run_model", workdir=out / "sim",
            extra={"model": {"export": str(Path(export_dir).resolve()), "out": str(res_dir),
                             "limit": limit, "dense_baseline": True, **extra}})
    t_run = time.monotonic() - t0

    tensors = [{"input": x} for x in xs]

    def rtl_results(entry, layer, bound):
        """The results the testbench wrote for ``layer`` (its run on the RTL's own inputs,
        which ``bound`` repeats), and its dense-mode run when gated."""
        stem = Path(entry["file"]).name.removesuffix(".layer.npz")
        r = read_result(res_dir / f"{stem}.result.npz")
        return r, read_result(res_dir / f"{stem}.dense.result.npz") if layer.gated else None

    rows, losses, tot, failures = account_layers(net, layers, tensors, params, rtl_results)
    summary = {"export": str(export_dir), "sim": sim, "array": [params.rows, params.cols],
               "images": images, "shared_jobs": params.stacking, "layers": len(layers),
               "build_s": round(t_build, 1), "run_s": round(t_run, 1), **tot}
    finish_summary(summary, net, layers, tensors, failures, labels=labels)
    write_reports(out, rows, summary, losses)
    return summary


def check_images(images: int) -> None:
    if images < 1:
        raise SluiceError(f"--images: {images} must be at least 1")


def network_images(net, images: int, data_dir=None):
    """The images a network run takes (``images`` >= 1): the export's sample image alone
    (labels None: the manifest's own), or it and the ``images - 1`` after it in its data set
    with their labels; refused where the data set's sample is not the exported layers' input.
    """
    from sluice.hw.levers import sample_images

    x0 = net.layers[0][1].x
    if images == 1:
        return [x0], None
    xs, labels = sample_images(net, images, data_dir, labels=True)
    if not np.array_equal(xs[0], x0):
        raise SluiceError(f"{net.dir / 'manifest.json'}: the sample image from the data set "
                          "is not the exported layers' input")
    return xs, labels


def account_layers(net, layers, tensors: list[dict], params: HwParams, results, *,
                   dense: bool = False, progress=None):
    """Check and tabulate a network run layer by layer, feeding each layer the run's own
    outputs of earlier layers (as the manifest wires them).

    ``tensors``: one ``{"input": x}`` per image (several: stacked, :mod:`sluice.sim.batch`),
    filled with the run's outputs as it goes. ``results(entry, layer, bound)`` returns the run's
    ``Result`` for ``bound`` (the layer bound to those outputs) and, for a gated layer, its
    dense-mode ``Result`` (else None): read from the testbench's files (``run_model``) or run
    on a board then (``sluice.boards.model_run``). ``dense``: every layer ran in dense mode (a
    dense-only bitstream), checked against the reference in dense mode. Returns ``(rows,
    losses, totals, failures)``: the per-layer table rows, loss breakdowns, the network's
    cycle and MAC totals with each loss term's, and the layers whose outputs did not match."""
    from sluice.hw.cycle_model import (LOSS_TERMS, PACKING_TERMS, array_steps, loss_breakdown,
                                       predict)
    from sluice.sim.batch import bind_batch, split
    from sluice.sim.host import computed_rows

    images = len(tensors)
    rows, failures, losses = [], [], []
    # steps: the cycles in which a step entered the array (``array_steps``)
    tot = dict(cycles_gated=0, cycles_dense=0, macs_dense=0, macs_theory=0, steps_gated=0,
               steps_dense=0, model_steps_gated=0, model_steps_dense=0)

    def steps(res):
        return array_steps(res.cycles, res.counters)

    for entry, layer in layers:
        bound, own_rows = bind_batch(net, entry, layer, tensors)
        r, rd = results(entry, layer, bound)
        y, gate = run_reference(bound, dense=dense)
        # stacked images: the rows between them are not computed (zero in the results)
        skipped = ~computed_rows(bound, params, dense)
        y[:, skipped], gate[:, skipped] = 0, 0
        exact = bool(np.array_equal(r.y, y) and np.array_equal(r.gate, gate))
        # several images: each image's rows against the reference on that image's own input
        # (the separator rows keep the images apart; the rows between them are skipped)
        for t, yi, gi in zip(tensors if images > 1 else [], split(r.y, own_rows),
                             split(r.gate, own_rows)):
            y_own, g_own = run_reference(net.bind(entry, layer, t), dense=dense)
            exact &= bool(np.array_equal(yi, y_own) and np.array_equal(gi, g_own))
        if images == 1 and not dense and np.array_equal(bound.x, layer.x):  # the export's input
            exact &= layer.y_ref is None or bool(np.array_equal(r.y, layer.y_ref))
        if not exact:
            failures.append(layer.name)
        figs = [work_figures(net.bind(entry, layer, t), g, params.rows, params.cols)
                for t, g in zip(tensors, split(r.gate, own_rows))]
        for t, yi in zip(tensors, split(r.y, own_rows)):
            t[entry["name"]] = yi
        fig = {k: sum(f[k] for f in figs) for k in ("macs_dense", "macs_theory")}
        fig["reduction"] = fig["macs_dense"] / fig["macs_theory"]
        fig["gate_rate"] = float(np.mean([f["gate_rate"] for f in figs]))
        if rd is not None:
            y_dense, _ = run_reference(bound, dense=True)
            y_dense[:, skipped] = 0  # (the same jobs in dense mode)
            if not np.array_equal(rd.y, y_dense):
                failures.append(layer.name + " (dense mode)")
            cycles_dense = rd.cycles
        else:
            cycles_dense = r.cycles
        counters = dict(r.counters, cycles=r.cycles)
        gated = layer.gated and not dense
        lb = loss_breakdown(bound, r.gate, counters, params, dense=not gated)
        terms = LOSS_TERMS + PACKING_TERMS
        for t in terms:
            tot["loss_" + t] = tot.get("loss_" + t, 0.0) + lb[t]
        losses.append(dict(layer=layer.name, cycles=r.cycles, **{t: lb[t] for t in terms}))
        pred_g = predict(bound, None if dense else r.gate, params, dense=dense)
        pred_d = predict(bound, None, params, dense=True)
        model_g, model_d = pred_g["cycles"], pred_d["cycles"]
        tot["steps_gated"] += steps(r)
        tot["steps_dense"] += steps(rd if rd is not None else r)
        tot["model_steps_gated"] += pred_g["steps"]
        tot["model_steps_dense"] += pred_d["steps"]
        speedup = cycles_dense / r.cycles
        rows.append(dict(layer=layer.name, gated=gated, gate_rate=fig["gate_rate"],
                         cycles_gated=r.cycles, cycles_dense=cycles_dense, speedup=speedup,
                         reduction=fig["reduction"], efficiency=speedup / fig["reduction"],
                         utilisation=fig["macs_dense"] / (cycles_dense * params.rows * params.cols),
                         model_gated=model_g, model_dense=model_d, exact=exact))
        tot["cycles_gated"] += r.cycles
        tot["cycles_dense"] += cycles_dense
        tot["macs_dense"] += fig["macs_dense"]
        tot["macs_theory"] += fig["macs_theory"]
        if progress:
            progress(f"{layer.name}: {r.cycles} cycles" + (
                f", dense {cycles_dense}" if rd is not None else "")
                + ("" if exact else ", MISMATCH"))
    return rows, losses, tot, failures


def finish_summary(summary: dict, net, layers, tensors: list[dict], failures: list, *,
                   labels=None, dense: bool = False) -> dict:
    """``summary`` (with ``account_layers``'s totals) completed with the network's figures
    and, when every layer ran, its logits checked against the integer model's (the exporter's
    recorded logits for the sample image; not in ``dense`` mode, which is another network)
    and the predicted classes (with ``labels``, several images, how many are right)."""
    images = len(tensors)
    summary["bit_exact"] = not failures
    summary["mismatches"] = failures
    if not dense and net.manifest.get("column_order_info"):  # (sluice column-order)
        summary["column_order"] = net.manifest["column_order_info"]
    summary["speedup"] = summary["cycles_dense"] / summary["cycles_gated"]
    summary["reduction"] = summary["macs_dense"] / summary["macs_theory"]
    summary["efficiency"] = summary["speedup"] / summary["reduction"]
    rows, cols = summary["array"]
    summary["utilisation"] = summary["macs_dense"] / (summary["cycles_dense"] * rows * cols)
    summary["cycles_gated_per_image"] = summary["cycles_gated"] / images
    summary["cycles_dense_per_image"] = summary["cycles_dense"] / images
    if len(layers) == len(net.layers):
        sample = net.manifest.get("sample", {})
        logits = [net.head(t) for t in tensors]
        classes = [int(np.argmax(net.logits(lg))) for lg in logits]
        summary["predicted"] = classes[0] if images == 1 else classes
        if labels is not None:
            summary["label"] = labels
            summary["correct"] = sum(c == lb for c, lb in zip(classes, labels))
        elif "label" in sample:
            summary["label"] = sample["label"]
        if not dense:
            # image 0: the quantised PyTorch model's logits for it, as the exporter recorded
            # them; without them (and for the other images), the integer network's own pass
            expect = [sample.get("logits_acc")] + [None] * (images - 1)
            expect = [net.forward(t["input"]) if e is None else e
                      for t, e in zip(tensors, expect)]
            summary["logits_exact"] = all(np.array_equal(lg, np.asarray(e, np.int64))
                                          for lg, e in zip(logits, expect))
            if not summary["logits_exact"]:
                summary["bit_exact"] = False
                failures.append("logits")
    return summary


def bind_export(export, image=None) -> list[tuple]:
    """Every layer of an export (its folder, or an ``IntNet`` of it already read) bound to the
    integer network's own inputs on its sample image (as ``run_model`` binds them), or on
    ``image`` (int8, quantised as the network's input), with its reference gate bits and SPEC
    section 3 work figures: ``[(bound layer, gate, figures), ...]``. Independent of the array,
    so one binding serves :func:`predict_network` for any number of array shapes."""
    from sluice.model.intnet import IntNet
    from sluice.model.reference import run_reference, work_figures

    net = export if isinstance(export, IntNet) else IntNet(export)
    tensors = {"input": net.layers[0][1].x if image is None else np.asarray(image, np.int8)}
    out = []
    for entry, layer in net.layers:
        bound = net.bind(entry, layer, tensors)
        y, gate = run_reference(bound)
        tensors[entry["name"]] = y
        out.append((bound, gate, work_figures(bound, gate)))
    return out


def bind_export_stacked(export, images: int, data_dir=None) -> list[tuple]:
    """:func:`bind_export` for the throughput mode (:mod:`sluice.sim.batch`): every layer
    bound to the export's sample image and the ``images - 1`` after it in its data set,
    stacked along the height, with the stacked layer's reference gate bits; the work figures
    are the images' own, summed (as ``run_model --images`` counts them)."""
    from sluice.hw.levers import network_tensors, sample_images
    from sluice.model.intnet import IntNet
    from sluice.model.reference import run_reference, work_figures
    from sluice.sim.batch import bind_batch

    net = export if isinstance(export, IntNet) else IntNet(export)
    runs = [network_tensors(net, x) for x in sample_images(net, images, data_dir)]
    tensors = [t for t, _ in runs]
    out = []
    for entry, layer in net.layers:
        big, _ = bind_batch(net, entry, layer, tensors)
        _, gate = run_reference(big, check=False)
        figs = [work_figures(net.bind(entry, layer, t), g[entry["name"]])
                for t, (_, g) in zip(tensors, runs)]
        fig = {k: sum(f[k] for f in figs) for k in ("macs_dense", "macs_theory")}
        fig["reduction"] = fig["macs_dense"] / fig["macs_theory"]
        out.append((big, gate, fig))
    return out


def predict_network(bound_layers: list[tuple], params: HwParams) -> dict:
    """The cycle model over a whole network (``bind_export``'s layers). Returns per-layer rows
    and the network's totals (speedup over dense mode, element-level reduction, efficiency,
    ``loss_<term>``: the gated run's cycles by ``loss_breakdown`` term, and ``load_<run>`` /
    ``stall_<run>``: LOAD_CYCLES and STALL_CYCLES of the gated and dense runs), the figures
    ``run_model`` measures on the RTL, where the model is exact."""
    from sluice.hw.cycle_model import LOSS_TERMS, PACKING_TERMS, loss_breakdown, predict

    rows = []
    tot = dict(cycles_gated=0, cycles_dense=0, macs_dense=0, macs_theory=0, load_gated=0,
               stall_gated=0, load_dense=0, stall_dense=0, passes_gated=0, sliced_gated=0,
               sliced3_gated=0)
    for t in LOSS_TERMS + PACKING_TERMS:
        tot["loss_" + t] = 0.0
    for bound, gate, fig in bound_layers:
        dense_run = predict(bound, None, params, dense=True)
        gated_run = predict(bound, gate, params) if bound.gated else dense_run
        dense, gated = dense_run["cycles"], gated_run["cycles"]
        lb = loss_breakdown(bound, gate, gated_run, params, dense=not bound.gated)
        for t in LOSS_TERMS + PACKING_TERMS:
            tot["loss_" + t] += lb[t]
        rows.append(dict(layer=bound.name, gated=bound.gated, cycles_gated=gated,
                         cycles_dense=dense, reduction=fig["reduction"],
                         macs_dense=fig["macs_dense"], macs_theory=fig["macs_theory"]))
        tot["cycles_gated"] += gated
        tot["cycles_dense"] += dense
        for run, name in ((gated_run, "gated"), (dense_run, "dense")):
            tot["load_" + name] += run["load_cycles"]
            tot["stall_" + name] += run["stall_cycles"]
        tot["passes_gated"] += gated_run["passes"]
        tot["sliced_gated"] += gated_run["sliced_passes"]
        tot["sliced3_gated"] += gated_run["sliced3_passes"]
        tot["macs_dense"] += fig["macs_dense"]
        tot["macs_theory"] += fig["macs_theory"]
    tot["speedup"] = tot["cycles_dense"] / tot["cycles_gated"]
    tot["reduction"] = tot["macs_dense"] / tot["macs_theory"]
    tot["efficiency"] = tot["speedup"] / tot["reduction"]
    return dict(layers=rows, **tot)


def _fmt(row):
    return {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()}


def markdown_table(rows, summary) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        f = _fmt(row)
        lines.append("| " + " | ".join(str(f[c]) for c in COLUMNS) + " |")
    s = summary
    lines.append(f"| **total** | | | {s['cycles_gated']} | {s['cycles_dense']} | "
                 f"{s['speedup']:.3f} | {s['reduction']:.3f} | {s['efficiency']:.3f} | "
                 f"{s['utilisation']:.3f} | | | {'yes' if s['bit_exact'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def loss_table(losses, summary) -> str:
    """Where the gated run's cycles go (``hw.cycle_model.loss_breakdown`` of each layer's
    counters), as percent of the layer's cycles."""
    from sluice.hw.cycle_model import LOSS_TERMS, PACKING_TERMS
    terms = LOSS_TERMS + PACKING_TERMS
    lines = ["| layer | cycles | " + " | ".join(f"{t} %" for t in LOSS_TERMS) + " | "
             + " | ".join(f"packing: {t} %" for t in PACKING_TERMS) + " |",
             "|" + "---|" * (2 + len(terms))]
    for row in losses + [dict(layer="**total**", cycles=summary["cycles_gated"],
                              **{t: summary["loss_" + t] for t in terms})]:
        lines.append(f"| {row['layer']} | {row['cycles']} | " + " | ".join(
            f"{100 * row[t] / row['cycles']:.1f}" for t in terms) + " |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, rows, summary, losses) -> None:
    """``layers.md`` (with the loss table), ``layers.csv``, ``summary.json`` and ``speedup.png``
    in ``out``."""
    atomic_write_text(out / "layers.md", markdown_table(rows, summary) + "\nWhere the cycles "
                      "of the gated run go (percent of each layer's cycles; "
                      "`sluice.hw.cycle_model.loss_breakdown`, from the RTL's counters):\n\n"
                      + loss_table(losses, summary))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    for row in rows:
        w.writerow(row)
    atomic_write_text(out / "layers.csv", buf.getvalue())
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    plot_speedup(rows, out / "speedup.png")


def plot_speedup(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gated = [r for r in rows if r["gated"]]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if gated:
        red = [r["reduction"] for r in gated]
        ax.scatter(red, [r["speedup"] for r in gated], label="measured (RTL)")
        for r in gated:
            ax.annotate(r["layer"], (r["reduction"], r["speedup"]), fontsize=6)
        top = max(red + [r["speedup"] for r in gated]) * 1.1
        ax.plot([1, top], [1, top], "k--", lw=0.8, label="speedup = reduction")
    ax.set_xlabel("element-level MAC reduction")
    ax.set_ylabel("measured speedup (dense cycles / gated cycles)")
    ax.set_title("Per-layer speedup against MAC reduction")
    if gated:
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def cmd_run_model(args) -> int:
    from sluice.hw.commands import params_from_args

    params = params_from_args(args)
    if not Path(args.export_dir).is_dir():
        raise SluiceError(f"{args.export_dir}: not a directory (expected `sluice export` output)")
    s = run_model(args.export_dir, args.out, sim=args.sim, params=params, limit=args.layers,
                  images=args.images, data_dir=args.data_dir)
    return print_summary(s, args.out)


def column_order_note(info: dict) -> str:
    """How a run put its gated layers' channels on the columns, from the manifest's
    ``column_order_info`` (``sluice column-order``)."""
    return (f"gated layers in the host column order fitted to the {info['calibration']} "
            f"for {info['instance']}")


def print_summary(s: dict, out) -> int:
    """Print a run's ``layers.md`` and one line of totals (``run_model``'s summary, or ``sluice
    board run-model``'s); 1 if anything did not match, else 0."""
    print((Path(out) / "layers.md").read_text(), end="")
    batch = ""
    if s["images"] > 1:  # (an instance without the walker's jump runs each image alone)
        batch = (f" ({s['images']} images stacked)" if s.get("shared_jobs", True) else
                 f" ({s['images']} images, each in jobs of its own)")
    if s.get("dense"):
        line = (f"{s['layers']} layers in dense mode on {s['sim']} in {s['run_s']:.0f} s: "
                f"{s['cycles_dense']:,} cycles, dense utilisation {s['utilisation']:.2f}")
    else:
        line = (f"{s['layers']} layers{batch} on {s['sim']} in {s['run_s']:.0f} s: speedup "
                f"{s['speedup']:.2f}x, MAC reduction {s['reduction']:.2f}x, efficiency "
                f"{s['efficiency']:.2f}, dense utilisation {s['utilisation']:.2f}")
    if batch:
        line += (f"; per image {s['cycles_gated_per_image']:,.0f} gated / "
                 f"{s['cycles_dense_per_image']:,.0f} dense cycles")
    if s.get("column_order"):
        line += f"; {column_order_note(s['column_order'])}"
    if "predicted" in s:
        line += f"; predicted class{'es' if batch else ''} {s['predicted']}" + (
            f" (label{'s' if batch else ''} {s['label']})" if "label" in s else "")
        if "correct" in s:
            line += f", {s['correct']} of {s['images']} correct"
    print(line)
    if s.get("link_bound"):
        print("(board cycles run from START to DONE and include the waits for the serial link's "
              "input beats; the model columns are the array's own cycles)")
        same = (s["steps_gated"], s["steps_dense"]) == (s["model_steps_gated"],
                                                        s["model_steps_dense"])
        print(f"array steps (CYCLES - LOAD_CYCLES - STALL_CYCLES, the cycles a step entered the "
              f"array): {s['steps_gated']:,}" + ("" if s.get("dense") else
                                                 f" gated, {s['steps_dense']:,} dense, "
                                                 f"{s['steps_dense'] / s['steps_gated']:.2f}x")
              + ("; the cycle model's, exactly" if same else
                 f"; the cycle model says {s['model_steps_gated']:,} / "
                 f"{s['model_steps_dense']:,}"))
    if not s["bit_exact"]:
        print(f"MISMATCH: {', '.join(s['mismatches'])}")
        return 1
    what = "the integer reference in dense mode" if s.get("dense") else "the integer model"
    print(f"bit-exact against {what}; reports in {out}")
    return 0
