"""What several rules share: regions to codes, the documented region of a finding, FHIR actions."""
from __future__ import annotations

import copy

from ..cards import Action, Card, Suggestion
from ..findings import Finding, Findings
from ..nlp.levels import MULTIPLE, OAA
from ..record import is_icd10cm
from ..terminology import ICD10CM, Terminology
from .tables import TABLES

# The 5th character of M43.1- and M54.1- by region, and its wording (knowledge/code_tables.toml).
REGION_DIGIT = TABLES.region_digit
DIGIT_REGION = TABLES.digit_region
REGION_LABEL = TABLES.region_label


def region_of_code(code: str) -> str | None:
    """M43.12 → cervical; M43.10 (and anything else) → None."""
    return DIGIT_REGION.get(code[5:6]) if len(code) == 6 and code[5] != "0" else None


def documented_region(findings: list[Finding]) -> str | None:
    """The one region the findings' specific levels name (several → multiple), else None."""
    regions = {f.region for f in findings if f.specific and f.region}
    if not regions:
        return None
    if MULTIPLE in regions or len(regions) > 1:
        return MULTIPLE
    return regions.pop()


def in_region(findings: list[Finding], region: str) -> list[Finding]:
    return [f for f in findings if f.specific and f.region == region]


def coding(code: str, terminology) -> dict:
    return {"system": ICD10CM, "code": code, "display": terminology.display(code)}


def recode_condition(facts: Findings, reference: str, new_code: str, terminology) -> Action:
    """Update of the Condition as the EHR sent it, its ICD-10-CM coding replaced (under whatever system
    HL7 writes ICD-10-CM by) and every other coding (SNOMED CT) kept as it came."""
    resource = copy.deepcopy(facts.record.raw[reference])
    concept = resource.setdefault("code", {})
    others = [c for c in concept.get("coding") or [] if not (isinstance(c, dict) and is_icd10cm(c.get("system")))]
    concept["coding"] = [coding(new_code, terminology)] + others
    concept["text"] = terminology.display(new_code)
    return Action("update", f"Change {reference} to {new_code} {terminology.display(new_code)}", resource)


def new_condition(facts: Findings, code: str, terminology) -> Action:
    """Create of an encounter diagnosis for an additional code, same subject and encounter."""
    record = facts.record
    resource = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
        "code": {"coding": [coding(code, terminology)], "text": terminology.display(code)},
        "subject": {"reference": f"Patient/{record.patient_id}"},
    }
    if record.encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{record.encounter_id}"}
    return Action("create", f"Add {code} {terminology.display(code)}", resource)


def remove_condition(reference: str, code: str) -> Action:
    return Action("delete", f"Remove {reference} ({code})", resource_id=reference)


def snomed_reason(facts: Findings, order_reference: str, code: str):
    """The order's reason read as `code` through the SNOMED CT map (record.ReadReason), or None when
    the order gives that reason in ICD-10-CM (or not at all)."""
    return next((r for r in facts.record.read_reasons.get(order_reference, ()) if r.code == code), None)


def subject_orders(facts: Findings) -> list:
    """The draft orders cards may be about: at order-select those selected (the others are context
    only), else every one."""
    selected = facts.record.selected
    return [o for o in facts.orders if selected is None or o.reference in selected]


def reason_of_order(facts: Findings, order_reference: str, new_code: str, terminology,
                    old_code: str | None = None) -> Action:
    """Update of the draft ServiceRequest with the supported diagnosis as its reason: the reason
    coded `old_code` is replaced, the order's other reasons (a symptom beside it) are kept. A reason
    given in SNOMED CT only and read as `old_code` keeps its SNOMED CT coding: the ICD-10-CM coding
    is added to it (the same reasonCode, the EHR's text kept)."""
    resource = copy.deepcopy(facts.record.raw[order_reference])
    concept = {"coding": [coding(new_code, terminology)], "text": terminology.display(new_code)}
    snomed = snomed_reason(facts, order_reference, old_code) if old_code else None
    reasons, replaced = [], False
    for n, reason in enumerate(resource.get("reasonCode") or []):
        codes = {Terminology.normalise(c["code"]) for c in (reason.get("coding") or [])
                 if isinstance(c, dict) and is_icd10cm(c.get("system")) and isinstance(c.get("code"), str)}
        if snomed is not None and n == snomed.index and not replaced:
            reasons.append(dict(reason, coding=[coding(new_code, terminology)] + list(reason.get("coding") or [])))
            replaced = True
        elif old_code is None or old_code in codes:
            if not replaced:
                reasons.append(concept)
                replaced = True
        else:
            reasons.append(reason)
    if not replaced:
        reasons.append(concept)
    resource["reasonCode"] = reasons
    return Action("update", f"Give {order_reference} the reason {new_code}", resource)


