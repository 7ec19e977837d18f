"""Checkpoints: everything needed to rebuild, evaluate, quantise and resume a network."""

from __future__ import annotations

from pathlib import Path

from sluice.errors import SluiceError, check_format
from sluice.fileio import atomic_write_bytes  # noqa: F401  (re-exported for model/)

CKPT_FORMAT = "sluice.ckpt/1"

#: The embedded default: width-16 post-activation ResNet-18, Fashion-MNIST, p = 4, group.
#: Commands accept the word ``default`` for it; its training record is the .json beside it.
DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "fmnist_resnet18w16_cg_p4.pt"


def resolve(path) -> Path:
    """``"default"`` -> the embedded checkpoint; anything else unchanged."""
    return DEFAULT_CHECKPOINT if str(path) == "default" else Path(path)




def save_checkpoint(path, ckpt: dict) -> None:
    import torch
    ckpt = dict(ckpt, format=CKPT_FORMAT)
    atomic_write_bytes(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path) -> dict:
    import torch
    path = resolve(path)
    if not path.is_file():
        raise SluiceError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a non-checkpoint file
        raise SluiceError(f"{path}: not a readable PyTorch checkpoint "
                          f"({type(e).__name__})") from None
    check_format(ckpt, CKPT_FORMAT, path, " (a checkpoint written by `sluice train`)")
    for key in ("config", "state_dict", "data"):
        if key not in ckpt:
            raise SluiceError(f"{path}: field {key!r} missing from checkpoint")
    return ckpt


def load_model(path):
    """(model in eval mode, checkpoint dict)."""
    from .resnet import build_model
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise SluiceError(f"{path}: field 'state_dict' does not match its config: "
                          f"{str(e).splitlines()[0]}") from None
    model.eval()
    return model, ckpt
