"""Data: the synthetic source's entropy rate, text and digits loaders, deterministic batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lbw_sim.errors import SpecError
from lbw_sim.sim.data import (
    ArrayBatches,
    Batches,
    SyntheticSource,
    TextSource,
    digits,
    estimate_loss,
    ngram_entropy,
    shared_text_path,
)
from lbw_sim.sim.models import MLPClassifier, MLPConfig


@pytest.fixture(scope="module")
def bigram() -> tuple[SyntheticSource, np.ndarray]:
    src = SyntheticSource(vocab_size=32, order=1, seed=0)
    return src, src.sample(400_000, rng=1)


def test_transition_rows_and_stationary_law_are_distributions():
    src = SyntheticSource(vocab_size=16, order=2, seed=3)
    assert src.probs.shape == (16**2, 16)
    np.testing.assert_allclose(src.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(src.stationary.sum(), 1.0)
    # stationarity: pushing pi through one step of the context chain returns pi
    nxt = (np.arange(256)[:, None] * 16) % 256 + np.arange(16)[None, :]
    pushed = np.bincount(nxt.ravel(), (src.stationary[:, None] * src.probs).ravel(), 256)
    np.testing.assert_allclose(pushed, src.stationary, atol=1e-12)
    assert 0 < src.entropy_rate < src.unigram_entropy <= np.log(16)


def test_empirical_cross_entropy_matches_the_entropy_rate(bigram):
    src, tokens = bigram
    nll = -np.log(src.probs[tokens[:-1], tokens[1:]])
    stderr = nll.std() / np.sqrt(len(nll))
    assert abs(nll.mean() - src.entropy_rate) < 5 * stderr + 2e-3
    assert src.cross_entropy(tokens) == pytest.approx(nll.mean())


def test_count_based_estimates_agree(bigram):
    src, tokens = bigram
    # plug-in estimates are biased low by about (#cells)/(2n) = 1e-3 here
    assert ngram_entropy(tokens, 1, 32) == pytest.approx(src.entropy_rate, abs=0.02)
    assert ngram_entropy(tokens, 0, 32) == pytest.approx(src.unigram_entropy, abs=0.01)
    freq = np.bincount(tokens, minlength=32) / len(tokens)
    np.testing.assert_allclose(freq, src.token_frequencies(), atol=0.005)


def test_higher_order_source_and_sampling_determinism():
    src = SyntheticSource(vocab_size=12, order=3, seed=5)
    a, b = src.sample(50_000, rng=7), src.sample(50_000, rng=7)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 12
    assert src.cross_entropy(a) == pytest.approx(src.entropy_rate, abs=0.05)
    data = src.dataset(10_000, 2_000, seed=1)
    assert data.best_loss == src.entropy_rate and data.vocab_size == 12
    assert len(data.train) == 10_000 and len(data.val) == 2_000


def test_synthetic_config_errors_name_the_field():
    with pytest.raises(SpecError, match="data.order"):
        SyntheticSource(vocab_size=256, order=3)
    with pytest.raises(SpecError, match="data.alpha"):
        SyntheticSource(alpha=0.0)
    with pytest.raises(SpecError, match="data.vocab_size"):
        SyntheticSource(vocab_size=1)


def test_text_source_roundtrip_and_split():
    text = "hello world, hello lbw!\n" * 50
    src = TextSource.from_text(text)
    assert src.vocab_size == len(set(text))
    assert len(src.train) == int(0.9 * len(text)) and len(src.train) + len(src.val) == len(text)
    assert src.decode(torch.cat([src.train, src.val])) == text
    assert src.decode(src.encode("hello")) == "hello"


def test_text_file_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "nul.txt").write_bytes(b"abc\x00def" * 10)
    (tmp_path / "big.txt").write_text("a" * 2000)
    with pytest.raises(SpecError, match="empty"):
        TextSource.from_file(tmp_path / "empty.txt")
    with pytest.raises(SpecError, match="binary"):
        TextSource.from_file(tmp_path / "bin.dat")
    with pytest.raises(SpecError, match="binary"):
        TextSource.from_file(tmp_path / "nul.txt")
    with pytest.raises(SpecError, match="limit"):
        TextSource.from_file(tmp_path / "big.txt", max_bytes=1000)
    with pytest.raises(SpecError, match="no such file"):
        TextSource.from_file(tmp_path / "missing.txt")
    ok = TextSource.from_file(tmp_path / "big.txt")
    assert ok.vocab_size == 1 and ok.name == "big"


def test_shared_text_path_finds_tinyshakespeare_in_shared_data():
    """The file in ../shared/data beside the checkout when it is there, else None."""
    expected = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
    assert shared_text_path() == (expected if expected.is_file() else None)


def test_digits_shapes():
    d = digits(val_fraction=0.2, seed=0)
    assert d.x_train.shape == (1438, 64) and d.x_val.shape == (359, 64)
    assert d.y_train.dtype == torch.long and set(d.y_train.tolist()) == set(range(10))
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    assert d.n_features == 64 and d.n_classes == 10


def test_batches_are_deterministic_random_access():
    tokens = torch.arange(10_000)
    b = Batches(tokens, block_size=16, batch_size=4, seed=11)
    in_order = [b.get(s) for s in range(10)]
    x5, y5 = b.get(5)  # random access, after later batches were drawn
    assert torch.equal(x5, in_order[5][0]) and torch.equal(y5, in_order[5][1])
    again = Batches(tokens, block_size=16, batch_size=4, seed=11)
    assert all(torch.equal(again.get(s)[0], in_order[s][0]) for s in reversed(range(10)))
    assert not torch.equal(Batches(tokens, 16, 4, seed=12).get(5)[0], x5)
    assert not torch.equal(b.get(6)[0], x5)
    assert x5.shape == (4, 16) and torch.equal(y5, x5 + 1)  # y is x shifted by one


def test_array_batches_random_access():
    d = digits()
    b = ArrayBatches(d.x_train, d.y_train, batch_size=8, seed=2)
    x3, y3 = b.get(3)
    b.get(9)
    assert torch.equal(b.get(3)[0], x3) and torch.equal(b[3][1], y3)
    assert x3.shape == (8, 64) and y3.shape == (8,)


def test_estimate_loss_uses_fixed_batches_and_restores_mode():
    torch.manual_seed(0)
    model = MLPClassifier(MLPConfig())
    d = digits()
    model.train()
    a, b = estimate_loss(model, d), estimate_loss(model, d)
    assert a == b and model.training
    assert a == pytest.approx(np.log(10), abs=0.3)
