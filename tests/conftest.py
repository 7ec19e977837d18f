"""Fixtures shared by the test folders."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A width-4 gated ResNet-18 on the synthetic set (16 x 16), exported (random thresholds,
    BN statistics from three batches: no training)."""
    import torch

    from sluice.model.data import synthetic
    from sluice.model.export import export_qnet
    from sluice.model.quantize import quantize
    from sluice.model.resnet import build_model, default_config

    torch.manual_seed(0)
    train, test = synthetic("train"), synthetic("test")
    model = build_model(default_config(width=4, partitions=2, base="group", block="postact",
                                       in_channels=1, num_classes=4))
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "threshold"):
                m.threshold.uniform_(-0.3, 1.3)
    model.train()
    with torch.no_grad():  # data-driven BN statistics
        for i, (x, _) in enumerate(train.batches(64)):
            model(x)
            if i == 2:
                break
    model.eval()
    batches = [x for x, _ in train.batches(128)][:2]
    qnet = quantize(model, batches, input_scale=train.scale, image_size=16)
    out = tmp_path_factory.mktemp("tiny") / "export"
    export_qnet(qnet, out, sample_u8=test.images[5], sample_info={"dataset": "synthetic",
                                                                  "index": 5})
    return out
