"""Data sets without downloads: Fashion-MNIST (Debian), CIFAR-10 (local pickles), synthetic.

Images stay uint8 (N, C, H, W) in memory; augmentation (random crop with padding, horizontal
flip) works on whole uint8 batches, and normalisation is

    x = (pixel - 128) * scale,   scale = 1 / (255 * std)

so that the int8 network input is exactly ``pixel - 128`` with scale ``scale`` and zero padding
in the float model is zero padding in the integer model (see ``export.py``).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sluice.errors import SluiceError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
DATASETS = ("fashion-mnist", "cifar10", "synthetic")
PIXEL_OFFSET = 128


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W), int64 labels, and how to normalise and augment them."""

    images: torch.Tensor
    labels: torch.Tensor
    std: float
    crop_pad: int = 4
    flip: bool = True
    name: str = ""

    def __len__(self):
        return int(self.labels.shape[0])

    @property
    def scale(self) -> float:
        """Float value of one step of the int8 input (``pixel - 128``)."""
        return 1.0 / (255.0 * self.std)

    def normalise(self, u8: torch.Tensor) -> torch.Tensor:
        return (u8.float() - PIXEL_OFFSET) * self.scale

    def augment(self, u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = u8.shape
        if self.crop_pad:
            p = self.crop_pad
            padded = torch.zeros((n, c, h + 2 * p, w + 2 * p), dtype=u8.dtype)
            padded[:, :, p:p + h, p:p + w] = u8
            oy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=gen)
            rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
            u8 = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                        rows, cols]
        if self.flip:
            f = torch.rand(n, generator=gen) < 0.5
            u8 = torch.where(f[:, None, None, None], u8.flip(-1), u8)
        return u8

    def batches(self, batch_size, *, shuffle=False, augment=False, gen=None, rank=0, world=1):
        """Yield (float images, labels); with ``world > 1`` each rank sees its own shard."""
        n = len(self)
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        if world > 1:
            per = n // world
            order = order[rank * per:(rank + 1) * per]
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            u8 = self.images[idx]
            if augment:
                u8 = self.augment(u8, gen)
            yield self.normalise(u8), self.labels[idx]


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise SluiceError(f"{path}: missing (Fashion-MNIST expects gzipped idx files "
                          f"{', '.join(sum(FASHION_MNIST_FILES.values(), ()))} there; "
                          f"Debian package dataset-fashion-mnist)") from None
    except (OSError, EOFError) as e:
        raise SluiceError(f"{path}: not a readable gzip file: {e}") from None
    if len(raw) < 4 + 4 * ndim:
        raise SluiceError(f"{path}: too short for an idx header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x800 + ndim:
        raise SluiceError(f"{path}: idx magic {magic:#x}, expected {0x800 + ndim:#x} "
                          f"(uint8, {ndim} dims)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise SluiceError(f"{path}: holds {data.size} values, header says {dims}")
    return data.reshape(dims)


def load_fashion_mnist(split: str, root=None, pad_to: int = 32) -> ImageSet:
    """Fashion-MNIST, 28x28 padded with background (0) to ``pad_to`` x ``pad_to``."""
    root = Path(root) if root else FASHION_MNIST_DIR
    if not root.is_dir():
        raise SluiceError(f"Fashion-MNIST directory {root} does not exist (expected the gzipped "
                          f"idx files of Debian's dataset-fashion-mnist there; --data-dir)")
    img_name, lab_name = FASHION_MNIST_FILES[split]
    images = _read_idx(root / img_name, 3)
    labels = _read_idx(root / lab_name, 1)
    if images.shape[0] != labels.shape[0]:
        raise SluiceError(f"{root}: {img_name} has {images.shape[0]} images but {lab_name} "
                          f"{labels.shape[0]} labels")
    t = torch.from_numpy(images.copy())[:, None]
    if pad_to and pad_to > t.shape[-1]:
        a = (pad_to - t.shape[-1]) // 2
        b = pad_to - t.shape[-1] - a
        t = torch.nn.functional.pad(t, (a, b, a, b))
    return ImageSet(t, torch.from_numpy(labels.astype(np.int64)), std=0.5, crop_pad=4,
                    flip=True, name="fashion-mnist")


def _find_cifar_dir(root: Path) -> Path:
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "test_batch").is_file():
            return cand
    raise SluiceError(f"CIFAR-10: {root} does not hold the python-pickle batches (expected "
                      f"data_batch_1..5 and test_batch in {root} or {root}/cifar-10-batches-py)")


def load_cifar10(split: str, root) -> ImageSet:
    if root is None:
        raise SluiceError("CIFAR-10 needs --data-dir pointing at cifar-10-batches-py "
                          "(no downloads here)")
    root = Path(root)
    if not root.is_dir():
        raise SluiceError(f"CIFAR-10 directory {root} does not exist (--data-dir)")
    d = _find_cifar_dir(root)
    xs, ys = [], []
    for name in CIFAR10_FILES[split]:
        path = d / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except FileNotFoundError:
            raise SluiceError(f"{path}: missing (CIFAR-10 python batches expected)") from None
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise SluiceError(f"{path}: not a CIFAR-10 python batch (dict with b'data' "
                              f"10000x3072 uint8 and b'labels'): {type(e).__name__}") from None
        xs.append(data)
        ys.append(labels)
    return ImageSet(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)),
                    std=0.25, crop_pad=4, flip=True, name="cifar10")


def synthetic(split: str, n: int | None = None, size: int = 16, channels: int = 1,
              classes: int = 4, seed: int = 0) -> ImageSet:
    """Tiny learnable set for tests: class c is a bright square in quadrant c, plus noise."""
    n = n or (512 if split == "train" else 128)
    g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
    labels = torch.randint(0, classes, (n,), generator=g)
    img = torch.randint(0, 60, (n, channels, size, size), generator=g).to(torch.int32)
    h = size // 2
    for c in range(classes):
        sel = labels == c
        y0, x0 = (c // 2 % 2) * h, (c % 2) * h
        img[sel, :, y0 + 1:y0 + h - 1, x0 + 1:x0 + h - 1] += 150
    return ImageSet(img.clamp(0, 255).to(torch.uint8), labels, std=0.5, crop_pad=1, flip=False,
                    name="synthetic")


def load_dataset(name: str, split: str, data_dir=None) -> ImageSet:
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir)
    if name == "cifar10":
        return load_cifar10(split, data_dir)
    if name == "synthetic":
        return synthetic(split)
    raise SluiceError(f"--dataset must be one of {', '.join(DATASETS)}, got {name!r}")


def dataset_info(name: str) -> dict:
    """in_channels, num_classes, image size of a data set (without loading it)."""
    return {"fashion-mnist": dict(in_channels=1, num_classes=10, image_size=32),
            "cifar10": dict(in_channels=3, num_classes=10, image_size=32),
            "synthetic": dict(in_channels=1, num_classes=4, image_size=16)}[name]
