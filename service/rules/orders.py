"""Orders being signed (order-sign `draftOrders`) or selected (order-select `selections`): does the
diagnosis support what is ordered? At order-select only the selected orders get cards; the other
draft orders are context. A reason given in SNOMED CT only is read through knowledge/snomed_map.toml
(record.py): the card names the concept as the order gives it, and its suggestion adds the
supported ICD-10-CM coding to that reason, keeping the SNOMED CT coding.

Sources: the M43.11/M54.11 pages' related procedures, corrected by the errata (cite the cervical
fusion LCDs' clinical criteria, not a code list); CPT 22551/22552/22554/22600 are defined below
C2 (terminology.md §4).
"""
from __future__ import annotations

from ..cards import Card, Suggestion
from ..findings import Findings, weeks_in
from ..nlp.levels import OAA
from . import ORDER_HOOKS, RuleContext, rule
from .tables import TABLES
from .common import (evidence_of, order_fixes, reason_of_order, recode_condition, slips, snomed_reason,
                     subject_orders)


def _code_label(ctx: RuleContext, order, members) -> str:
    for name in ("fusion-c0-c2", "craniocervical-surgery", "advanced-cervical-imaging", "c1-c2-injection",
                 "below-c2-procedure"):
        if set(order.cpt) & members(name):
            return ctx.value_sets.labels[name]
    return "the order"


@rule("ORD-DIAGNOSIS", hooks=ORDER_HOOKS)
def ord_diagnosis(facts: Findings, ctx: RuleContext) -> list[Card]:
    members = ctx.value_sets.members
    cards = []
    for order, reason, target in order_fixes(facts, members):
        actions = [reason_of_order(facts, order.reference, target, ctx.terminology, old_code=reason)]
        # The Conditions the order rests on: by reference, or carrying the reason's code (an order
        # may give its reason by code only; the same diagnosis may sit on the problem list too).
        for condition in facts.current(firm=False):
            if condition.code == reason and condition.reference in facts.record.raw:
                actions.append(recode_condition(facts, condition.reference, target, ctx.terminology))
        found = [f for f in slips(facts) if f.region == OAA] if target == "M43.11" else \
            [f for f in facts.of("radiculopathy") + facts.of("radicular-signs") if f.region == OAA]
        # A reason given in SNOMED CT only: the card names the concept as the order gives it; the
        # record holds no ICD-10-CM code for it (currentCodes empty), the reading is said in the detail.
        snomed = snomed_reason(facts, order.reference, reason)
        cards.append(Card(
            rule="ORD-DIAGNOSIS",
            values={"order": order.reference, "order_label": _code_label(ctx, order, members),
                    "cpt": ", ".join(order.cpt), "current": reason,
                    "current_display": ctx.terminology.display(reason),
                    "snomed": {"code": snomed.concept.sctid, "fsn": snomed.concept.fsn,
                               "name": snomed.concept.fsn.rsplit(" (", 1)[0]} if snomed else None,
                    "proposed": target, "proposed_display": ctx.terminology.display(target)},
            current_codes=[] if snomed else [reason], proposed_codes=[target], evidence=evidence_of(found),
            suggestions=[Suggestion("fix_reason", actions, is_recommended=True)],
            subject=order.reference,
        ))
    return cards


@rule("ORD-ANATOMY", hooks=ORDER_HOOKS)
def ord_anatomy(facts: Findings, ctx: RuleContext) -> list[Card]:
    below_c2 = ctx.value_sets.members("below-c2-procedure")
    cards = []
    for order in subject_orders(facts):
        if not set(order.cpt) & below_c2 or not order.reason_codes:
            continue
        if set(order.reason_codes) <= {"M43.11", "M54.11"}:
            cards.append(Card(
                rule="ORD-ANATOMY",
                values={"order": order.reference, "cpt": ", ".join(sorted(set(order.cpt) & below_c2)),
                        "reasons": ", ".join(order.reason_codes)},
                current_codes=list(order.reason_codes), missing_documentation=["region"],
                evidence=[c.evidence() for c in facts.conditions if c.code in order.reason_codes][:2],
                subject=order.reference,
            ))
    return cards


def _conservative_care_weeks(facts: Findings) -> float:
    weeks = [s.weeks for s in facts.studies_of("conservative-care") if s.weeks]
    for finding in facts.of("conservative-care", "affirmed", "historical"):
        found = weeks_in(finding.evidence.text)
        if found:
            weeks.append(found)
    return max(weeks, default=0.0)


@rule("ORD-FUSION-DOCS", hooks=ORDER_HOOKS)
def ord_fusion_docs(facts: Findings, ctx: RuleContext) -> list[Card]:
    fusion = ctx.value_sets.members("fusion-c0-c2")
    cards = []
    for order in subject_orders(facts):
        if not set(order.cpt) & fusion or not set(order.reason_codes) & {"M43.11", "M54.11"}:
            continue
        missing = []
        urgent = facts.of("myelopathy") or facts.of("progressive-deficit")
        if not urgent and _conservative_care_weeks(facts) < TABLES.conservative_care_weeks:
            missing.append("conservative-care")
        at_level = [f for f in facts.text if f.affirmed and f.region == OAA and f.from_report]
        instability_imaging = facts.studies_of("flexion-extension") or [
            f for f in facts.of("imaging") if "flexion" in f.phrase.lower()]
        if facts.record.has("diagnosticReports") and (not at_level or not instability_imaging):
            missing.append("imaging")
        if not facts.of("neurologic-exam", "affirmed", "negated"):
            missing.append("neurologic-findings")
        if missing:
            cards.append(Card(
                rule="ORD-FUSION-DOCS",
                values={"order": order.reference, "cpt": ", ".join(sorted(set(order.cpt) & fusion)),
                        "reasons": ", ".join(order.reason_codes), "weeks": round(_conservative_care_weeks(facts)),
                        "urgent": bool(urgent)},
                current_codes=list(order.reason_codes), missing_documentation=missing,
                evidence=evidence_of(facts.of("conservative-care", "affirmed", "historical") + at_level, 3),
                subject=order.reference,
            ))
    return cards
