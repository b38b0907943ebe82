"""The tiny GPT and the MLP: sizes, interfaces, optimizer groups, and that they learn."""

from __future__ import annotations

import pytest
import torch

from lbw_sim.errors import SpecError
from lbw_sim.sim.data import ArrayBatches, Batches, SyntheticSource, digits, estimate_loss
from lbw_sim.sim.models import GPT, GPTConfig, MLPClassifier, MLPConfig


@pytest.fixture
def one_thread():
    """Train on one intra-op thread: on a busy 2-core box, two spinning OpenMP threads can be
    10x slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_reference_gpt_param_count():
    model = GPT(GPTConfig(vocab_size=65))  # 4 layers, 4 heads, 64 wide, context 64
    # per block 49,984 (attn 16,640 + mlp 33,088 + 2 LayerNorms 256); tied wte 4,160;
    # wpe 4,096; final LayerNorm 128
    assert model.num_params() == 4 * 49_984 + 4_160 + 4_096 + 128 == 208_320
    assert model.num_params(non_embedding=True) == 208_320 - 4_096


def test_gpt_forward_shapes_tying_and_causality():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16))
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(0, 17, (3, 8))
    logits, loss = model(idx)
    assert logits.shape == (3, 8, 17) and loss is None
    _, loss = model(idx, idx)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # changing a later token leaves earlier positions' logits unchanged
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % 17
    assert torch.allclose(model(idx2)[0][:, :-1], logits[:, :-1], atol=1e-6)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    assert model.generate(idx[:, :2], 5).shape == (3, 7)


def test_configure_optimizer_decays_matrices_only():
    model = GPT(GPTConfig(vocab_size=11, n_layer=1))
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == model.num_params()  # the tied matrix appears once
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_config_errors_name_the_field():
    with pytest.raises(SpecError, match="model.n_head"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(SpecError, match="model.vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(SpecError, match="model.hidden"):
        MLPConfig(hidden=(0,))


@pytest.mark.slow
def test_tiny_gpt_learns_the_synthetic_source_beyond_unigram(one_thread):
    torch.manual_seed(0)
    src = SyntheticSource(vocab_size=32, order=1, seed=0)
    data = src.dataset(60_000, 10_000, seed=0)
    model = GPT(GPTConfig(vocab_size=32))  # the reference 4 x 4 x 64 model, context 64
    opt = model.configure_optimizer(lr=3e-3, weight_decay=0.0, betas=(0.9, 0.95))
    batches = Batches(data.train, block_size=64, batch_size=16, seed=0)
    for step in range(100):
        x, y = batches.get(step)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    val = estimate_loss(model, data, n_batches=4)
    assert val < src.unigram_entropy - 0.5, (val, src.unigram_entropy, src.entropy_rate)
    assert val > src.entropy_rate - 0.05  # nothing beats the entropy rate


def test_mlp_learns_digits(one_thread):
    torch.manual_seed(0)
    d = digits()
    model = MLPClassifier(MLPConfig(n_in=64, n_classes=10, hidden=(64,)))
    opt = model.configure_optimizer(lr=3e-3)
    batches = ArrayBatches(d.x_train, d.y_train, batch_size=64, seed=0)
    before = estimate_loss(model, d)
    for step in range(150):
        x, y = batches.get(step)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert estimate_loss(model, d) < 0.5 * before
    acc = (model(d.x_val)[0].argmax(-1) == d.y_val).float().mean().item()
    assert acc > 0.85
