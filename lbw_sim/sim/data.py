"""Data with no download: a synthetic corpus of known entropy, user text, scikit-learn's digits.

Token data ends up as a `TokenData` (train/val LongTensors on the CPU plus the vocabulary
size and, where known, the best achievable loss). `Batches` cuts a token stream into
(x, y) batches whose order is a pure function of (seed, step): batch `step` can be fetched
directly, so every arm of a comparison sees the same batches and a runner can skip or
replay a range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lbw_sim.errors import SpecError

MAX_TEXT_BYTES = 64 * 2**20


@dataclass
class TokenData:
    """A tokenised corpus split into train and val (1-D int64 tensors on the CPU)."""

    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int
    best_loss: float | None = None  # nats/token the best model could reach, where known
    name: str = "tokens"


# --------------------------------------------------------------------------- synthetic


@dataclass
class SyntheticSource:
    """A random sparse Markov chain of order `order` over `vocab_size` tokens.

    Each context (the previous `order` tokens) has `branching` possible next tokens whose
    probabilities are Dirichlet(alpha); a floor `eps` spread over the whole vocabulary keeps
    the chain ergodic. Because the transition matrix is known, so is the entropy rate

        H = sum_c pi(c) * H(P[c, :])     (nats/token, pi = stationary law of contexts)

    i.e. the lowest cross-entropy any model can reach on its samples.
    """

    vocab_size: int = 65
    order: int = 1
    seed: int = 0
    branching: int = 4
    alpha: float = 0.5
    eps: float = 0.01
    probs: np.ndarray = field(init=False, repr=False)  # (vocab**order, vocab)
    stationary: np.ndarray = field(init=False, repr=False)  # (vocab**order,)

    def __post_init__(self) -> None:
        self._validate()
        V, rng = self.vocab_size, np.random.default_rng(self.seed)
        n_ctx, k = V**self.order, min(self.branching, V)
        support = np.argsort(rng.random((n_ctx, V)), axis=1)[:, :k]
        weights = rng.dirichlet(np.full(k, self.alpha), size=n_ctx)
        probs = np.zeros((n_ctx, V))
        np.put_along_axis(probs, support, weights, axis=1)
        self.probs = (1.0 - self.eps) * probs + self.eps / V
        self.stationary = self._stationary()

    def _validate(self) -> None:
        for name in ("vocab_size", "order", "branching"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise SpecError(f"data.{name}", f"must be a positive integer, got {value!r}")
        if self.vocab_size < 2:
            raise SpecError("data.vocab_size", "need at least 2 tokens")
        if self.vocab_size ** (self.order + 1) > 20_000_000:
            raise SpecError("data.order", "vocab_size**(order+1) > 2e7: transition table too big")
        if not self.alpha > 0:
            raise SpecError("data.alpha", f"Dirichlet concentration must be > 0, got {self.alpha}")
        if not 0 < self.eps <= 1:
            raise SpecError("data.eps", f"must be in (0, 1], got {self.eps}")

    def _next_context(self) -> np.ndarray:
        """(n_ctx, V): index of the context after emitting token b in context c."""
        n_ctx, V = self.probs.shape
        return (np.arange(n_ctx)[:, None] * V) % n_ctx + np.arange(V)[None, :]

    def _stationary(self, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray:
        """Stationary law of the context chain by power iteration (to `tol` in L1)."""
        n_ctx = self.probs.shape[0]
        nxt = self._next_context().ravel()
        pi = np.full(n_ctx, 1.0 / n_ctx)
        for _ in range(max_iter):
            new = np.bincount(nxt, weights=(pi[:, None] * self.probs).ravel(), minlength=n_ctx)
            new /= new.sum()
            if np.abs(new - pi).sum() < tol:
                return new
            pi = new
        raise RuntimeError("stationary distribution did not converge")  # pragma: no cover

    @property
    def entropy_rate(self) -> float:
        """Exact entropy rate in nats/token: the best possible loss on this source."""
        row_h = -(self.probs * np.log(self.probs)).sum(axis=1)
        return float(self.stationary @ row_h)

    @property
    def unigram_entropy(self) -> float:
        """Entropy of the stationary token frequencies: the loss of the best unigram model."""
        p = self.token_frequencies()
        return float(-(p * np.log(p)).sum())

    def token_frequencies(self) -> np.ndarray:
        """Stationary probability of each token."""
        return self.stationary @ self.probs

    def sample(
        self, n_tokens: int, rng: np.random.Generator | int | None = None, n_chains: int = 0
    ) -> np.ndarray:
        """n_tokens int64 tokens from the stationary chain.

        For speed, `n_chains` independent chains (default: one per 65536 tokens, at most 64)
        run side by side and are concatenated. Each starts in the stationary law, so the
        array is stationary throughout; only the `order` tokens after each seam (about 3 in
        100,000) are not conditioned on what precedes them.
        """
        rng = np.random.default_rng(rng)
        n_ctx, V = self.probs.shape
        chains = n_chains or int(np.clip(n_tokens // 65536, 1, 64))
        length = -(-n_tokens // chains)
        # Row c's CDF shifted by c: one searchsorted over all rows samples every chain at once.
        cdf = np.cumsum(self.probs, axis=1)
        cdf[:, -1] = 1.0
        flat_cdf = (cdf + np.arange(n_ctx)[:, None]).ravel()
        ctx = rng.choice(n_ctx, size=chains, p=self.stationary)
        out = np.empty((length, chains), dtype=np.int64)
        for t in range(length):
            tok = np.searchsorted(flat_cdf, ctx + rng.random(chains), side="right") - ctx * V
            out[t] = tok
            ctx = (ctx * V) % n_ctx + tok
        return out.T.reshape(-1)[:n_tokens]

    def decode_context(self, ctx: np.ndarray) -> np.ndarray:
        """Context indices -> (len(ctx), order) tokens, oldest first."""
        powers = self.vocab_size ** np.arange(self.order - 1, -1, -1)
        return (np.asarray(ctx)[:, None] // powers) % self.vocab_size

    def encode_context(self, tokens: np.ndarray) -> np.ndarray:
        """(..., order) tokens, oldest first -> context indices."""
        powers = self.vocab_size ** np.arange(self.order - 1, -1, -1)
        return (np.asarray(tokens) * powers).sum(axis=-1)

    def cross_entropy(self, tokens: np.ndarray) -> float:
        """Mean -log P(token | previous `order` tokens) under the true chain, nats/token."""
        tokens = np.asarray(tokens)
        windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], self.order)
        ctx = self.encode_context(windows)
        return float(-np.log(self.probs[ctx, tokens[self.order :]]).mean())

    def dataset(self, n_train: int, n_val: int, seed: int = 0) -> TokenData:
        """Independent train and val samples as a TokenData with best_loss = entropy rate."""
        rng = np.random.default_rng([self.seed, seed])
        train, val = self.sample(n_train, rng), self.sample(n_val, rng)
        return TokenData(
            torch.from_numpy(train), torch.from_numpy(val), self.vocab_size,
            best_loss=self.entropy_rate, name=f"markov{self.order}-v{self.vocab_size}",
        )


def ngram_entropy(tokens: np.ndarray, order: int, vocab_size: int) -> float:
    """Plug-in estimate of H(token | previous `order` tokens) from counts, nats/token.

    What an order-`order` count model would score on its own training data: a
    model-free check of SyntheticSource.entropy_rate, and a baseline for real text (biased
    low by about (#observed contexts x next tokens) / (2 n) when counts are sparse).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if order == 0:
        counts = np.bincount(tokens, minlength=vocab_size)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())
    windows = np.lib.stride_tricks.sliding_window_view(tokens, order + 1)
    powers = vocab_size ** np.arange(order, -1, -1)
    _, joint = np.unique(windows @ powers, return_counts=True)
    _, ctx = np.unique(windows[:, :-1] @ powers[1:], return_counts=True)
    n = len(windows)
    h_joint = -(joint / n * np.log(joint / n)).sum()
    h_ctx = -(ctx / n * np.log(ctx / n)).sum()
    return float(h_joint - h_ctx)


# --------------------------------------------------------------------------- text


@dataclass
class TextSource(TokenData):
    """Character-level text: vocabulary = sorted set of characters, 90/10 train/val split."""

    chars: str = ""

    @classmethod
    def from_text(cls, text: str, val_fraction: float = 0.1, name: str = "text") -> TextSource:
        if not isinstance(text, str) or not text:
            raise SpecError("data.text", "the text is empty")
        if not 0.0 < val_fraction < 1.0:
            raise SpecError("data.val_fraction", f"must be in (0, 1), got {val_fraction}")
        if "\x00" in text:
            raise SpecError("data.text", "the text contains NUL bytes: is it a binary file?")
        try:
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one per char
        except UnicodeEncodeError:
            raise SpecError("data.text", "the text holds unpaired surrogates") from None
        uniq = np.unique(codes)
        ids = torch.from_numpy(np.searchsorted(uniq, codes).astype(np.int64))
        chars = "".join(map(chr, uniq.tolist()))
        n = int(len(ids) * (1.0 - val_fraction))
        if n < 2 or len(ids) - n < 2:
            raise SpecError("data.text", f"only {len(ids)} characters: too short to split")
        return cls(ids[:n], ids[n:], len(chars), name=name, chars=chars)

    @classmethod
    def from_file(
        cls, path: str | Path, val_fraction: float = 0.1, max_bytes: int = MAX_TEXT_BYTES
    ) -> TextSource:
        """Read a UTF-8 text file; empty, binary or over-`max_bytes` files are refused."""
        path = Path(path)
        if not path.is_file():
            raise SpecError("data.path", f"{path.name}: no such file")
        size = path.stat().st_size
        if size == 0:
            raise SpecError("data.path", f"{path.name} is empty")
        if size > max_bytes:
            raise SpecError("data.path", f"{path.name} is {size / 2**20:.1f} MiB; "
                            f"the limit is {max_bytes / 2**20:.0f} MiB")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SpecError("data.path", f"{path.name} is not UTF-8 text "
                            f"(byte {err.start}): is it a binary file?") from None
        return cls.from_text(text, val_fraction, name=path.stem)

    def encode(self, text: str) -> torch.Tensor:
        lookup = {c: i for i, c in enumerate(self.chars)}
        unknown = set(text) - lookup.keys()
        if unknown:
            raise SpecError("data.text", f"characters not in the vocabulary: {sorted(unknown)}")
        return torch.tensor([lookup[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.chars[i] for i in torch.as_tensor(ids).tolist())


def shared_text_path() -> Path | None:
    """tinyshakespeare in ../shared/data next to the repo root, if present (benchmarks only)."""
    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare.txt"
    return path if path.is_file() else None


# --------------------------------------------------------------------------- digits


@dataclass
class ArrayData:
    """Features and labels for a classifier, split into train and val (CPU tensors)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int
    name: str = "arrays"

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def digits(val_fraction: float = 0.2, seed: int = 0) -> ArrayData:
    """scikit-learn's bundled 8x8 digits (1797 images, no download); pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    if not 0.0 < val_fraction < 1.0:
        raise SpecError("data.val_fraction", f"must be in (0, 1), got {val_fraction}")
    bunch = load_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(y) * val_fraction))
    val, train = perm[:n_val], perm[n_val:]
    return ArrayData(x[train], y[train], x[val], y[val], n_classes=10, name="digits")


# --------------------------------------------------------------------------- batching


def _step_generator(seed: int, step: int) -> torch.Generator:
    """A generator whose state depends only on (seed, step): random access to batches."""
    mixed = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))


