"""Shared fixtures for the model tests: small networks with realistic BN statistics."""

import pytest
import torch

from sluice.model.data import synthetic
from sluice.model.resnet import build_model, default_config

torch.set_num_threads(1)


def settle(model, data, steps=3):
    """Give BN layers data-driven running statistics, then switch to eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(data.batches(64)):
            model(x)
            if i + 1 >= steps:
                break
    model.eval()
    return model


@pytest.fixture(scope="session")
def syn_train():
    return synthetic("train")


@pytest.fixture(scope="session")
def syn_test():
    return synthetic("test")


def make_gated(syn, *, width=8, partitions=4, base="group", block="postact", seed=0,
               threshold=0.3):
    torch.manual_seed(seed)
    cfg = default_config(width=width, partitions=partitions, base=base, block=block,
                         in_channels=1, num_classes=4)
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "threshold"):
                m.threshold.uniform_(-threshold, threshold + 1.0)
            if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return settle(model, syn), cfg


@pytest.fixture(scope="session")
def gated_model(syn_train):
    return make_gated(syn_train)
