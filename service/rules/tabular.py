"""Checks across all codes, from the tabular itself (beyond the source pages).

TAB-HEADER: a Condition coded with something that is not a billable leaf of the tabular (a
category header such as M43.1, an S12 code without its 7th character, or no code at all such as
M54.19). TAB-EXCLUDES1: two current codes whose Excludes1 notes (on the codes or their
ancestors) forbid them together; guideline I.A.12.a allows unrelated conditions together, so it
is a warning that quotes the notes, not a block.
"""
from __future__ import annotations

from itertools import combinations

from ..cards import Card, Suggestion
from ..findings import Findings
from . import RuleContext, rule
from .tables import TABLES

MAX_COMPARED = 60
from .common import REGION_DIGIT, radiculopathy_region, recode_card, remove_condition, slip_region

@rule("TAB-HEADER")
def tab_header(facts: Findings, ctx: RuleContext) -> list[Card]:
    cards = []
    for condition in facts.current(firm=False):
        code = condition.code
        if ctx.terminology.is_billable(code):
            continue
        exists = ctx.terminology.exists(code)
        proposed = _child_from_documentation(facts, code) if exists else None
        values = {"current": code, "exists": exists,
                  "current_display": ctx.terminology.display(code) if exists else None}
        if proposed:
            cards.append(recode_card("TAB-HEADER", facts, ctx, condition, proposed, [condition.evidence()],
                                     exists=exists))
        else:
            cards.append(Card(rule="TAB-HEADER", variant="no-child" if exists else "invalid", values=values,
                              current_codes=[code], evidence=[condition.evidence()], subject=condition.reference))
    return cards


def _child_from_documentation(facts: Findings, header: str) -> str | None:
    """M43.1 / M54.1 headers: the child of the documented region, when the record names one."""
    if header == "M43.1":
        region = slip_region(facts)
        return f"M43.1{REGION_DIGIT[region]}" if region else None
    if header == "M54.1":
        region = radiculopathy_region(facts)
        return f"M54.1{REGION_DIGIT[region]}" if region else None
    return None


@rule("TAB-EXCLUDES1")
def tab_excludes1(facts: Findings, ctx: RuleContext) -> list[Card]:
    cards = []
    first_of_code: dict[str, object] = {}
    for condition in facts.current():
        if ctx.terminology.exists(condition.code):
            first_of_code.setdefault(condition.code, condition)  # a code coded twice is one code
    # The first MAX_COMPARED distinct codes, spine codes first, so a hostile record of thousands of
    # codes costs a bounded number of pairs (the cap is reported in the answer). Pairs the family
    # rules judge unrelated (I.A.12.a) are left out by the arbitration (`keeps`).
    ordered = sorted(first_of_code.values(), key=lambda c: not TABLES.is_spine_reason(c.code))
    if len(ordered) > MAX_COMPARED:
        facts.limits["excludes1-codes-not-compared"] = len(ordered) - MAX_COMPARED
        ordered = ordered[:MAX_COMPARED]
    for a, b in combinations(ordered, 2):
        notes = ctx.terminology.excludes1_between(a.code, b.code)
        if not notes:
            continue
        cards.append(Card(
            rule="TAB-EXCLUDES1",
            values={"first": a.code, "first_display": ctx.terminology.display(a.code),
                    "second": b.code, "second_display": ctx.terminology.display(b.code),
                    "notes": [(n.on, n.note) for n in notes]},
            current_codes=[a.code, b.code], evidence=[a.evidence(), b.evidence()],
            suggestions=[
                Suggestion("keep", [remove_condition(b.reference, b.code)], {"kept": a.code, "removed": b.code}),
                Suggestion("keep", [remove_condition(a.reference, a.code)], {"kept": b.code, "removed": a.code}),
            ],
            subject=a.reference,
        ))
    return cards
