"""Source column names -> canonical names: the synonyms real loggers use, plus user mappings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lbw_sim.errors import TraceError
from lbw_sim.traces.schema import TELEMETRY_COLUMNS

#: Canonical column -> source names seen in the wild, best first (matched case-insensitively).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "step": ("step", "global_step", "_step", "current_steps", "iter", "iteration", "iters",
             "steps", "train/global_step", "trainer/global_step"),
    "loss": ("loss", "train/loss", "train_loss", "train_loss_step", "train/loss_step",
             "training_loss", "train/train_loss", "loss/train", "trainer/loss", "losses/train"),
    "grad_norm": ("grad_norm", "train/grad_norm", "gradient_norm", "train/gradient_norm",
                  "grad-norm", "gradnorm", "grad_norm/total", "total_norm", "norm",
                  "train/norm"),
    "lr": ("lr", "learning_rate", "train/learning_rate", "train/lr", "trainer/lr",
           "optimizer/lr", "lr/group0"),
    "val_loss": ("val_loss", "eval_loss", "val/loss", "eval/loss", "validation_loss",
                 "validation/loss", "valid_loss", "valid/loss", "loss/val", "val_loss_epoch"),
    "update_norm": ("update_norm", "train/update_norm"),
    "param_norm": ("param_norm", "parameter_norm", "weight_norm", "train/param_norm"),
    "update_ratio": ("update_ratio", "train/update_ratio", "update_to_weight"),
    "nonfinite": ("nonfinite", "train/nonfinite"),
    "wall_time": ("wall_time", "_runtime", "train/wall_time", "elapsed_s"),
}

#: Lightning's LearningRateMonitor logs `lr-<Optimizer>[/pg<i>]`.
LR_PREFIXES = ("lr-", "lr/")


def check_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """Validate a user mapping canonical -> source (keys must be canonical columns)."""
    out = {}
    for key, src in mapping.items():
        if key not in TELEMETRY_COLUMNS:
            known = ", ".join(TELEMETRY_COLUMNS)
            raise TraceError(f"mapping key {key!r} is not a canonical column (one of {known})")
        if not isinstance(src, str) or not src:
            raise TraceError(f"mapping {key}={src!r}: the source must be a column or tag name")
        out[key] = src
    return out


def resolve_columns(available: Iterable[str], mapping: Mapping[str, str] | None = None,
                    ) -> dict[str, str]:
    """Pick the source column for each canonical column: the user's mapping, then synonyms.

    A mapped source that does not exist is an error; a synonym that does not exist is not.
    """
    names = [str(n) for n in available]
    lower = {}
    for n in names:
        lower.setdefault(n.lower(), n)
    mapping = check_mapping(mapping or {})
    out: dict[str, str] = {}
    for canon, src in mapping.items():
        found = src if src in names else lower.get(src.lower())
        if found is None:
            shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
            raise TraceError(f"mapping {canon}={src!r}: no such column (have: {shown})")
        out[canon] = found
    used = set(out.values())
    for canon, cands in SYNONYMS.items():
        if canon in out:
            continue
        for cand in cands:
            hit = lower.get(cand)
            if hit is not None and hit not in used:
                out[canon] = hit
                used.add(hit)
                break
    if "lr" not in out:
        for n in names:
            if n.lower().startswith(LR_PREFIXES) and n not in used:
                out["lr"] = n
                break
    return out


def candidate_names(mapping: Mapping[str, str] | None = None) -> set[str]:
    """Every lower-cased source name that could map onto a canonical column."""
    names = {c for cands in SYNONYMS.values() for c in cands}
    names.update(v.lower() for v in (mapping or {}).values())
    return names


def is_candidate(name: str, mapping: Mapping[str, str] | None = None) -> bool:
    low = name.lower()
    return low in candidate_names(mapping) or low.startswith(LR_PREFIXES)