@dataclass
class Batches:
    """Random windows of a token stream: `get(step)` -> (x, y), each (batch_size, block_size).

    y is x shifted by one token. Batch `step` depends only on (seed, step), so batches can be
    fetched in any order, skipped, or replayed identically in another arm.
    """

    tokens: torch.Tensor
    block_size: int
    batch_size: int
    seed: int = 0
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        self.tokens = torch.as_tensor(self.tokens, dtype=torch.long).cpu()
        if self.tokens.dim() != 1:
            raise SpecError("data.tokens", "expected a 1-D token stream")
        if not (isinstance(self.block_size, int) and self.block_size >= 1):
            raise SpecError("data.block_size", f"must be an integer >= 1, got {self.block_size!r}")
        if len(self.tokens) < self.block_size + 2:
            raise SpecError("data.block_size", f"{len(self.tokens)} tokens are too few for "
                            f"windows of {self.block_size} + 1")
        if self.batch_size < 1:
            raise SpecError("train.batch_size", f"must be >= 1, got {self.batch_size}")
        self._span = torch.arange(self.block_size + 1)
        self._pin = torch.device(self.device or "cpu").type == "cuda"

    def offsets(self, step: int) -> torch.Tensor:
        """Start index of each window of batch `step`."""
        high = len(self.tokens) - self.block_size - 1
        gen = _step_generator(self.seed, step)
        return torch.randint(0, high + 1, (self.batch_size,), generator=gen)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.tokens[self.offsets(step)[:, None] + self._span]
        if self._pin:
            chunk = chunk.pin_memory()
        chunk = chunk.to(self.device, non_blocking=True) if self.device is not None else chunk
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    __getitem__ = get


