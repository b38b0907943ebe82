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


def test_batches_model_and_faults_run_on_the_picked_device():
    from lbw_sim.sim.data import Batches, SyntheticSource
    from lbw_sim.sim.faults import FaultSchedule
    from lbw_sim.sim.models import GPT, GPTConfig

    dev = pick_device()
    data = SyntheticSource(vocab_size=16, order=1, seed=0).dataset(5_000, 1_000)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=16)).to(dev)
    opt = model.configure_optimizer(lr=1e-3)
    sched = FaultSchedule.from_list(
        [{"kind": "grad_noise", "at": 0}, {"kind": "corrupt_batch", "at": 0},
         {"kind": "nonfinite", "at": 1, "fraction": 0.5}], n_classes=16)
    gen = torch.Generator(device=dev).manual_seed(0)
    batches = Batches(data.train, block_size=16, batch_size=4, device=dev)
    for step in range(2):
        x, y = sched.corrupt_batch(*batches.get(step), step, gen)
        assert x.device.type == dev.type
        loss = sched.perturb_loss(model(x, y)[1], step)
        loss.backward()
        sched.perturb_grads(model.parameters(), step, gen)
        opt.step()
        opt.zero_grad()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fault_hooks_do_not_synchronise_on_cuda():
    from lbw_sim.sim.faults import FaultSchedule

    sched = FaultSchedule.from_list(
        [{"kind": "grad_noise", "at": 1}, {"kind": "nonfinite", "at": 2, "fraction": 0.5},
         {"kind": "loss_scale_overflow", "at": 3}, {"kind": "corrupt_batch", "at": 4},
         {"kind": "nonfinite", "target": "loss", "at": 5}, {"kind": "lr_spike", "at": 6}],
        n_classes=10)
    p = torch.nn.Parameter(torch.randn(100, device="cuda"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randint(0, 10, (8, 4), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(8):
            p.grad = torch.ones_like(p)
            xb, yb = sched.corrupt_batch(x, x, step, gen)
            sched.perturb_loss((p * 2).sum(), step)
            sched.perturb_grads([p], step, gen)
            sched.lr_factor(step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
