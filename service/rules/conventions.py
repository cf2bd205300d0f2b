"""Conventions across the families: how the care setting codes an uncertain diagnosis, and how a
Condition coded in SNOMED CT only is read.

- Inpatient (ICD-10-CM Official Guidelines Section II.H; III.C for secondary diagnoses): a
  diagnosis this encounter's notes document as "probable", "likely" or "suspected" counts as
  established (`Findings.codes_uncertain`), so the rules propose what it supports; a card resting
  on such documentation names the convention (`annotate`).
- Outpatient, emergency department and observation (Section IV.H): it does not count, so no rule
  proposes a code from it. DOC-UNCERTAIN says what the other rules would have proposed had it been
  established, and proposes nothing: the code stays, and the provider is asked to document the
  diagnosis to the certainty it has (an established diagnosis, or its signs and symptoms).
- A Condition coded in SNOMED CT only is read as its ICD-10-CM equivalent through the reviewed map
  (knowledge/snomed_map.toml): every rule treats it as its ICD-10-CM twin, and its cards say so
  (`annotate`); their actions add the ICD-10-CM coding and keep the SNOMED CT coding.
"""
from __future__ import annotations

from ..cards import Card
from ..findings import Findings
from . import RULES, RuleContext, rule


@rule("DOC-UNCERTAIN", after_others=True)
def doc_uncertain(facts: Findings, ctx: RuleContext, candidates: list[Card], deadline=None) -> list[Card]:
    """Outpatient: the code changes the rules would propose if this encounter's uncertain diagnoses
    were established, one card per subject, none where a rule proposes the same from certain
    documentation."""
    if facts.codes_uncertain or not facts.hedged():
        return []
    established = facts.as_if_established()
    made = {(c.rule, c.subject, tuple(c.proposed_codes)) for c in candidates}
    cards: list[Card] = []
    subjects: set = set()
    for rule_id in sorted(RULES):
        entry = RULES[rule_id]
        if entry.after_others or ctx.hook not in entry.hooks:
            continue
        if deadline is not None:
            deadline.check()
        for card in entry.check(established, ctx):
            uncertain = [e for e in card.evidence if e.assertion == "uncertain"]
            if not card.proposed_codes or not uncertain or card.subject in subjects \
                    or (card.rule, card.subject, tuple(card.proposed_codes)) in made:
                continue
            subjects.add(card.subject)
            current = card.current_codes[0] if card.current_codes else None
            setting = facts.setting
            cards.append(Card(
                rule="DOC-UNCERTAIN",
                values={"current": current or "",
                        "current_display": ctx.terminology.display(current) if current else "",
                        "would_be": [(code, ctx.terminology.display(code)) for code in card.proposed_codes],
                        "would_rule": card.rule, "setting": setting.label, "guideline": setting.guideline,
                        "convention": setting.rule, "phrase": uncertain[0].text},
                current_codes=list(card.current_codes), missing_documentation=["diagnosis-certainty"],
                evidence=uncertain + [e for e in card.evidence if e.assertion != "uncertain"],
                subject=card.subject, premise=current,
            ))
    return cards


def annotate(cards: list[Card], facts: Findings) -> list[Card]:
    """The notes a card's detail ends with: the inpatient convention when the card rests on
    documentation of uncertain wording; the SNOMED CT reading of its subject."""
    for card in cards:
        if facts.codes_uncertain and facts.setting is not None and card.rule != "DOC-UNCERTAIN" \
                and any(e.assertion == "uncertain" for e in card.evidence):
            setting = facts.setting
            card.notes.append(("care-setting", {"setting": setting.label, "guideline": setting.guideline,
                                                "convention": setting.rule, "basis": setting.basis}))
        references = [card.subject] + [f"{a.resource.get('resourceType')}/{a.resource.get('id')}"
                                       for s in card.suggestions for a in s.actions
                                       if a.type == "update" and isinstance(a.resource, dict)]
        for reference in dict.fromkeys(r for r in references if r and r.startswith("Condition/")):
            condition = facts.read_from_snomed(reference)
            if condition is None:
                continue
            concept = condition.read_from
            card.notes.append(("snomed-read", {"reference": condition.reference, "sctid": concept.sctid,
                                               "term": concept.term, "code": condition.code}))
    return cards
