"""The studio's glossary: the few words every page uses, in plain language, each beside the
identifier the spec or a table uses for it. One declaration, drawn by the Glossary page and
quoted in tooltips."""

from __future__ import annotations

#: term -> (identifier in specs and tables, plain explanation)
GLOSSARY: dict[str, tuple[str, str]] = {
    "regime": ("regimes", "The guard's current mode, such as *nominal* (training as "
               "configured), *watch* (something is unusual, no action yet) or a mode that "
               "cuts the learning rate, skips an update or rolls back. Each regime sets the "
               "controls applied to the optimizer."),
    "transition": ("transitions", "A rule that moves the guard from one regime to another "
                   "when its condition holds, for example \"loss more than 10 noise units "
                   "above its recent level for 2 steps\". The rule that fired is the "
                   "transition's *cause*."),
    "robust z": ("robust_z", "How unusual a value is, in units of its own recent noise: "
                 "(value − recent mean) ÷ recent mean absolute deviation. A robust z of 10 "
                 "means ten times further out than the run's usual step-to-step wobble, "
                 "whatever the loss's scale."),
    "hysteresis": ("hysteresis band", "Entering a regime at one threshold and leaving it at "
                   "a lower one (e.g. in at z ≥ 6, out at z ≤ 2), so a signal hovering near "
                   "one threshold does not flip the guard back and forth every step."),
    "dwell": ("min_dwell", "The least number of steps the guard stays in a regime before a "
              "transition out of it may fire (so a control has time to act)."),
    "debounce": ("for", "How many consecutive steps a transition's condition must hold "
                 "before it fires (one odd step is not enough)."),
    "signal": ("signals", "A number the guard computes every step from the training log: a "
               "robust z of the loss, the LR against its recent level, a non-finite flag …"),
    "threshold": ("thresholds", "A named number a transition compares a signal to; the Tune "
                  "page sweeps them."),
    "healthy steps": ("nominal share", "The share of steps the guard spent in its starting "
                      "regime (nominal): a quiet guard on a healthy run stays near 100 %."),
    "spec hash": ("hash", "A 12-character fingerprint of a guard spec: two results with the "
                  "same hash were produced by exactly the same spec."),
    "rescue": ("rescue at 10x", "At a learning rate where plain AdamW ends clearly worse "
               "than at its best LR (above 1.10× its best loss), the guarded run still ends "
               "within 1.10× of that best. Judged only where AdamW needed a rescue."),
}


def glossary_markdown() -> str:
    """The glossary as a markdown definition list (plain term, then its identifier)."""
    return "\n\n".join(f"**{term}** (`{ident}`): {text}"
                       for term, (ident, text) in GLOSSARY.items())
