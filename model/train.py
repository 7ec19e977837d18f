"""``sluice train``: train a (gated) ResNet-18, with checkpoints, resume, KD and DDP.

Single process on the CPU or one GPU; several processes through ``torchrun`` (one per GPU or
node slot), using DistributedDataParallel with gate statistics reduced across ranks.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from sluice.errors import SluiceError

from .checkpoint import atomic_write_bytes, load_checkpoint, load_model, save_checkpoint


def add_arguments(p) -> None:
    p.add_argument("-o", "--out", required=False, default=None,
                   help="output directory (last.pt, model.pt, log.jsonl)")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (default), cifar10 or synthetic")
    p.add_argument("--data-dir", default=None, help="data set directory")
    p.add_argument("--width", type=int, default=16, help="first-stage channels (64 = standard)")
    p.add_argument("--block", default="postact", help="postact (both convs gated) or standard")
    p.add_argument("--gating", default="cgnet", help="cgnet or none (dense baseline)")
    p.add_argument("--partitions", type=int, default=4, help="p: base set is C_in/p channels")
    p.add_argument("--base", default="group", help="group or first")
    p.add_argument("--alpha", type=float, default=2.0, help="gate sigmoid slope")
    p.add_argument("--gate-target", type=float, default=1.5, help="threshold target")
    p.add_argument("--gate-lambda", type=float, default=1e-3, help="gating loss weight")
    p.add_argument("--hw-lambda", type=float, default=0.0,
                   help="weight of the hardware latency term (model/hwcost.py: the conditional "
                        "phases' cycles on a --hw-rows x --hw-cols array with --hw-skip-cols "
                        "skip groups, over the dense cycles); 0: off")
    p.add_argument("--hw-passes", action="store_true",
                   help="--hw-lambda counts whole conditional passes (the cycle model's "
                        "rounding), its gradient on the items of each tile's last pass")
    for name, what in (("rows", "array rows"), ("cols", "array columns"),
                       ("skip-cols", "skip group width"),
                       ("row-slices", "row slices (1, 2 or 3; --hw-passes counts sliced passes)")):
        p.add_argument(f"--hw-{name}", type=int, default=None,
                       help=f"{what} for --hw-lambda (default: the generator's)")
    p.add_argument("--sparse-bp", action="store_true", help="sparse gate backprop")
    p.add_argument("--shuffle", action="store_true", help="channel shuffle (not exportable)")
    p.add_argument("--epochs", type=int, default=None,
                   help="default 8; with --resume: the saved value")
    p.add_argument("--batch-size", type=int, default=None,
                   help="per process (default 128; with --resume: the saved value)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="cosine", help="cosine or constant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", default=None, help="dense teacher checkpoint for distillation")
    p.add_argument("--kd-weight", type=float, default=0.5, help="weight of the KD term")
    p.add_argument("--kd-temp", type=float, default=4.0, help="distillation temperature")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from these weights (e.g. a dense checkpoint; gate parameters "
                        "missing from it keep their initial values)")
    p.add_argument("--threshold-init", type=float, default=0.0,
                   help="initial gate threshold Δ (e.g. the target when fine-tuning)")
    p.add_argument("--reset-thresholds", action="store_true",
                   help="with --init-from: start every gate threshold at --threshold-init "
                        "instead of the checkpoint's (moves a trained gated network to a new "
                        "gate target)")
    p.add_argument("--qat", action="store_true",
                   help="quantisation-aware fine-tuning of the --init-from network (its "
                        "architecture; the model flags are ignored): BN frozen and folded, "
                        "weights and activations fake-quantised as `sluice export` will "
                        "quantise them (model/qat.py)")
    p.add_argument("--calib", type=int, default=1000,
                   help="with --qat: calibration images (first N training images, as export)")
    p.add_argument("--resume", default=None, help="continue from a last.pt checkpoint")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if any)")
    p.add_argument("--limit-train", type=int, default=0, help="use only N training images")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW memory format (channels_last is the default)")
    p.add_argument("--log-every", type=int, default=50, help="progress line every N batches")


MODEL_KEYS = ("width", "block", "gating", "partitions", "base", "alpha", "sparse_bp", "shuffle")


class _Dist:
    """Rank/world from torchrun's environment; no-op in a single process."""

    def __init__(self, device_arg):
        import torch
        import torch.distributed as dist
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg:
            self.device = torch.device(device_arg)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def sum(self, values):
        """All-reduce a list of floats (sum)."""
        import torch
        if self.world == 1:
            return values
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def _config_from_args(args, info) -> dict:
    from .resnet import default_config
    return default_config(width=args.width, block=args.block, gating=args.gating,
                          partitions=args.partitions, base=args.base, alpha=args.alpha,
                          sparse_bp=args.sparse_bp, shuffle=args.shuffle,
                          threshold_init=args.threshold_init,
                          in_channels=info["in_channels"], num_classes=info["num_classes"])