@dataclass
class ArrayBatches:
    """Mini-batches of (x, y) arrays with the same random-access contract as `Batches`."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    seed: int = 0
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.y) == 0:
            raise SpecError("data", f"x and y need the same, non-zero length "
                            f"({len(self.x)} vs {len(self.y)})")
        if self.batch_size < 1:
            raise SpecError("train.batch_size", f"must be >= 1, got {self.batch_size}")

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = _step_generator(self.seed, step)
        idx = torch.randint(0, len(self.y), (self.batch_size,), generator=gen)
        x, y = self.x[idx], self.y[idx]
        if self.device is not None:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x, y

    __getitem__ = get


# --------------------------------------------------------------------------- evaluation

VAL_SEED = 1234  # fixed: every evaluation of every arm uses the same val batches


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    source: TokenData | ArrayData | torch.Tensor,
    block_size: int | None = None,
    batch_size: int = 32,
    n_batches: int = 8,
    device: torch.device | str | None = None,
) -> float:
    """Mean validation loss on a fixed set of batches (the whole val set for ArrayData).

    Puts the model in eval mode for the measurement and restores its previous mode.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if isinstance(source, ArrayData):
            batches = [(source.x_val[i : i + 512], source.y_val[i : i + 512])
                       for i in range(0, len(source.y_val), 512)]
        else:
            val = source.val if isinstance(source, TokenData) else source
            block_size = block_size or model.config.block_size
            b = Batches(val, block_size, batch_size, seed=VAL_SEED)
            batches = [b.get(i) for i in range(n_batches)]
        total, count = torch.zeros((), device=device), 0
        for x, y in batches:
            _, loss = model(x.to(device), y.to(device))
            total += loss.float() * len(y)
            count += len(y)
        return float(total / count)
    finally:
        model.train(was_training)


