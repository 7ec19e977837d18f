"""CIFAR-style ResNet-18 with the convolution class as a parameter.

Stem: 3x3 conv (stride 1) + BN + ReLU; four stages of two BasicBlocks with
``width * (1, 2, 4, 8)`` channels (``width=64`` is the standard ResNet-18); global average
pool; linear classifier. Any input channel count and image size.

Blocks (as in the reference CGNet code):
- ``standard``: only ``conv1`` of each block is gated (``conv2`` dense).
- ``postact``: both convolutions gated; the ReLU comes after the residual addition.
The stem and the 1x1 downsampling shortcuts are always dense, and so is the classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from sluice.errors import SluiceError

from .gated import GATINGS, check_partitions, conv_factory, gated_modules

BLOCKS = ("standard", "postact")


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, conv1_cls, conv2_cls):
        super().__init__()
        self.conv1 = conv1_cls(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = conv2_cls(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-18 for small images; ``conv`` builds the gated convolutions."""

    def __init__(self, conv=nn.Conv2d, block="postact", num_blocks=(2, 2, 2, 2), width=64,
                 in_channels=3, num_classes=10):
        super().__init__()
        if block not in BLOCKS:
            raise SluiceError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        conv2_cls = conv if block == "postact" else nn.Conv2d
        in_planes = width
        stages = []
        for i, n in enumerate(num_blocks):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, conv, conv2_cls))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages[:4] + [nn.Identity()] * (
            4 - len(stages))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def blocks(self):
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if isinstance(stage, nn.Sequential):
                yield from stage

    def conv_bn_pairs(self):
        """(name, conv, bn) for every convolution, in execution order."""
        yield "conv1", self.conv1, self.bn1
        for sname in ("layer1", "layer2", "layer3", "layer4"):
            stage = getattr(self, sname)
            if not isinstance(stage, nn.Sequential):
                continue
            for j, b in enumerate(stage):
                yield f"{sname}.{j}.conv1", b.conv1, b.bn1
                if b.downsample is not None:
                    yield f"{sname}.{j}.downsample.0", b.downsample[0], b.downsample[1]
                yield f"{sname}.{j}.conv2", b.conv2, b.bn2

    @torch.no_grad()
    def constrain(self):
        """Keep the BN scale after every gated conv positive.

        The gate compares the base partial sum with a threshold; folding a negative BN scale into
        the weights would flip that comparison, which SPEC's ``acc_b > thresh`` cannot express.
        """
        gated = {id(m) for _, m in gated_modules(self)}
        for _, conv, bn in self.conv_bn_pairs():
            if id(conv) in gated:
                bn.weight.clamp_(min=1e-3)


def default_config(**overrides) -> dict:
    cfg = dict(arch="resnet18", width=16, block="postact", in_channels=1, num_classes=10,
               num_blocks=[2, 2, 2, 2], gating="cgnet", partitions=4, base="group", alpha=2.0,
               threshold_init=0.0, sparse_bp=False, shuffle=False)
    cfg.update(overrides)
    return cfg


def build_model(cfg: dict) -> ResNet:
    """Rebuild a network from the ``config`` dict stored in every checkpoint."""
    try:
        arch, width, gating = cfg["arch"], int(cfg["width"]), cfg["gating"]
    except KeyError as e:
        raise SluiceError(f"model config: missing field {e.args[0]!r}") from None
    if arch != "resnet18":
        raise SluiceError(f"model config: arch must be 'resnet18', got {arch!r}")
    if gating not in GATINGS:
        raise SluiceError(f"model config: gating must be one of {', '.join(GATINGS)}, "
                          f"got {gating!r}")
    if width < 1:
        raise SluiceError(f"model config: width must be >= 1, got {width}")
    nb = list(cfg.get("num_blocks", [2, 2, 2, 2]))
    if gating == "cgnet":
        p, base = int(cfg["partitions"]), cfg["base"]
        for i in range(len(nb)):
            c = width * 2 ** i
            c_prev = width * 2 ** max(i - 1, 0)
            check_partitions(c_prev, c, p, base, f"--partitions with --width {width}")
        conv = conv_factory("cgnet", partitions=p, base=base, alpha=float(cfg["alpha"]),
                            threshold_init=float(cfg["threshold_init"]),
                            sparse_bp=bool(cfg["sparse_bp"]), shuffle=bool(cfg["shuffle"]))
    else:
        conv = conv_factory("none")
    return ResNet(conv=conv, block=cfg.get("block", "postact"), num_blocks=nb, width=width,
                  in_channels=int(cfg["in_channels"]), num_classes=int(cfg["num_classes"]))
