"""Where the simulations run: pick cuda -> mps -> cpu automatically, or honour an explicit choice.

Nothing else in `lbw_sim.sim` names a device; models, problems and faults follow the device
of the tensors they are given.
"""

from __future__ import annotations

import torch

from lbw_sim.errors import SpecError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(pref: str | torch.device = "auto") -> torch.device:
    """Return the device to run on: the best available for "auto", else the one asked for.

    An explicit choice that this machine cannot honour is an error rather than a silent
    fallback, so a scenario that says "cuda" never quietly runs 50x slower on the CPU.
    """
    if isinstance(pref, torch.device):
        pref = str(pref)
    if not isinstance(pref, str):
        raise SpecError("device", f"expected one of {DEVICE_CHOICES}, got {pref!r}")
    name = pref.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise SpecError("device", f"unknown device {pref!r}; use one of {DEVICE_CHOICES}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SpecError("device", "cuda was requested but no CUDA GPU is available")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpecError(
                "device", f"{name} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return dev
    if kind == "mps" and not _mps_available():
        raise SpecError("device", "mps was requested but Apple MPS is not available")
    return torch.device(name)


def describe_device(device: torch.device | str) -> str:
    """One line for display, e.g. "cuda:0 (NVIDIA H100, 80 GB)" or "cpu (8 threads)"."""
    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return f"cuda:{idx} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
