"""``sluice board run-model``: a whole exported network on a board, layer by layer.

Every layer runs on the board (``BoardRunner.run_layer``, the host sequence the testbenches
use) with its input taken from the board's own outputs of earlier layers, as the manifest wires
them; its output and gate bits are checked against the integer reference on that same input,
gated layers run again in dense mode for the speedup baseline, and the final logits are
checked against the integer model's. The checks, tables and reports are ``sluice run-model``'s
(``sluice.sim.model_run``): ``layers.md``, ``layers.csv``, ``speedup.png``, ``summary.json``.

The board's CYCLES counter runs from START to DONE, so its cycles include the accelerator's
waits for input beats from the serial link (tens of times the array's own cycles at UART
rates): the table's measured columns are the board's, the model columns the array's own
(``sluice.hw.cycle_model``, which the RTL's counters equal when the stream keeps up).

On a dense-only bitstream (the iCEBreaker's default build) ``dense=True`` runs every layer in
dense mode, checked against the reference in dense mode; the logits are then those of the
network with every gate on, so they are reported but not checked.
"""

from __future__ import annotations

import time
from pathlib import Path

from sluice.errors import SluiceError


def board_run_model(runner, export_dir, out_dir, *, dense: bool = False, limit: int = 0,
                    images: int = 1, data_dir=None, progress=print) -> dict:
    """Run the export's first ``limit`` layers (0: all) on ``runner`` (a ``BoardRunner``, or
    anything with its ``run_layer`` and ``params``); returns the summary, also written with the
    per-layer tables to ``out_dir``.

    ``images`` > 1: the export's sample image and the ``images - 1`` after it in its data set
    (``data_dir`` as for ``sluice train``), stacked along the height as ``sluice run-model
    --images`` stacks them, each image's rows and logits checked on its own and the correct
    classes counted. A bitstream with the walker's jump (``--stacking 1``, ID bit 17) runs
    each layer's images in shared jobs; one without it (the boards' default) runs every image
    in jobs of its own, the same jobs as a run of that image alone (``sim.host.job_rows``)."""
    from sluice.model.intnet import IntNet
    from sluice.sim.host import check_network
    from sluice.sim.model_run import (account_layers, check_images, finish_summary,
                                      network_images, write_reports)

    params = runner.params
    if not params.gating and not dense:
        raise SluiceError("the board's bitstream is dense-only (no gating hardware): pass "
                          "--dense to run every layer in dense mode")
    if limit < 0:
        raise SluiceError(f"--layers: {limit} must be 0 (all) or more")
    check_images(images)
    net = IntNet(export_dir)  # validates the manifest and every layer file
    layers = net.layers[:limit or None]
    check_network(layers, params, dense)  # every layer, before the first reaches the board
    xs, labels = network_images(net, images, data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def on_board(entry, layer, bound):
        r = runner.run_layer(bound, dense=dense)
        rd = runner.run_layer(bound, dense=True) if layer.gated and not dense else None
        return r, rd

    name = getattr(runner, "runner_name", "board")
    progress(f"running {len(layers)} layers on {name} "
             + ("(dense mode" if dense else "(gated, plus dense for gated layers")
             + (f"; {images} images stacked, "
                + ("in shared jobs" if params.stacking else "each in jobs of its own")
                if images > 1 else "") + ") ...")
    t0 = time.monotonic()
    tensors = [{"input": x} for x in xs]
    rows, losses, tot, failures = account_layers(net, layers, tensors, params, on_board,
                                                 dense=dense, progress=progress)
    summary = {"export": str(export_dir), "sim": name,
               "array": [params.rows, params.cols], "images": images,
               "shared_jobs": params.stacking, "layers": len(layers),
               "dense": dense, "run_s": round(time.monotonic() - t0, 1), "link_bound": True,
               **tot}
    finish_summary(summary, net, layers, tensors, failures, labels=labels, dense=dense)
    write_reports(out, rows, summary, losses)
    return summary