def evaluate_float(model, data, device, batch_size=500, dist=None):
    """(top-1 accuracy, gate rate, correct, total) of the float model on ``data``."""
    import torch
    from .gated import gated_modules, reset_gate_counters
    model.eval()
    reset_gate_counters(model)
    correct = total = 0
    rank, world = (dist.rank, dist.world) if dist else (0, 1)
    with torch.no_grad():
        for x, y in data.batches(batch_size, rank=rank, world=world):
            out = model(x.to(device))
            correct += int((out.argmax(1).cpu() == y).sum())
            total += int(y.numel())
    on = sum(float(m.gate_on) for _, m in gated_modules(model))
    tot = sum(m.gate_total for _, m in gated_modules(model))
    if dist:
        correct, total, on, tot = dist.sum([correct, total, on, tot])
    return correct / max(total, 1), (on / tot if tot else float("nan")), int(correct), int(total)


def init_from(model, path) -> None:
    """Copy every matching tensor of checkpoint ``path`` into ``model``; only the gate
    parameters (threshold, gate_bn) may be missing from it."""
    src = load_checkpoint(path)["state_dict"]
    own = model.state_dict()
    for k, v in own.items():
        if k in src:
            if src[k].shape != v.shape:
                raise SluiceError(f"{path}: tensor {k!r} has shape {tuple(src[k].shape)}, the "
                                  f"model needs {tuple(v.shape)} (--init-from)")
            own[k] = src[k]
        elif ".threshold" not in k and ".gate_bn." not in k:
            raise SluiceError(f"{path}: tensor {k!r} missing (--init-from needs the same "
                              f"architecture)")
    model.load_state_dict(own)


