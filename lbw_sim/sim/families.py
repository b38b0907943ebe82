"""The task suite's extra model families as runner tasks: a CNN on digits, a recurrent char
LM, a residual MLP on a teacher-student regression.

`build_family_task(sc, cfg, seed, device, cache)` is what `runner.build_task` calls for
these kinds: the model is initialised from `seed` (the caller seeds torch), batches are
ordered by `seed` (batch k is a function of (seed, k)), data is shared through `cache`.
"""

from __future__ import annotations

from typing import Any

import torch

FAMILY_KINDS = ("cnn", "rnn", "resmlp")


def build_family_task(sc: Any, cfg: dict[str, Any], seed: int, device: torch.device,
                      cache: dict | None) -> Any:
    from lbw_sim.sim import models
    from lbw_sim.sim.data import ArrayBatches, Batches, estimate_loss
    from lbw_sim.sim.runner import Task, _digits, _token_data

    cache = {} if cache is None else cache
    if sc.model_kind == "rnn":
        data = _token_data(sc, cache)
        model = models.CharGRU(models.RNNConfig(vocab_size=data.vocab_size, **cfg)).to(device)
        block = model.config.block_size
        return Task(model, Batches(data.train, block, sc.batch_size, seed=seed, device=device),
                    lambda b, _: model(*b)[1],
                    lambda: estimate_loss(model, data, block, sc.batch_size, sc.eval_batches,
                                          device),
                    n_classes=data.vocab_size, best_loss=data.best_loss)
    if sc.model_kind == "cnn":
        arrays = _digits(sc, cache)
        model = models.DigitsCNN(models.CNNConfig(n_in=arrays.n_features,
                                                  n_classes=arrays.n_classes, **cfg)).to(device)
        n_classes: int | None = arrays.n_classes
        best = None
    else:
        arrays = teacher_data(sc, cache)
        model = models.ResMLP(models.ResMLPConfig(n_in=arrays.n_features, **cfg)).to(device)
        n_classes, best = None, TEACHER_NOISE ** 2
    batches = ArrayBatches(arrays.x_train, arrays.y_train, sc.batch_size, seed, device)
    return Task(model, batches, lambda b, _: model(*b)[1],
                lambda: estimate_loss(model, arrays, device=device), n_classes=n_classes,
                best_loss=best)


TEACHER_NOISE = 0.1


def teacher_data(sc: Any, cache: dict):
    from lbw_sim.sim.data import teacher_student

    d = sc.data
    key = ("teacher", d.n_train, d.n_val, d.seed)
    if key not in cache:
        cache[key] = teacher_student(d.n_train, d.n_val, seed=d.seed, noise=TEACHER_NOISE)
    return cache[key]
