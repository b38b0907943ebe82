"""What a cell trains: the model, its batches and losses for one seed (`build_task`), for
every model kind of the scenarios and the task suite (GPT, MLP, CNN, GRU LM, residual MLP,
landscapes, quadratics). Data is shared between cells through `cache`.

The runner (`runner.py`) adds the optimizer arm, the faults and the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lbw_sim.errors import SpecError
from lbw_sim.sim import models
from lbw_sim.sim.data import (
    ArrayBatches,
    Batches,
    SyntheticSource,
    TextSource,
    digits,
    estimate_loss,
    teacher_student,
)
from lbw_sim.sim.scenarios import Scenario

# --- what a cell trains -----------------------------------------------------------------------

class ParamModule(nn.Module):
    """A bare parameter as a module, so landscapes and quadratics fit the arms' interface."""

    def __init__(self, param: nn.Parameter):
        super().__init__()
        self.p = param


@dataclass
class Task:
    """The model, its batches and losses for one seed: everything but the optimizer."""

    module: nn.Module
    batches: Batches | ArrayBatches | None
    loss: Callable[[Any, int], torch.Tensor]  # (batch, batch index) -> scalar loss
    evaluate: Callable[[], float]
    n_classes: int | None = None
    best_loss: float | None = None
    start_loss: float | None = None  # a fine-tune: the validation loss of the loaded weights


def build_task(sc: Scenario, seed: int, device: torch.device,
               cache: dict | None = None) -> Task:
    """Model initialised from `seed` (or loaded from the model block's `init` checkpoint: a
    fine-tune, whose `start_loss` is then measured), batches ordered by `seed`, data shared
    through `cache`."""
    task = _build(sc, seed, device, cache)
    init = sc.model.get("init")
    if init is not None:
        load_weights(task.module, init, device)
        task.start_loss = task.evaluate()
    return task


def load_weights(module: nn.Module, path: str, device: torch.device) -> None:
    """Load a checkpoint written by `sim.pretrain` (tensors only: weights_only=True)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        module.load_state_dict(ckpt["state_dict"])
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError("model.init", f"{Path(path).name}: not a checkpoint of this model "
                                      f"({first})") from None


def _build(sc: Scenario, seed: int, device: torch.device, cache: dict | None) -> Task:
    cache = {} if cache is None else cache
    cfg = {k: v for k, v in sc.model.items() if k not in ("kind", "init")}
    torch.manual_seed(seed)
    kind = sc.model_kind
    if kind in ("gpt", "rnn"):                     # char LMs on a token stream
        data = token_data(sc, cache)
        model = (models.GPT(models.GPTConfig(vocab_size=data.vocab_size, **cfg)) if kind == "gpt"
                 else models.CharGRU(models.RNNConfig(vocab_size=data.vocab_size, **cfg)))
        return _token_task(model.to(device), data, sc, seed, device)
    if kind in ("mlp", "cnn"):                     # classifiers on scikit-learn's digits
        arrays = digits_data(sc, cache)
        config = models.MLPConfig if kind == "mlp" else models.CNNConfig
        net = models.MLPClassifier if kind == "mlp" else models.DigitsCNN
        model = net(config(n_in=arrays.n_features, n_classes=arrays.n_classes, **cfg))
        return _array_task(model.to(device), arrays, sc, seed, device, arrays.n_classes)
    if kind == "resmlp":                           # regression on a random tanh teacher
        arrays = teacher_data(sc, cache)
        model = models.ResMLP(models.ResMLPConfig(n_in=arrays.n_features, **cfg))
        return _array_task(model.to(device), arrays, sc, seed, device, None,
                           best_loss=TEACHER_NOISE ** 2)
    if sc.model_kind == "landscape":
        from lbw_sim.sim.landscapes import get_landscape

        over = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k != "name"}
        land = get_landscape(cfg.get("name", "rosenbrock"), **over)
        mod = ParamModule(land.param(device))
        return Task(mod, None, lambda b, _: land.loss(mod.p),
                    lambda: float(land.loss(mod.p.detach())), best_loss=land.f_min)
    from lbw_sim.sim.problems import NoisyQuadratic

    prob = NoisyQuadratic(**{**cfg, "seed": int(cfg.get("seed", 0)) + seed})
    mod = ParamModule(prob.param(device))
    return Task(mod, None, lambda b, step: prob.loss(mod.p, step),
                lambda: float(prob.true_loss(mod.p.detach())), best_loss=0.0)


def digits_data(sc: Scenario, cache: dict):
    key = ("digits", sc.data.val_fraction, sc.data.seed)
    if key not in cache:
        cache[key] = digits(sc.data.val_fraction, sc.data.seed)
    return cache[key]


def token_data(sc: Scenario, cache: dict):
    d = sc.data
    if d.kind == "text":
        key = ("text", d.path, d.val_fraction)
        if key not in cache:
            cache[key] = TextSource.from_file(d.path, d.val_fraction)
        return cache[key]
    key = ("synthetic", d.vocab_size, d.order, d.seed, d.n_train, d.n_val)
    if key not in cache:
        source = SyntheticSource(vocab_size=d.vocab_size, order=d.order, seed=d.seed)
        cache[key] = source.dataset(d.n_train, d.n_val)
    return cache[key]


def _token_task(model: nn.Module, data: Any, sc: Scenario, seed: int,
                device: torch.device) -> Task:
    block = model.config.block_size
    return Task(model, Batches(data.train, block, sc.batch_size, seed=seed, device=device),
                lambda b, _: model(*b)[1],
                lambda: estimate_loss(model, data, block, sc.batch_size, sc.eval_batches, device),
                n_classes=data.vocab_size, best_loss=data.best_loss)


def _array_task(model: nn.Module, arrays: Any, sc: Scenario, seed: int, device: torch.device,
                n_classes: int | None, best_loss: float | None = None) -> Task:
    batches = ArrayBatches(arrays.x_train, arrays.y_train, sc.batch_size, seed, device)
    return Task(model, batches, lambda b, _: model(*b)[1],
                lambda: estimate_loss(model, arrays, device=device), n_classes=n_classes,
                best_loss=best_loss)


TEACHER_NOISE = 0.1


def teacher_data(sc: Scenario, cache: dict):
    d = sc.data
    key = ("teacher", d.n_train, d.n_val, d.seed, d.shift)
    if key not in cache:
        cache[key] = teacher_student(d.n_train, d.n_val, seed=d.seed, noise=TEACHER_NOISE,
                                     shift=d.shift)
    return cache[key]
