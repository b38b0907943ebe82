"""The project's own errors: every bad input ends in one of these, with a one-line message."""

from __future__ import annotations


class LbwError(Exception):
    """Base class: a user-facing problem with a message that names what is wrong."""


class SpecError(LbwError, ValueError):
    """A guard spec (or scenario) is malformed; the message starts with the field path."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class ConditionError(SpecError):
    """A condition string cannot be parsed or names something unknown."""


class TraceError(LbwError, ValueError):
    """A trace or log file cannot be read into the canonical schema."""