def resequence(facts: Findings, first: str, then: str) -> Action | None:
    """Update of the Encounter with `first` ranked before `then` (code-first conventions)."""
    encounter = facts.record.encounter
    if encounter is None:
        return None
    reference = f"Encounter/{encounter.id}"
    resource = copy.deepcopy(facts.record.raw.get(reference) or {})
    diagnoses = resource.get("diagnosis") or []
    ranks = {d.get("condition", {}).get("reference", "").rsplit("Condition/", 1)[-1]: d for d in diagnoses}
    a, b = ranks.get(first.split("/", 1)[1]), ranks.get(then.split("/", 1)[1])
    if a is None or b is None:
        return None
    rank_a, rank_b = a.get("rank"), b.get("rank")
    if rank_a is None or rank_b is None:
        index_a, index_b = diagnoses.index(a), diagnoses.index(b)
        diagnoses[index_a], diagnoses[index_b] = diagnoses[index_b], diagnoses[index_a]
    else:
        a["rank"], b["rank"] = rank_b, rank_a
    return Action("update", f"Sequence {first} before {then} in {reference}", resource)


def evidence_of(findings: list[Finding], limit: int = 3):
    """The evidence of findings, the strongest first (a named level, then a report), the newest first
    among equals, without repeating a sentence."""
    by_date = sorted(findings, key=lambda f: f.evidence.date or "", reverse=True)  # newest first among equals
    ordered = sorted(by_date, key=lambda f: (not f.specific, not f.from_report))
    out, seen = [], set()
    for f in ordered:
        key = (f.evidence.reference, f.evidence.text)
        if key not in seen:
            seen.add(key)
            out.append(f.evidence)
        if len(out) == limit:
            break
    return out


def sentences_of(findings: list[Finding], limit: int = 16) -> str:
    """The distinct sentences the findings were read in, joined (at most `limit`): what a rule
    reads for details such as a fracture's type. Bounded: a note that repeats one finding a
    thousand times gives one sentence, not a thousand."""
    return " ".join(list(dict.fromkeys(f.evidence.text for f in findings))[:limit])


# ------------------------------------------------------------ shared analyses
def slips(facts: Findings) -> list[Finding]:
    """Affirmed spondylolisthesis findings (a current slip, not a history or a question)."""
    return facts.of("displacement")


def slip_region(facts: Findings) -> str | None:
    """The region of the M43.1- slip: a slip said to be congenital is Q76.2, not an M43.1 site."""
    return documented_region([f for f in slips(facts) if "congenital" not in f.modifiers or "acquired" in f.modifiers])


def radicular(facts: Findings) -> list[Finding]:
    """Affirmed radiculopathy and radicular-sign findings that name their root level."""
    return [f for f in facts.of("radiculopathy") + facts.of("radicular-signs") if f.specific]


def radiculopathy_region(facts: Findings) -> str | None:
    region = documented_region(radicular(facts))
    return None if region == MULTIPLE else region  # there is no M54.19


SUPPORTED_FOR_ORDERS = TABLES.order_reasons


def order_fixes(facts: Findings, members) -> list[tuple[object, str, str]]:
    """(draft order, its unsupported reason, the supported code) for ORD-DIAGNOSIS.
    `members(name)` gives a value set's codes."""
    relevant = members("craniocervical-surgery") | members("advanced-cervical-imaging") | members("c1-c2-injection")
    candidates = [o for o in subject_orders(facts)
                  if set(o.cpt) & relevant and set(o.reason_codes) & set(SUPPORTED_FOR_ORDERS)]
    if not candidates:
        return []
    supported = {"M43.11": slip_region(facts) == OAA, "M54.11": radiculopathy_region(facts) == OAA}
    fixes = []
    for order in candidates:
        for reason in order.reason_codes:
            target = SUPPORTED_FOR_ORDERS.get(reason)
            if target and supported[target]:
                fixes.append((order, reason, target))
                break
    return fixes


def recode_card(rule_id: str, facts: Findings, ctx, condition, target: str, evidence: list, *,
                recommended: bool = True, missing: list[str] | None = None, **values) -> Card:
    """The card most rules give: recode one Condition to `target`, with the evidence for it."""
    return Card(
        rule=rule_id,
        values={"current": condition.code, "current_display": ctx.terminology.display(condition.code),
                "proposed": target, "proposed_display": ctx.terminology.display(target), **values},
        current_codes=[condition.code], proposed_codes=[target], missing_documentation=missing or [],
        evidence=evidence,
        suggestions=[Suggestion("recode", [recode_condition(facts, condition.reference, target, ctx.terminology)],
                                is_recommended=recommended)],
        subject=condition.reference,
    )


def specificity_cards(rule_id: str, facts: Findings, ctx, conditions, target: str, evidence: list[Finding],
                      **values) -> list[Card]:
    """Recode each Condition of `conditions` that is not already `target` to the documented `target`
    (whether another card proposes otherwise for it is the resolver's decision)."""
    return [recode_card(rule_id, facts, ctx, c, target, evidence_of(evidence), **values)
            for c in conditions if c.code != target]
