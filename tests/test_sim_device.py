"""Device choice: auto picks the best available; an unavailable explicit choice is an error."""

from __future__ import annotations

import pytest
import torch

from lbw_sim.errors import SpecError
from lbw_sim.sim.device import describe_device, pick_device


def test_auto_picks_an_available_device():
    dev = pick_device("auto")
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif dev.type != "mps":
        assert dev == torch.device("cpu")
    assert torch.zeros(1, device=dev).device.type == dev.type


def test_explicit_cpu_and_descriptions():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    assert describe_device("cpu").startswith("cpu (")
    assert describe_device(pick_device()).startswith(pick_device().type)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(SpecError, match="device: cuda was requested"):
        pick_device("cuda")


def test_unknown_device_names_the_field():
    with pytest.raises(SpecError, match="device"):
        pick_device("tpu")
    with pytest.raises(SpecError, match="device"):
        pick_device(3)