val_loss = estimate_loss


# --------------------------------------------------------------------------- teacher-student


def teacher_student(n_train: int = 4096, n_val: int = 1024, n_in: int = 16, seed: int = 0,
                    width: int = 32, noise: float = 0.1, shift: float = 0.0) -> ArrayData:
    """Regression on a fixed random teacher: y = v . tanh(W x) + noise, x ~ N(0, I).

    The teacher (W with unit-variance rows scaled by 1/sqrt(n_in), v by 1/sqrt(width)) and
    the samples are a pure function of `seed`; the noise sets the best achievable MSE
    (noise**2). `n_classes` is 0: the targets are real numbers. `shift` in [0, 1] moves the
    teacher towards a second random one, (W, v) -> sqrt(1 - s^2) (W, v) + s (W', v'), keeping
    its scale: the shifted task of a fine-tune (s = 0 is the teacher itself; 1 a new one).
    """
    if not 0.0 <= shift <= 1.0:
        raise SpecError("data.shift", f"must be in [0, 1], got {shift!r}")
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_in", n_in)):
        if not (isinstance(value, int) and value >= 1):
            raise SpecError(f"data.{name}", f"must be a positive integer, got {value!r}")
    g = torch.Generator().manual_seed(int(seed))
    w = torch.randn(width, n_in, generator=g) / n_in ** 0.5
    v = torch.randn(width, generator=g) / width ** 0.5 * 2.0
    x = torch.randn(n_train + n_val, n_in, generator=g)
    if shift:
        g2 = torch.Generator().manual_seed(int(seed) + 10_007)
        keep = (1.0 - shift ** 2) ** 0.5
        w = keep * w + shift * torch.randn(width, n_in, generator=g2) / n_in ** 0.5
        v = keep * v + shift * torch.randn(width, generator=g2) / width ** 0.5 * 2.0
    y = torch.tanh(x @ w.T * 2.0) @ v + noise * torch.randn(n_train + n_val, generator=g)
    return ArrayData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes=0,
                     name="teacher")