def make_optimizer(model, lr, momentum, weight_decay):
    """SGD; the gate thresholds (group 1) are excluded from weight decay."""
    import torch
    thresholds = [p for n, p in model.named_parameters() if n.endswith("threshold")]
    others = [p for n, p in model.named_parameters() if not n.endswith("threshold")]
    return torch.optim.SGD([{"params": others, "weight_decay": weight_decay},
                            {"params": thresholds, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum)


def run(args) -> int:
    import torch
    import torch.nn.functional as F
    from .data import dataset_info, load_dataset
    from .gated import gated_modules, reset_gate_counters, total_gate_loss
    from .hwcost import conditional_cost
    from .resnet import build_model

    torch.set_num_threads(max(1, args.threads))
    dist = _Dist(args.device)
    device = dist.device

    resume = None
    if args.resume:
        resume = load_checkpoint(args.resume)
        if "optimizer" not in resume or "train_args" not in resume:
            raise SluiceError(f"{args.resume}: has no optimizer state; resume needs a last.pt "
                              f"written by `sluice train`")
        saved = resume["train_args"]
        keep = {"resume", "threads", "device", "log_every", "out", "channels_last"}
        epochs, batch_size = args.epochs, args.batch_size
        for k, v in saved.items():
            if k not in keep:
                setattr(args, k, v)
        if epochs is not None:  # extend (or shorten) the run; the cosine schedule follows
            args.epochs = epochs
        if batch_size is not None:  # e.g. the same global batch over more processes
            args.batch_size = batch_size
        if args.out is None:
            args.out = str(Path(args.resume).parent)
    if args.out is None:
        raise SluiceError("sluice train: -o/--out DIR is required")
    if args.epochs is None:
        args.epochs = 8
    if args.batch_size is None:
        args.batch_size = 128
    if args.gating == "none" and args.shuffle:
        raise SluiceError("--shuffle needs --gating cgnet")
    if getattr(args, "reset_thresholds", False) and not args.init_from:
        raise SluiceError("--reset-thresholds needs --init-from CKPT")
    if args.qat and not (args.init_from or resume):
        raise SluiceError("--qat fine-tunes a trained network: give --init-from CKPT")
    if args.qat and args.shuffle:
        raise SluiceError("--qat: channel shuffle is not quantisable; train without --shuffle")
    if args.hw_lambda < 0:
        raise SluiceError(f"--hw-lambda must be >= 0, got {args.hw_lambda}")
    if args.hw_passes and not args.hw_lambda:
        raise SluiceError("--hw-passes shapes the --hw-lambda term: give --hw-lambda > 0")
    from sluice.hw.params import DEFAULT as HW
    from sluice.hw.params import ROW_SLICES, HwParams
    hw_shape = tuple(HW_default if v is None else v for v, HW_default in (
        (args.hw_rows, HW.rows), (args.hw_cols, HW.cols), (args.hw_skip_cols, HW.skip_cols)))
    if min(hw_shape) < 1 or hw_shape[1] % hw_shape[2]:
        raise SluiceError(f"--hw-rows/--hw-cols/--hw-skip-cols: need positive sizes with the "
                          f"skip group width dividing the columns, got {hw_shape}")
    hw_slices = HW.row_slices if args.hw_row_slices is None else args.hw_row_slices
    if hw_slices not in ROW_SLICES:
        raise SluiceError(f"--hw-row-slices: {hw_slices} must be 1, 2 or 3")
    if args.hw_passes and hw_slices > 1:  # sliced passes: the generator's own rule (HwParams)
        try:
            HwParams(rows=hw_shape[0], cols=hw_shape[1], skip_cols=hw_shape[2],
                     row_slices=hw_slices)
        except SluiceError as e:
            raise SluiceError(str(e).replace("--", "--hw-") + " (--hw-passes with row slices "
                              "counts the generator's passes; or --hw-row-slices 1)") from None
    if args.epochs < 1 or args.batch_size < 1:
        raise SluiceError("--epochs and --batch-size must be >= 1")
    if args.schedule not in ("cosine", "constant"):
        raise SluiceError(f"--schedule must be cosine or constant, got {args.schedule!r}")
    out = Path(args.out)

    info = dataset_info(args.dataset) if args.dataset in ("fashion-mnist", "cifar10",
                                                          "synthetic") else None
    if info is None:
        raise SluiceError(f"--dataset must be fashion-mnist, cifar10 or synthetic, "
                          f"got {args.dataset!r}")
    if resume:
        cfg = resume["config"]
    elif args.qat:  # fine-tunes the network as trained: its architecture, not the flags'
        cfg = load_checkpoint(args.init_from)["config"]
        if (cfg["in_channels"], cfg["num_classes"]) != (info["in_channels"], info["num_classes"]):
            raise SluiceError(f"{args.init_from}: input channels / classes do not match "
                              f"--dataset {args.dataset} (--qat)")
    else:
        cfg = _config_from_args(args, info)
    model = build_model(cfg)  # validates partitions/width before loading data
    train_set = load_dataset(args.dataset, "train", args.data_dir)
    test_set = load_dataset(args.dataset, "test", args.data_dir)
    calib = None
    if args.qat:  # the export's calibration images: the first --calib of the full set
        from .quantize import calibration_batches
        calib = calibration_batches(train_set, args.calib)
    if args.limit_train:
        train_set.images = train_set.images[:args.limit_train]
        train_set.labels = train_set.labels[:args.limit_train]

    teacher = None
    if args.teacher:
        teacher, tck = load_model(args.teacher)
        if tck["config"]["num_classes"] != cfg["num_classes"] or \
                tck["config"]["in_channels"] != cfg["in_channels"]:
            raise SluiceError(f"{args.teacher}: teacher's classes/input channels do not match "
                              f"the student's data set {args.dataset}")
        teacher.to(device).eval()

    torch.manual_seed(args.seed)
    if not resume:
        model = build_model(cfg)  # fresh init under the seed
        if args.init_from:
            init_from(model, args.init_from)
            if getattr(args, "reset_thresholds", False):
                from .gated import gated_modules
                with torch.no_grad():
                    for _, m in gated_modules(model):
                        m.threshold.fill_(args.threshold_init)
    # channels_last: about 1.5x faster on CPU for these small maps. torch 2.13's CPU grouped
    # convolution with one channel per group segfaults in channels_last (width 4, p = 4).
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    if (mf is torch.channels_last and device.type == "cpu" and cfg["gating"] != "none"
            and cfg["width"] // cfg["partitions"] <= 1):
        print("sluice train: one channel per base group: using NCHW memory format "
              "(channels_last crashes torch's CPU grouped convolution here)", flush=True)
        mf = torch.contiguous_format
    if args.qat and not resume:  # as the export does first; a resumed run is equalised already
        from .quantize import equalise
        model = equalise(model, calib)
    model.to(device, memory_format=mf)
    if teacher is not None:
        teacher.to(memory_format=mf)
    opt = make_optimizer(model, args.lr, args.momentum, args.weight_decay)
    thresholds = opt.param_groups[1]["params"]
    steps_per_epoch = math.ceil(len(train_set) // dist.world / args.batch_size)
    total_steps = steps_per_epoch * args.epochs

    def lr_at(step):
        if args.schedule == "constant":
            return args.lr
        return 0.5 * args.lr * (1 + math.cos(math.pi * step / total_steps))

    start_epoch, history = 0, []
    gen = torch.Generator().manual_seed(args.seed)
    if resume:
        model.load_state_dict(resume["state_dict"])
        opt.load_state_dict(resume["optimizer"])
        start_epoch = int(resume["epoch"])
        history = list(resume.get("history", []))
        gen.set_state(resume["rng"])
    net = model
    qnet = None
    if args.qat:
        from .qat import FakeQuantNet
        qnet = net = FakeQuantNet(model, [b.to(device, memory_format=mf) for b in calib],
                                  input_scale=train_set.scale)
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    train_args = {k: v for k, v in vars(args).items() if k not in ("func", "cmd")}
    data_meta = {"dataset": args.dataset, "std": train_set.std, "scale": train_set.scale,
                 "pixel_offset": 128, "image_size": int(train_set.images.shape[-1])}
    gated = bool(gated_modules(model))
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        print(f"sluice train: {args.dataset} {len(train_set)} train / {len(test_set)} test, "
              f"width {cfg['width']} {cfg['block']} gating={cfg['gating']} "
              f"p={cfg['partitions']} {cfg['base']}, {args.epochs} epochs on {device}, "
              f"world {dist.world}", flush=True)

    for epoch in range(start_epoch, args.epochs):
        if qnet is not None:
            qnet.recalibrate()  # the scales the export would compute from these weights
        (model if qnet is None else qnet).train()  # QAT: stays in eval mode (BN frozen and folded)
        reset_gate_counters(model)
        t0 = time.time()
        seen = correct = 0
        loss_sum = hw_sum = 0.0
        for it, (x, y) in enumerate(train_set.batches(args.batch_size, shuffle=True,
                                                      augment=True, gen=gen, rank=dist.rank,
                                                      world=dist.world)):
            step = epoch * steps_per_epoch + it
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            x, y = x.to(device, memory_format=mf), y.to(device)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                tmp = args.kd_temp
                kd = F.kl_div(F.log_softmax(logits / tmp, 1), F.log_softmax(t_logits / tmp, 1),
                              reduction="batchmean", log_target=True) * tmp * tmp
                loss = (1 - args.kd_weight) * loss + args.kd_weight * kd
            if gated:
                loss = loss + args.gate_lambda * total_gate_loss(model, args.gate_target).to(
                    loss.device)
                if args.hw_lambda:
                    hw = conditional_cost(model, *hw_shape, whole_passes=args.hw_passes,
                                          row_slices=hw_slices)
                    hw_sum += float(hw.detach()) * int(y.numel())
                    loss = loss + args.hw_lambda * hw
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.constrain()
            seen += int(y.numel())
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * int(y.numel())
            if dist.main and (it + 1) % args.log_every == 0:
                on = sum(float(m.gate_on) for _, m in gated_modules(model))
                tot = sum(m.gate_total for _, m in gated_modules(model))
                rate = f" gates on {100 * on / tot:5.2f}%" if tot else ""
                if args.hw_lambda:
                    rate += f" hw {hw_sum / seen:.4f}"
                el = time.time() - t0
                print(f"epoch {epoch + 1}/{args.epochs} [{it + 1}/{steps_per_epoch}] "
                      f"loss {loss_sum / seen:.4f} acc {100 * correct / seen:.2f}%{rate} "
                      f"lr {lr_at(step):.4f} {seen * dist.world / el:.0f} img/s", flush=True)
        on = sum(float(m.gate_on) for _, m in gated_modules(model))
        tot = sum(m.gate_total for _, m in gated_modules(model))
        loss_sum, seen, correct, on, tot, hw_sum = dist.sum([loss_sum, seen, correct, on, tot,
                                                             hw_sum])
        train_time = time.time() - t0
        acc, rate, _, _ = evaluate_float(model if qnet is None else qnet, test_set, device,
                                         dist=dist)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "train_gate_rate": on / tot if tot else None, "test_acc": acc,
               "test_gate_rate": None if math.isnan(rate) else rate,
               "epoch_seconds": round(train_time, 1),
               "train_hw_cost": hw_sum / seen if args.hw_lambda else None,
               "thresholds_mean": (float(sum(float(p.detach().mean()) for p in thresholds) /
                                         len(thresholds)) if thresholds else None)}
        history.append(rec)
        if dist.main:
            print(f"epoch {epoch + 1}/{args.epochs} done in {train_time:.0f}s: "
                  f"train loss {rec['train_loss']:.4f} acc {100 * rec['train_acc']:.2f}% | "
                  f"test acc {100 * acc:.2f}%"
                  + (" (fake-quant int8)" if qnet is not None else "")
                  + (f" gates on {100 * rate:.2f}%" if gated else ""), flush=True)
            base = {"config": cfg, "data": data_meta, "train_args": train_args,
                    "epoch": epoch + 1, "history": history,
                    "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
            save_checkpoint(out / "last.pt", dict(base, optimizer=opt.state_dict(),
                                                  rng=gen.get_state()))
            atomic_write_bytes(out / "log.jsonl", lambda f: f.write(
                "".join(json.dumps(r) + "\n" for r in history).encode()))
    if dist.main:
        base = {"config": cfg, "data": data_meta, "train_args": train_args,
                "epoch": args.epochs, "history": history,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
        save_checkpoint(out / "model.pt", base)
        print(f"sluice train: wrote {out / 'model.pt'} (test acc "
              f"{100 * history[-1]['test_acc']:.2f}%)", flush=True)
    if dist.world > 1:
        import torch.distributed as tdist
        tdist.barrier()
        tdist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    import argparse
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))
