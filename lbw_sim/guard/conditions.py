"""A small, safe condition language: `grad_z > 4 or (loss_ratio > 1.3 and not nonfinite)`.

Grammar (precedence low -> high)::

    expr := and ('or' and)*
    and  := not ('and' not)*
    not  := 'not' not | cmp
    cmp  := atom (('<' | '<=' | '>' | '>=' | '==' | '!=') atom)?
    atom := NUMBER | '-' NUMBER | NAME | '(' expr ')'

Strings are tokenised by a regex, parsed by recursive descent into a tree of frozen
dataclasses, and evaluated by this module's own walker. Nothing is ever passed to `eval`,
`exec` or `compile`: an attribute access, a call, a lambda or a string literal is simply
not a token and is rejected with a `ConditionError`. The walker works unchanged on Python
floats, numpy arrays and torch tensors (NaN compares False in all three).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lbw_sim.errors import ConditionError

MAX_LENGTH = 2000
MAX_DEPTH = 64
KEYWORDS = {"and", "or", "not"}
CMP_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
#: `a OP b` is the same test as `b FLIP[OP] a`.
FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_name(text: object) -> bool:
    """Whether `text` can be a name in this language (and so in a spec): ASCII letters,
    digits and _, not starting with a digit, not a keyword."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None and text not in KEYWORDS


_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|<|>)"
    r"|(?P<paren>[()])"
    r"|(?P<minus>-))"
)


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Name:
    id: str


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Num | Name | Cmp | And | Or | Not


