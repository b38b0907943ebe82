"""Small models to train under a guard: a tiny GPT (char/byte LM) and an MLP classifier.

The GPT follows karpathy/nanoGPT: pre-LayerNorm blocks, causal self-attention through
`F.scaled_dot_product_attention`, a GELU MLP, learned positions and a language-model head
tied to the token embedding. Both models share one interface so a runner can treat them
alike: `forward(x, targets=None) -> (logits, loss)` and `configure_optimizer(...)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from lbw_sim.errors import SpecError


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, like GPT-2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise SpecError(f"model.{name}", f"must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise SpecError("model.n_head", f"n_embd={self.n_embd} is not divisible by it")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError("model.dropout", f"must be in [0, 1), got {self.dropout!r}")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        # query, key, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def configure_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only; biases, norms stay undecayed.

    Fused on CUDA, foreach elsewhere: the update then costs a handful of kernel launches.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type == "cuda" for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


class AdamWModel(nn.Module):
    """A model of this module: `configure_optimizer` is AdamW over its parameters
    (`configure_adamw`) with its family's defaults (language models: decay 0.1, betas
    0.9/0.95; the small classifiers and regressors: 0.01, 0.9/0.999)."""

    DEFAULT_DECAY: float = 0.1
    DEFAULT_BETAS: tuple[float, float] = (0.9, 0.95)

    def configure_optimizer(self, lr: float, weight_decay: float | None = None,
                            betas: tuple[float, float] | None = None) -> torch.optim.AdamW:
        return configure_adamw(self, lr,
                               self.DEFAULT_DECAY if weight_decay is None else weight_decay,
                               betas or self.DEFAULT_BETAS)


class _SmallModel(AdamWModel):
    """The digits classifiers and the residual MLP: lighter decay, Adam's default betas."""

    DEFAULT_DECAY = 0.01
    DEFAULT_BETAS = (0.9, 0.999)


class GPT(AdamWModel):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); non_embedding drops the position table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, given targets (B, T), the mean cross-entropy in nats."""
        T = idx.size(1)
        if self.config.block_size < T:
            raise ValueError(f"sequence of length {T} > block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample continuations of idx (B, T), cropping the context to block_size."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size :])
            probs = F.softmax(logits[:, -1, :] / temperature, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        return idx


@dataclass
class MLPConfig:
    n_in: int = 64
    n_classes: int = 10
    hidden: tuple[int, ...] = (128, 128)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        for name, value in (("n_in", self.n_in), ("n_classes", self.n_classes)):
            if not (isinstance(value, int) and value >= 1):
                raise SpecError(f"model.{name}", f"must be a positive integer, got {value!r}")
        if not all(isinstance(h, int) and h >= 1 for h in self.hidden):
            raise SpecError("model.hidden", f"must be positive integers, got {self.hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError("model.dropout", f"must be in [0, 1), got {self.dropout!r}")


class MLPClassifier(_SmallModel):
    """Linear -> GELU (-> Dropout) stacks, then a linear head over the classes."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.n_in
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(config.dropout)]
            width = h
        layers.append(nn.Linear(width, config.n_classes))
        self.net = nn.Sequential(*layers)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.net(x)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss


# --- the task suite's other families: a CNN, a recurrent char LM, a residual MLP ---------------

def _positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, int) and value >= 1):
            raise SpecError(f"model.{name}", f"must be a positive integer, got {value!r}")


@dataclass
class CNNConfig:
    n_in: int = 64          # an 8x8 image, flattened (scikit-learn's digits)
    n_classes: int = 10
    channels: int = 16      # the second conv has twice as many
    side: int = 8

    def __post_init__(self) -> None:
        _positive(self, "n_in", "n_classes", "channels", "side")
        if self.side * self.side != self.n_in:
            raise SpecError("model.side", f"side**2 = {self.side ** 2} is not n_in={self.n_in}")


class DigitsCNN(_SmallModel):
    """conv3x3 -> GELU -> conv3x3 (stride 2) -> GELU -> global average -> linear; no
    BatchNorm, so every optimizer (Schedule-Free's x/y switch included) sees one model."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.head = nn.Linear(2 * c, config.n_classes)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        side = self.config.side
        h = F.gelu(self.conv1(x.view(-1, 1, side, side)))
        h = F.gelu(self.conv2(h)).mean(dim=(2, 3))
        logits = self.head(h)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss


@dataclass
class RNNConfig:
    vocab_size: int
    block_size: int = 32
    n_embd: int = 64
    hidden: int = 128
    n_layer: int = 1

    def __post_init__(self) -> None:
        _positive(self, "vocab_size", "block_size", "n_embd", "hidden", "n_layer")


class CharGRU(AdamWModel):
    """A recurrent char LM: embedding -> GRU -> linear head; the GPT's interface."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.rnn = nn.GRU(config.n_embd, config.hidden, config.n_layer, batch_first=True)
        self.lm_head = nn.Linear(config.hidden, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, _ = self.rnn(self.wte(idx))
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


@dataclass
class ResMLPConfig:
    n_in: int = 16
    width: int = 64
    depth: int = 3

    def __post_init__(self) -> None:
        _positive(self, "n_in", "width", "depth")


class ResMLP(_SmallModel):
    """Pre-LayerNorm residual blocks (x + W2 GELU(W1 LN(x))) for scalar regression (MSE)."""

    def __init__(self, config: ResMLPConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.inp = nn.Linear(config.n_in, w)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.GELU(), nn.Linear(2 * w, w))
            for _ in range(config.depth))
        self.out = nn.Linear(w, 1)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        pred = self.out(h).squeeze(-1)
        loss = None if targets is None else F.mse_loss(pred, targets)
        return pred, loss

