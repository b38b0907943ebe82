"""Pretrained starting points for fine-tune tasks: trained here once, cached, never downloaded.

    path = checkpoint(Pretraining("gpt_prose", model, data, steps=1000, lr=1e-2))
    # a scenario's model block {kind: gpt, ..., init: path} then starts from these weights

A `Pretraining` says what to train from scratch before a fine-tune: a model block and a data
block (the scenario's syntax), steps, LR and batch size. It is trained on seed 0, on one
torch thread, with plain AdamW (the model's `configure_optimizer`, linear warm-up then
cosine, gradients clipped at norm 1) and saved with `torch.save` as tensors and numbers
only, so it loads with `torch.load(weights_only=True)`. The file's name holds a hash of the
definition and of the bytes of every file it reads, so a changed definition (or text)
builds a new file and an old one is never read for it; a missing file is rebuilt. The
folder: $LBW_SIM_CACHE, else $XDG_CACHE_HOME/lbw_sim, else ~/.cache/lbw_sim.

A char LM reads its pretraining text with the fine-tune text's vocabulary (`vocab`, a text
file) so that both share token ids; every character of the pretraining text must be in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lbw_sim.errors import SpecError

#: Bumped when the training recipe below changes, so old checkpoints are not reused.
RECIPE = 1
CLIP_NORM = 1.0


def cache_dir() -> Path:
    """Where checkpoints live: $LBW_SIM_CACHE, $XDG_CACHE_HOME/lbw_sim or ~/.cache/lbw_sim."""
    if os.environ.get("LBW_SIM_CACHE"):
        return Path(os.environ["LBW_SIM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lbw_sim"


@dataclass(frozen=True)
class Pretraining:
    """What to train before a fine-tune (seed 0, plain AdamW; see the module doc)."""

    name: str
    model: dict[str, Any]
    data: dict[str, Any] | Callable[[], dict[str, Any]]   # a callable: resolved when used
    steps: int
    lr: float
    batch_size: int = 32
    warmup: int = 50
    #: a char LM: the text whose vocabulary it uses (the fine-tune's), or a callable giving it
    vocab: str | Callable[[], str] = ""
    extra: dict[str, Any] = field(default_factory=dict)  # more scenario keys (eval_batches)

    def resolved(self) -> Pretraining:
        """This definition with its data block and vocabulary path computed (shipped files
        are found when a grid is built, not when the module is imported)."""
        data = self.data() if callable(self.data) else self.data
        vocab = self.vocab() if callable(self.vocab) else self.vocab
        return dataclasses.replace(self, data=data, vocab=vocab)

    def digest(self) -> str:
        """A hash of the definition and of the files it reads (their bytes, not their paths)."""
        if callable(self.data) or callable(self.vocab):
            return self.resolved().digest()
        data = {k: v for k, v in self.data.items() if k != "path"}
        what = {"recipe": RECIPE, "model": self.model, "data": data, "steps": self.steps,
                "lr": self.lr, "batch_size": self.batch_size, "warmup": self.warmup,
                "extra": self.extra}
        h = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
        for path in (self.data.get("path"), self.vocab):
            h.update(Path(path).read_bytes() if path else b"-")
        return h.hexdigest()[:16]

    def path(self, root: Path | None = None) -> Path:
        return (root or cache_dir()) / f"{self.name}-{self.digest()}.pt"


def checkpoint(p: Pretraining, root: Path | None = None) -> Path:
    """The checkpoint of `p`, trained and saved first when the cache lacks it."""
    p = p.resolved()
    path = p.path(root)
    if not path.is_file():
        state, val = pretrain(p)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"state_dict": state, "val_loss": val, "steps": p.steps,
                        "digest": p.digest()}, tmp)
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path


def pretrain(p: Pretraining) -> tuple[dict[str, torch.Tensor], float]:
    """Train `p` from scratch on the CPU with one torch thread (so the weights do not depend
    on the machine's core count): (its weights, its validation loss)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pretrain(p)
    finally:
        torch.set_num_threads(threads)


def _pretrain(p: Pretraining) -> tuple[dict[str, torch.Tensor], float]:
    from lbw_sim.sim.scenarios import Scenario
    from lbw_sim.sim.tasks import build_task

    p = p.resolved()
    sc = Scenario.from_dict({"name": f"pretrain/{p.name}", "model": p.model, "data": p.data,
                             "steps": p.steps, "batch_size": p.batch_size,
                             "schedule": {"warmup": p.warmup, "decay": "cosine"},
                             "optimizer": {"lr": p.lr}, **p.extra})
    cache = _vocab_cache(sc, p.vocab) if p.vocab else {}
    task = build_task(sc, 0, torch.device("cpu"), cache)
    model = task.module
    opt = model.configure_optimizer(p.lr)
    for step in range(p.steps):
        for g in opt.param_groups:
            g["lr"] = p.lr * sc.schedule.factor(step, p.steps)
        loss = task.loss(task.batches.get(step), step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, task.evaluate()


def _vocab_cache(sc: Any, vocab: str) -> dict:
    """The task cache with the pretraining text tokenised by `vocab`'s characters."""
    from lbw_sim.sim.data import TextSource

    d = sc.data
    if d.kind != "text":
        raise SpecError("pretrain.vocab", f"a vocabulary is for text data, not {d.kind!r}")
    ref = TextSource.from_file(vocab)
    missing = sorted(set(Path(d.path).read_text(encoding="utf-8")) - set(ref.chars))
    if missing:
        raise SpecError("pretrain.vocab", f"{Path(vocab).name} lacks the characters "
                                          f"{missing[:10]} of {Path(d.path).name}")
    ids = ref.encode(Path(d.path).read_text(encoding="utf-8"))
    n = int(len(ids) * (1.0 - d.val_fraction))
    source = TextSource(ids[:n], ids[n:], ref.vocab_size, name=Path(d.path).stem,
                        chars=ref.chars)
    return {("text", d.path, d.val_fraction): source}