def tokenize(text: str, field: str = "condition") -> list[tuple[str, str, int]]:
    """Split `text` into (kind, value, position) tokens or raise naming the bad character."""
    if not isinstance(text, str):
        raise ConditionError(field, f"must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ConditionError(field, f"condition is {len(text)} characters (limit {MAX_LENGTH})")
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise ConditionError(field, f"unexpected character {bad!r} at position {pos} "
                                        f"in {_clip(text)!r}")
        kind = m.lastgroup
        value, start = m.group(kind), m.start(kind)
        if kind == "name" and value in KEYWORDS:
            kind = value
        tokens.append((kind, value, start))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, field: str):
        self.text, self.field = text, field
        self.tokens = tokenize(text, field)
        self.i = 0

    def error(self, problem: str) -> ConditionError:
        return ConditionError(self.field, f"{problem} in {_clip(self.text)!r}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def number(self, text: str, pos: int) -> Num:
        value = float(text)
        if not np.isfinite(value):
            raise self.error(f"number {text[:20]!r} at position {pos} is out of range")
        return Num(value)

    def take(self, kind: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == kind:
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        if not self.tokens:
            raise self.error("empty condition")
        node = self.expr(0)
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected {tok[1]!r} at position {tok[2]}")
        return node

    def expr(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH} levels")
        items = [self.conj(depth)]
        while self.take("or"):
            items.append(self.conj(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conj(self, depth: int) -> Node:
        items = [self.neg(depth)]
        while self.take("and"):
            items.append(self.neg(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def neg(self, depth: int) -> Node:
        if self.take("not"):
            if depth > MAX_DEPTH:
                raise self.error(f"nested deeper than {MAX_DEPTH} levels")
            return Not(self.neg(depth + 1))
        return self.cmp(depth)

    def cmp(self, depth: int) -> Node:
        left = self.atom(depth)
        tok = self.peek()
        if tok is not None and tok[0] == "op":
            self.i += 1
            node = Cmp(tok[1], left, self.atom(depth))
            nxt = self.peek()
            if nxt is not None and nxt[0] == "op":
                raise self.error(f"chained comparison at position {nxt[2]}; use 'and'")
            return node
        return left

    def atom(self, depth: int) -> Node:
        tok = self.peek()
        if tok is None:
            raise self.error("condition ends too early")
        kind, value, pos = tok
        self.i += 1
        if kind == "num":
            return self.number(value, pos)
        if kind == "minus":
            nxt = self.peek()
            if nxt is None or nxt[0] != "num":
                raise self.error(f"'-' at position {pos} must precede a number")
            self.i += 1
            return Num(-self.number(nxt[1], nxt[2]).value)
        if kind == "name":
            return Name(value)
        if kind == "paren" and value == "(":
            node = self.expr(depth + 1)
            close = self.peek()
            if close is None or close[:2] != ("paren", ")"):
                raise self.error(f"unclosed '(' at position {pos}")
            self.i += 1
            return node
        raise self.error(f"unexpected {value!r} at position {pos}")


@functools.lru_cache(maxsize=8192)
def parse(text: str, field: str = "condition") -> Node:
    """Parse a condition string into a tree; any problem raises ConditionError(field, …).

    Trees are immutable, so parses are cached (sweeps parse the same strings many times).
    """
    return _Parser(text, field).parse()


def names(node: Node) -> set[str]:
    """Every name the condition reads."""
    if isinstance(node, Name):
        return {node.id}
    if isinstance(node, Cmp):
        return names(node.left) | names(node.right)
    if isinstance(node, (And, Or)):
        return set().union(*(names(n) for n in node.items))
    if isinstance(node, Not):
        return names(node.item)
    return set()


def bind(node: Node, constants: Mapping[str, float]) -> Node:
    """Replace names found in `constants` (the spec's thresholds) by numbers."""
    if isinstance(node, Name):
        return Num(float(constants[node.id])) if node.id in constants else node
    if isinstance(node, Cmp):
        return Cmp(node.op, bind(node.left, constants), bind(node.right, constants))
    if isinstance(node, And):
        return And(tuple(bind(n, constants) for n in node.items))
    if isinstance(node, Or):
        return Or(tuple(bind(n, constants) for n in node.items))
    if isinstance(node, Not):
        return Not(bind(node.item, constants))
    return node


@dataclass(frozen=True)
class Comparison:
    """A leaf test `signal OP threshold`, normalised so the signal is on the left.

    `positive` is False under an odd number of `not`s: the condition then fires when the
    comparison is false, which matters when hysteresis bands are checked.
    """

    signal: str
    op: str
    threshold: float
    positive: bool = True


def comparisons(node: Node, positive: bool = True) -> Iterator[Comparison]:
    """Yield every `name OP number` leaf of a bound condition (either side order)."""
    if isinstance(node, Cmp):
        if isinstance(node.left, Name) and isinstance(node.right, Num):
            yield Comparison(node.left.id, node.op, node.right.value, positive)
        elif isinstance(node.left, Num) and isinstance(node.right, Name):
            yield Comparison(node.right.id, FLIP[node.op], node.left.value, positive)
    elif isinstance(node, (And, Or)):
        for item in node.items:
            yield from comparisons(item, positive)
    elif isinstance(node, Not):
        yield from comparisons(node.item, not positive)


def _land(a: Any, b: Any) -> Any:
    return (a and b) if isinstance(a, bool) and isinstance(b, bool) else a & b


def _lor(a: Any, b: Any) -> Any:
    return (a or b) if isinstance(a, bool) and isinstance(b, bool) else a | b


def _lnot(a: Any) -> Any:
    return (not a) if isinstance(a, (bool, np.bool_)) else ~a


def _truth(value: Any) -> Any:
    """A bare value used as a test means 'is non-zero' (NaN counts as non-zero)."""
    return value != 0


@functools.lru_cache(maxsize=8192)
def compile_condition(node: Node) -> Callable[[Mapping[str, Any]], Any]:
    """Turn a tree into nested closures: the walker, done once, so evaluation is cheap."""
    fn = _compile_value(node)
    if isinstance(node, (Num, Name)):
        return lambda env: _truth(fn(env))
    return fn


def _compile_value(node: Node) -> Callable[[Mapping[str, Any]], Any]:
    if isinstance(node, Num):
        value = node.value
        return lambda env: value
    if isinstance(node, Name):
        key = node.id
        return lambda env: env[key]
    if isinstance(node, Cmp):
        op, left, right = CMP_OPS[node.op], _compile_value(node.left), _compile_value(node.right)
        return lambda env: op(left(env), right(env))
    if isinstance(node, Not):
        inner = _compile_test(node.item)
        return lambda env: _lnot(inner(env))
    parts = [_compile_test(n) for n in node.items]
    combine = _land if isinstance(node, And) else _lor

    def run(env: Mapping[str, Any]) -> Any:
        acc = parts[0](env)
        for part in parts[1:]:
            acc = combine(acc, part(env))
        return acc

    return run


def _compile_test(node: Node) -> Callable[[Mapping[str, Any]], Any]:
    fn = _compile_value(node)
    if isinstance(node, (Num, Name)):
        return lambda env: _truth(fn(env))
    return fn


def decided(node: Node, known: Mapping[str, float]) -> bool | None:
    """Whether a condition holds when only the names in `known` have values: True or False
    where that settles it whatever the other names hold, None where it does not (three-valued
    logic: `False and ?` is False, `True or ?` is True)."""
    value = _decided(node, known)
    return value if value is None or isinstance(value, bool) else bool(value != 0)


def _decided(node: Node, known: Mapping[str, float]) -> bool | float | None:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        return known.get(node.id)
    if isinstance(node, Cmp):
        a, b = _decided(node.left, known), _decided(node.right, known)
        return None if a is None or b is None else bool(CMP_OPS[node.op](a, b))
    if isinstance(node, Not):
        inner = decided(node.item, known)
        return None if inner is None else not inner
    parts = [decided(n, known) for n in node.items]
    final = isinstance(node, Or)         # the value that settles it: True for or
    if final in parts:
        return final
    return None if None in parts else not final


def evaluate(node: Node | str, env: Mapping[str, Any]) -> Any:
    """Evaluate a condition (tree or string) against named values; unknown names raise."""
    tree = parse(node) if isinstance(node, str) else node
    missing = names(tree) - set(env)
    if missing:
        raise ConditionError("condition", f"unknown name(s) {sorted(missing)}")
    return compile_condition(tree)(env)


def unparse(node: Node) -> str:
    """Canonical text of a tree (parse(unparse(t)) == t)."""
    if isinstance(node, Num):
        return repr(node.value)
    if isinstance(node, Name):
        return node.id
    if isinstance(node, Cmp):
        return f"{unparse(node.left)} {node.op} {unparse(node.right)}"
    if isinstance(node, Not):
        return f"not {_paren(node.item)}"
    sep = " and " if isinstance(node, And) else " or "
    return sep.join(_paren(n) for n in node.items)


def _paren(node: Node) -> str:
    text = unparse(node)
    return f"({text})" if isinstance(node, (And, Or)) else text


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
