"""A procedurally generated English-like text, shipped as `lbw_sim/data/prose.txt`.

The suite needs a character-level text that every install has; no public-domain novel ships
with the package, so this module writes one from a small probabilistic grammar (narrative
sentences with clauses, dialogue, paragraphs, a few hundred words). It is written by this
code, so the project may ship it. `python -m lbw_sim.sim.prose` rewrites the file (it is
a pure function of the seed, so the file never changes).

`logbook` writes the suite's fine-tune text, `lbw_sim/data/logbook.txt`: a shifted
distribution of the same language — a ship's log: numbered entries, sea words, orders
shouted, the present tense, and between them (half the sentences) the prose's own kind of
narrative. It is written in the prose's alphabet exactly (tested), so the loss a pretrained
model starts from measures the shift in style and words, not characters it never saw.
"""

from __future__ import annotations

import random
from pathlib import Path

PROSE_PATH = Path(__file__).resolve().parents[1] / "data" / "prose.txt"
LOGBOOK_PATH = PROSE_PATH.with_name("logbook.txt")

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


# --- the fine-tune text: a ship's log -----------------------------------------------------------

CREW = ["I", "We", "The mate", "Bill", "Hans", "the cook", "Anna", "Mister Olsen", "the boy",
        "Captain Black", "the watch", "Jim", "Pablo", "Emma", "Lars", "Nils", "old Ben"]
SEA = ["sail", "mast", "deck", "anchor", "compass", "rope", "cargo", "hull", "wave", "gull",
       "reef", "coast", "cape", "island", "current", "squall", "cabin", "barrel", "lantern",
       "chart", "tide", "fog", "rudder", "keel", "whale", "port", "bow", "stern", "hatch"]
SEA_ADJS = ["salt", "rough", "calm", "black", "foul", "fair", "blue", "torn", "tarred",
            "white", "steady", "loose", "leaking", "iced"]
ACTS = ["check", "haul", "mend", "lower", "raise", "sight", "lash", "pump", "sound", "trim",
        "watch", "secure", "clean", "count"]
WEATHER = ["Wind from the north", "Wind veering west", "Heavy swell", "Light airs",
           "Cold rain at dawn", "Clear sky", "A fog all morning", "Thunder to the east",
           "Barometer falling", "Calm sea", "A gale by evening", "Hail at noon"]
NUMBERS = ["one", "two", "three", "four", "five", "seven", "eight", "nine", "ten"]
ORDERS = ["Take in the topsail", "All hands on deck", "Hold her steady", "Bring the lantern",
          "Hold fast", "Pump the bilge", "Look out for the light", "Let go the anchor",
          "Make fast the boat", "Bear away"]


#: The share of a log entry's sentences in the prose's style: the shift keeps common ground.
NARRATIVE = 0.5


def _entry(r: random.Random, day: str) -> str:
    lines = [f"{r.choice(['Entry', 'Log', 'Note'])} {day}. {r.choice(WEATHER)}, "
             f"{r.choice(NUMBERS[1:])} knots, heading {r.choice(NUMBERS)} points."]
    for _ in range(r.randint(3, 8)):
        u = r.random()
        if u < NARRATIVE:                 # the prose's own sentences, between the log's
            lines.append(_sentence(r))
            continue
        u = (u - NARRATIVE) / (1.0 - NARRATIVE)
        who = r.choice(CREW)
        adj = f"{r.choice(SEA_ADJS)} " if r.random() < 0.5 else ""
        if u < 0.3:
            q = "!" if r.random() < 0.4 else ("?" if r.random() < 0.2 else ".")
            lines.append(f'"{r.choice(ORDERS)}{q}" {who} {r.choice(SAYS)}.')
        elif u < 0.7:
            verb = r.choice(ACTS)
            verb += "" if who in ("I", "We") else "es" if verb.endswith(("ch", "sh")) else "s"
            lines.append(f"{who} {verb} the {adj}{r.choice(SEA)}.")
        else:
            lines.append(f"{who} {'are' if who == 'We' else 'am' if who == 'I' else 'is'} "
                         f"{r.choice(PREPS)} the {adj}{r.choice(SEA)}, "
                         f"{r.choice(['and', 'but', 'while'])} the {r.choice(SEA)} "
                         f"{r.choice(['holds', 'groans', 'shakes', 'drifts'])}.")
    return " ".join(line[0].upper() + line[1:] for line in lines)


def _day(n: int) -> str:
    """An entry's number in words, from the prose's letters (so no six: it has an x)."""
    tens = ["", "ten", "twenty", "thirty", "forty", "fifty", "seventy", "eighty", "ninety"]
    return " ".join(w for w in (tens[(n // 10) % len(tens)], NUMBERS[n % len(NUMBERS)]) if w)


def logbook(n_chars: int = 120_000, seed: int = 0) -> str:
    """`n_chars` (or a little more) of numbered log entries."""
    r, parts, size, day = random.Random(seed), [], 0, 1
    while size < n_chars:
        parts.append(_entry(r, _day(day)))
        size += len(parts[-1]) + 2
        day += 1
    return "\n\n".join(parts) + "\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def prose_path() -> Path:
    """The shipped text (written here if a checkout lacks it)."""
    return PROSE_PATH if PROSE_PATH.is_file() else _write(PROSE_PATH, generate())


def logbook_path() -> Path:
    """The shipped fine-tune text (written here if a checkout lacks it)."""
    return LOGBOOK_PATH if LOGBOOK_PATH.is_file() else _write(LOGBOOK_PATH, logbook())


if __name__ == "__main__":
    for path, text in ((PROSE_PATH, generate()), (LOGBOOK_PATH, logbook())):
        print(f"wrote {_write(path, text)}")
