"""Step 4 of a hook call: the coding rules of shared/spec/rules.md.

A rule is a small pure function of the patient's findings that returns cards (or nothing).
Each declares its id, the hooks it runs at, and lives in the module of its family:
`spondylolisthesis.py` (SPL-*), `radiculopathy.py` (RAD-*), `orders.py` (ORD-*),
`tabular.py` (TAB-*), `conventions.py` (DOC-UNCERTAIN: the care setting's convention for
uncertain diagnoses, across the families). Its wording is in cards/<RULE-ID>.toml. The registry below is all the
pipeline knows about them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..cards import Card

# patient-view: the CDI review (opt-in), which shows some kinds of the record-wide cards only (`shows`).
ALL_HOOKS = frozenset({"order-sign", "order-select", "encounter-sign", "encounter-discharge", "patient-view"})
# The hooks about orders: cards only about the orders (at order-select the selected ones) and the
# diagnoses that are their reasons.
ORDER_HOOKS = frozenset({"order-sign", "order-select"})


@dataclass(frozen=True)
class RuleContext:
    """What rules may consult besides the findings: the tabular, the value sets, the hook."""

    terminology: object
    value_sets: object
    hook: str
    max_cards: int = 12  # SPINE_CDS_MAX_CARDS: the rest are summarised in one card
    # The service's view (services.CardView, e.g. the CDI review's kinds): which of the cards the
    # arbitration keeps are shown; None: all of them.
    shows: Callable[[Card], bool] | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    hooks: frozenset[str]
    check: Callable[..., Iterable[Card]]
    # A rule about the other rules' candidates (DOC-UNCERTAIN: what they would propose by another
    # convention): it runs after them, as check(findings, context, candidates, deadline).
    after_others: bool = False


RULES: dict[str, Rule] = {}


def rule(rule_id: str, hooks: Iterable[str] = ALL_HOOKS, after_others: bool = False):
    """Register a rule function under its id (ids are unique: a second one is a bug)."""

    def register(function):
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id} is declared twice")
        RULES[rule_id] = Rule(rule_id, frozenset(hooks), function, after_others)
        return function

    return register


def candidates_of(findings, context: RuleContext, deadline=None) -> list[Card]:
    """Every rule's candidates at this hook, in rule-id order (the budget checked between rules),
    the rules about the others' candidates last."""
    candidates: list[Card] = []
    for rule_id in sorted(RULES):
        entry = RULES[rule_id]
        if context.hook in entry.hooks and not entry.after_others:
            if deadline is not None:
                deadline.check()
            candidates.extend(entry.check(findings, context))
    return candidates


def evaluate(findings, context: RuleContext, deadline=None, screen=None) -> list[Card]:
    """The cards shown at this hook: every rule's candidates (in rule-id order, the budget
    checked between rules: DeadlineExceeded when it is spent), less those `screen` suppresses
    (feedback already given), then one arbitration
    (`resolve.py`), then the service's view (`context.shows`: the arbitration decides over every
    candidate, the view only leaves some of its cards out), then missing documentation asked as
    compliant queries (`queries.py`), then the cap."""
    from .queries import as_queries
    from .resolve import cap, order_scope, resolve

    scope = None
    if context.hook in ORDER_HOOKS:
        # Order-sign is about the orders being signed, order-select about those selected: without a
        # spine order, nothing to say (and the text is never read); with one, only cards about it
        # and the diagnoses it rests on.
        scope = order_scope(findings, context.value_sets)
        if not scope:
            return []
    from .conventions import annotate

    candidates = candidates_of(findings, context, deadline)
    for rule_id in sorted(RULES):
        entry = RULES[rule_id]
        if context.hook in entry.hooks and entry.after_others:
            if deadline is not None:
                deadline.check()
            candidates.extend(entry.check(findings, context, list(candidates), deadline))
    if screen is not None:
        candidates = screen(candidates)  # feedback: suppressed candidates take no part in the arbitration
    shown = resolve(candidates, findings, context, scope)
    if context.shows is not None:
        shown = [card for card in shown if context.shows(card)]
    return cap(annotate(as_queries(shown, findings, context), findings), context)


# Caps the rules apply, reported in the answer's extension like the reader's (no content, counts).
RULE_LIMITS = {
    "excludes1-codes-not-compared": "TAB-EXCLUDES1 compares the first {value} distinct codes of a record, spine codes first",
}


def describe_rule_limits(limits: dict[str, int]) -> list[dict]:
    from .tabular import MAX_COMPARED

    values = {"excludes1-codes-not-compared": MAX_COMPARED}
    return [{"limit": name, "count": count, "max": values[name],
             "description": RULE_LIMITS[name].format(value=values[name])}
            for name, count in sorted(limits.items()) if name in RULE_LIMITS]


def load_rules() -> dict[str, Rule]:
    """Import every rule module (registration happens at import)."""
    from . import conventions, orders, radiculopathy, spondylolisthesis, tabular  # noqa: F401

    return RULES


def check_templates(template_ids) -> list[str]:
    """Every rule has its card template in cards/, and every template its rule (or the resolver):
    the problems, empty when they match (checked when the app starts)."""
    from .resolve import MADE_HERE

    rules = set(load_rules()) | set(MADE_HERE)
    templates = set(template_ids)
    return ([f"rule {r} has no card template cards/{r}.toml" for r in sorted(rules - templates)]
            + [f"card template cards/{t}.toml belongs to no rule" for t in sorted(templates - rules)])
