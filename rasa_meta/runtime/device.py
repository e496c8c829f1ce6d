"""Which torch device a ``device`` setting means: the one resolution used by serving,
the inner loop, meta-training and the tools."""

from __future__ import annotations

import torch

from rasa_meta.runtime.errors import InvalidOptionError

DEVICE_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA where available, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_device(device: str) -> None:
    """Raise InvalidOptionError (with the fix) for a setting that names no usable device here."""
    device = str(device)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise InvalidOptionError(f"device '{device}' is unknown. Use {DEVICE_HELP}.")
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise InvalidOptionError(
            f"device '{device}' was asked for but CUDA is not available on this machine. "
            f"Set 'device: auto' or 'device: cpu'."
        )
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise InvalidOptionError(
            f"device '{device}' does not exist; this machine has {torch.cuda.device_count()} "
            f"CUDA device(s) (cuda:0 ...)."
        )
