"""A procedurally generated English-like text, shipped as `lbw_sim/data/prose.txt`.

The suite needs a character-level text that every install has; no public-domain novel ships
with the package, so this module writes one from a small probabilistic grammar (narrative
sentences with clauses, dialogue, paragraphs, a few hundred words). It is written by this
code, so the project may ship it. `python -m lbw_sim.sim.prose` rewrites the file (it is
a pure function of the seed, so the file never changes).
"""

from __future__ import annotations

import random
from pathlib import Path

PROSE_PATH = Path(__file__).resolve().parents[1] / "data" / "prose.txt"

NAMES = ["Anna", "Thomas", "Mara", "the captain", "old Peter", "the miller", "Elena", "the boy",
         "her sister", "the stranger", "John", "the doctor", "Margaret", "the innkeeper"]
NOUNS = ["house", "river", "road", "window", "garden", "letter", "door", "field", "horse",
         "lamp", "table", "forest", "bridge", "storm", "ship", "village", "fire", "bell",
         "market", "hill", "church", "winter", "morning", "evening", "stone", "wall", "tree",
         "harbour", "kitchen", "book", "song", "coat", "wind", "candle", "town", "valley"]
ADJS = ["old", "small", "dark", "quiet", "cold", "bright", "long", "narrow", "grey", "warm",
        "empty", "distant", "heavy", "broken", "green", "silent", "strange", "high", "wet"]
VERBS_T = ["saw", "found", "opened", "closed", "carried", "watched", "remembered", "left",
           "heard", "followed", "crossed", "reached", "passed", "kept", "lost", "mended"]
VERBS_I = ["waited", "slept", "laughed", "listened", "walked", "turned", "stopped", "smiled",
           "sighed", "returned", "hesitated", "wept", "rested", "wondered"]
ADVS = ["slowly", "quietly", "at last", "again", "suddenly", "for a while", "once more",
        "without a word", "at once", "in silence", "carefully"]
PREPS = ["by", "near", "under", "beyond", "across", "behind", "along", "over", "through"]
TIMES = ["In the morning", "That night", "Before dawn", "After supper", "Later", "By noon",
         "When the rain had stopped", "All that winter", "On the third day", "At dusk"]
SAYS = ["said", "asked", "whispered", "answered", "cried", "replied", "murmured"]
LINES = ["I do not know", "Come inside", "It is late", "We must go before the storm",
         "Where have you been", "Nobody will believe us", "The road is closed",
         "Let him sleep", "I saw a light in the window", "It was not your fault",
         "Tomorrow, then", "Listen to the bell", "There is bread on the table"]


def _np(r: random.Random) -> str:
    adj = f"{r.choice(ADJS)} " if r.random() < 0.5 else ""
    return f"the {adj}{r.choice(NOUNS)}"


def _clause(r: random.Random) -> str:
    who = r.choice(NAMES)
    if r.random() < 0.6:
        text = f"{who} {r.choice(VERBS_T)} {_np(r)}"
    else:
        text = f"{who} {r.choice(VERBS_I)}"
    if r.random() < 0.4:
        text += f" {r.choice(PREPS)} {_np(r)}"
    if r.random() < 0.3:
        text += f" {r.choice(ADVS)}"
    return text


def _sentence(r: random.Random) -> str:
    u = r.random()
    if u < 0.15:
        q = "?" if r.random() < 0.3 else ("!" if r.random() < 0.2 else ",")
        line = r.choice(LINES)
        tail = "." if q == "," else ""
        return f'"{line}{q}" {r.choice(SAYS)} {r.choice(NAMES)}{tail or "."}'
    text = _clause(r)
    if u < 0.45:
        text = f"{r.choice(TIMES)}, {text}"
    if r.random() < 0.35:
        text += f", {r.choice(['and', 'but', 'while', 'because', 'until'])} {_clause(r)}"
    return text[0].upper() + text[1:] + "."


def generate(n_chars: int = 240_000, seed: int = 0) -> str:
    """`n_chars` (or a little more) of paragraphs of generated prose."""
    r, parts, size = random.Random(seed), [], 0
    while size < n_chars:
        para = " ".join(_sentence(r) for _ in range(r.randint(3, 8)))
        parts.append(para)
        size += len(para) + 2
    return "\n\n".join(parts) + "\n"


def prose_path() -> Path:
    """The shipped text (written here if a checkout lacks it)."""
    if not PROSE_PATH.is_file():
        PROSE_PATH.parent.mkdir(parents=True, exist_ok=True)
        PROSE_PATH.write_text(generate(), encoding="utf-8")
    return PROSE_PATH


if __name__ == "__main__":
    PROSE_PATH.parent.mkdir(parents=True, exist_ok=True)
    PROSE_PATH.write_text(generate(), encoding="utf-8")
    print(f"wrote {PROSE_PATH}")
