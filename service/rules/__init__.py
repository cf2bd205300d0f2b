"""Step 4 of a hook call: the coding rules.

A rule is a small pure function of the patient's record (and, with the clinical rules, its
findings) that returns cards or nothing. Each rule declares its id (shared/spec/rules.md), the
hooks it runs at, and lives in one module of this package; the registry below is all the
pipeline knows about them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..cards import Card

ALL_HOOKS = frozenset({"order-sign", "encounter-sign", "encounter-discharge"})


@dataclass(frozen=True)
class Rule:
    id: str
    hooks: frozenset[str]
    check: Callable[..., Iterable[Card]]


RULES: dict[str, Rule] = {}


def rule(rule_id: str, hooks: Iterable[str] = ALL_HOOKS):
    """Register a rule function under its id (ids are unique: a second one is a bug)."""

    def register(function):
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id} is declared twice")
        RULES[rule_id] = Rule(rule_id, frozenset(hooks), function)
        return function

    return register


def evaluate(record, context) -> list[Card]:
    """All cards of the rules that run at this record's hook, in rule-id order."""
    cards: list[Card] = []
    for rule_id in sorted(RULES):
        entry = RULES[rule_id]
        if record.hook in entry.hooks:
            cards.extend(entry.check(record, context))
    return cards
