"""One arbitration over every rule's candidate cards: what a hook call shows.

Rules say what they conclude, each on its own (a candidate card: the resource it is about, the
change its suggestions make, its evidence); they do not look at each other. This module is the
one place that decides between them, by four principles (the card contract: one proposal, one
card):

1. **One proposal per resource.** The changes a card proposes are read off its own FHIR actions
   (an update of Condition/c1 to M43.11, a delete of Condition/c2). Where several cards change
   the same resource, the strongest wins (`strength` in knowledge/code_tables.toml: a tabular
   reroute over a specificity card over a documentation query). Two cards of the same strength
   that change it differently are one card that states the conflict and asks (RESOLVE-CONFLICT),
   never two cards that contradict each other.
2. **The same code is never proposed twice.** A code already current on another Condition, or
   proposed by a stronger card, is not proposed again; one rule's identical proposals for
   several Conditions (the same code on the problem list and the encounter) are one card.
3. **Moot cards are not shown.** An additional-code or documentation card presumes its subject's
   code (`Card.premise`): when a shown card changes the subject to another code, it is dropped.
4. **Decisions to keep.** A family rule that finds two Excludes1 codes to be unrelated conditions
   (guideline I.A.12.a) says so with a `keeps` candidate: removal cards on those resources are
   not shown, and neither is the decision.

At order-sign, the cards shown are those about the orders being signed and the diagnoses that are
their reasons; an order-sign call without a spine order is answered with no cards (`order_scope`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..cards import Action, Card, Suggestion
from ..terminology import ICD10CM
from .common import new_condition
from .tables import TABLES

CONFLICT_RULE = "RESOLVE-CONFLICT"
MORE_RULE = "RESOLVE-MORE"
UNDECIDED = "delete?"  # one of several options, none recommended
MADE_HERE = (CONFLICT_RULE, MORE_RULE)  # card templates of cards/ produced by the resolver, not by a rule


@dataclass
class _Candidate:
    card: Card
    strength: int
    changes: dict[str, str] = field(default_factory=dict)   # resource → new code | "delete" | "update"
    creates: set[str] = field(default_factory=set)          # codes of Conditions it would create


def _reference(resource: dict | None) -> str | None:
    if not resource or not resource.get("resourceType") or not resource.get("id"):
        return None
    return f"{resource['resourceType']}/{resource['id']}"


def _icd(concepts) -> str | None:
    for concept in concepts or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == ICD10CM and coding.get("code"):
                return coding["code"]
    return None


def _read(card: Card) -> _Candidate:
    """A card's claim, read off its own actions."""
    candidate = _Candidate(card, TABLES.strength(card.rule, card.variant))
    # Several options none of which is recommended (keep this code or that one) claim the
    # resources, but decide nothing yet: a card about one of them is not moot.
    undecided = len(card.suggestions) > 1 and not any(s.is_recommended for s in card.suggestions)
    for suggestion in card.suggestions:
        for action in suggestion.actions:
            if action.type == "delete" and action.resource_id:
                candidate.changes.setdefault(action.resource_id, UNDECIDED if undecided else "delete")
            elif action.type == "update":
                reference = _reference(action.resource)
                if reference is None:
                    continue
                resource = action.resource
                code = _icd([resource.get("code")]) if resource.get("resourceType") == "Condition" \
                    else _icd(resource.get("reasonCode"))
                previous = candidate.changes.get(reference)
                # Options of one card (keep this one / keep that one) are one claim on both resources.
                candidate.changes[reference] = code or "update" if previous in (None, code) else "update"
            elif action.type == "create" and action.resource:
                code = _icd([action.resource.get("code")])
                if code:
                    candidate.creates.add(code)
    if card.subject and card.proposed_codes and not candidate.changes and not candidate.creates \
            and card.premise is None:
        # A proposal the EHR cannot apply yet (a category that needs the fracture's detail): it
        # still changes what the subject will be.
        candidate.changes[card.subject] = card.proposed_codes[0]
    return candidate


def resolve(candidates: list[Card], findings, context, scope: set[str] | None = None) -> list[Card]:
    """The cards to show, in rule-id order. With a `scope` (order-sign), only candidates about
    those resources take part: a problem-list entry outside it is neither changed nor merged."""
    current = {c.reference: c.code for c in findings.current(firm=False)}
    coded = set(current.values())
    claims = [_read(card) for card in candidates]
    if scope is not None:
        claims = [c for c in claims if ({c.card.subject} | set(c.changes)) & scope]
        claims = [c for c in claims if set(c.changes) <= scope or not c.changes]

    # 4. Decisions to keep: removal cards on those resources go, and the decisions are not shown.
    kept = [set(c.changes) | ({c.card.subject} if c.card.subject else set()) for c in claims if c.card.keeps]
    claims = [c for c in claims if not c.card.keeps and not (
        c.changes and set(c.changes.values()) <= {"delete", UNDECIDED} and any(set(c.changes) <= k for k in kept))]

    # 2a. A code already current elsewhere is not proposed again.
    claims = [c for c in claims if not _reproposes(c, current, coded)]

    # 1. One proposal per resource, strongest first.
    # At equal strength a recode goes before a removal: recoding a Condition removes its code too,
    # and keeps the documented condition (Q76.2 for a congenital slip, not just "remove M43.11").
    claims.sort(key=lambda c: (-c.strength, not _recodes(c), c.card.rule, c.card.variant or ""))
    owner: dict[str, _Candidate] = {}
    shown: list[_Candidate] = []
    conflicts: dict[int, list[_Candidate]] = {}
    for claim in claims:
        contested = [owner[r] for r in claim.changes if r in owner]
        if not contested:
            shown.append(claim)
            for reference in claim.changes:
                owner[reference] = claim
            continue
        winner = contested[0]
        if all(claim.changes.get(r) == w.changes.get(r) for w in contested for r in claim.changes if r in w.changes):
            continue  # the same change, proposed by a stronger card: shown once
        if winner.strength == claim.strength and len({id(w) for w in contested}) == 1 \
                and _recodes(winner) and _recodes(claim):
            conflicts.setdefault(id(winner), [winner]).append(claim)
        # else: a weaker card that would contradict a stronger one is not shown

    shown = _one_card_per_code(shown, current)
    changed = {r: code for c in shown for r, code in c.changes.items()}
    proposed = {code for code in changed.values() if code not in ("delete", "update", UNDECIDED)}

    out: list[Card] = []
    created: set[str] = set()
    for claim in shown:
        card = claim.card
        # 3. Moot: the card presumes a code its subject will not keep.
        if not claim.changes and card.subject in changed and changed[card.subject] not in (card.premise, UNDECIDED):
            continue
        # 2b. A code is proposed once: by the card that changes a resource to it, else the first creator.
        if claim.creates and not claim.changes and (claim.creates & proposed or claim.creates <= created):
            continue
        created |= claim.creates
        if id(claim) in conflicts:
            card = _conflict(conflicts[id(claim)], findings, context)
        out.append(card)
    return _merge_repeats(sorted(out, key=lambda c: (c.rule, c.variant or "", c.subject or "")))


def _recodes(claim: _Candidate) -> bool:
    return any(code not in ("delete", "update", UNDECIDED) for code in claim.changes.values())


def _one_card_per_code(shown: list[_Candidate], current: dict[str, str]) -> list[_Candidate]:
    """Two cards (of different rules or variants) that would each turn a different Condition into
    the same code (G54.2 and M54.11 both coded for one occipital neuralgia → M54.81 twice) are one
    card: the stronger keeps its recode, and the other Condition is removed in the same
    suggestion, so that accepting it leaves the code on the record once."""
    out: list[_Candidate] = []
    by_code: dict[str, _Candidate] = {}
    for claim in shown:
        targets = {r: code for r, code in claim.changes.items()
                   if r.startswith("Condition/") and code not in ("delete", "update", UNDECIDED)}
        if len(targets) != 1 or len(claim.card.suggestions) != 1:
            out.append(claim)
            continue
        (reference, code), = targets.items()
        first = by_code.get(code)
        if first is None or first.card.rule == claim.card.rule and first.card.variant == claim.card.variant:
            by_code.setdefault(code, claim)
            out.append(claim)
            continue
        first.card.suggestions[0].actions.append(
            Action("delete", f"Remove {reference} ({current.get(reference, '')}): it is the same diagnosis",
                   resource_id=reference))
        first.card.evidence.extend(e for e in claim.card.evidence if e not in first.card.evidence)
        first.card.current_codes.extend(c for c in claim.card.current_codes if c not in first.card.current_codes)
        first.changes[reference] = "delete"
    return out


def _reproposes(claim: _Candidate, current: dict[str, str], coded: set[str]) -> bool:
    """The card would make a Condition carry a code another current Condition already has."""
    for reference, code in claim.changes.items():
        if reference.startswith("Condition/") and code in coded and current.get(reference) != code:
            return True
    return bool(claim.creates) and not claim.changes and claim.creates <= coded


def _merge_repeats(cards: list[Card]) -> list[Card]:
    """One rule's identical proposals for several Conditions (a code on the problem list and on the
    encounter) are one card whose suggestions change them all."""
    out: list[Card] = []
    by_key: dict[tuple, Card] = {}
    for card in cards:
        key = (card.rule, card.variant, tuple(card.proposed_codes), tuple(card.missing_documentation),
               tuple(s.key for s in card.suggestions))
        if not card.proposed_codes:
            key += (tuple(card.current_codes),)  # a query about M43.11 is not one about M54.11
        first = by_key.get(key)
        if first is None:
            by_key[key] = card
            out.append(card)
            continue
        for mine, theirs in zip(first.suggestions, card.suggestions):
            mine.actions.extend(a for a in theirs.actions if a not in mine.actions)
        first.evidence.extend(e for e in card.evidence if e not in first.evidence)
        first.current_codes.extend(c for c in card.current_codes if c not in first.current_codes)
    return out


def _conflict(claims: list[_Candidate], findings, context) -> Card:
    """Equally strong cards that change the same resource to different codes: one card that states
    the conflict and lets the clinician choose (or say it is undetermined)."""
    terminology = context.terminology
    subject = next(iter(claims[0].changes))
    current = next((c.code for c in findings.current(firm=False) if c.reference == subject), None)
    options, suggestions, evidence = [], [], []
    for claim in claims:
        card = claim.card
        code = claim.changes.get(subject)
        label = code if code not in ("delete", "update", UNDECIDED) else None
        options.append({"rule": card.rule, "code": label,
                        "display": terminology.display(label) if label and terminology.exists(label) else None})
        recommended = [s for s in card.suggestions if s.is_recommended] or card.suggestions[:1]
        for s in recommended:
            suggestions.append(Suggestion("choose", list(s.actions),
                                          {"code": label or "", "display": options[-1]["display"] or "",
                                           "rule": card.rule}, is_recommended=False))
        evidence.extend(e for e in card.evidence if e not in evidence)
    codes = [o["code"] for o in options if o["code"]]
    if len(codes) == 2:
        # Both may be documented conditions (a disc radiculopathy and an occipital neuralgia): the
        # first replaces the current code and the second is added beside it.
        first_actions = list(suggestions[0].actions)
        both = first_actions + [new_condition(findings, codes[1], terminology)]
        suggestions.append(Suggestion("both", both, {"first": codes[0], "second": codes[1],
                                                      "first_display": options[0]["display"] or "",
                                                      "second_display": options[1]["display"] or ""},
                                      is_recommended=False))
    suggestions.append(Suggestion("other", [], {}, is_recommended=False))
    suggestions.append(Suggestion("undetermined", [], {}, is_recommended=False))
    return Card(
        rule=CONFLICT_RULE,
        values={"current": current or "", "current_display": terminology.display(current) if current else "",
                "subject": subject, "options": options},
        current_codes=[current] if current else [],
        proposed_codes=[o["code"] for o in options if o["code"]],
        evidence=evidence, suggestions=suggestions, subject=subject,
    )


# ------------------------------------------------------------------ order-sign
def order_scope(findings, value_sets) -> set[str]:
    """The orders being signed (at order-select: selected) that concern the spine, and the
    Conditions that are their reasons (by reference, or, for a spine procedure, by the same code): what order-sign and
    order-select cards may be about. Empty: no spine order. Draft orders not selected are context only."""
    spine_cpt = set().union(*(value_sets.members(name) for name in TABLES.spine_order_sets))
    scope: set[str] = set()
    reasons: set[str] = set()
    selected = getattr(getattr(findings, "record", None), "selected", None)
    for order in findings.orders:
        if selected is not None and order.reference not in selected:
            continue
        spine_procedure = bool(set(order.cpt) & spine_cpt)
        if spine_procedure or any(TABLES.is_spine_reason(code) for code in order.reason_codes):
            scope.add(order.reference)
            scope.update(order.reason_conditions)
            if spine_procedure:
                # A Condition coded as the reason of a spine order (a knee MRI "for" cervical
                # radiculopathy does not bring the problem list's radiculopathy into an order call).
                reasons.update(order.reason_codes)
    if scope:
        scope.update(c.reference for c in findings.conditions if c.code in reasons)
    return scope


# ------------------------------------------------------------------ the cap

def cap(cards: list[Card], context) -> list[Card]:
    """At most `context.max_cards` cards: the strongest first; the rest are named in one last card
    (rule and count), so an exploding record answers in bounded size and nothing is silently lost."""
    limit = max(1, context.max_cards)
    if len(cards) <= limit:
        return cards
    ranked = sorted(cards, key=lambda c: (-TABLES.strength(c.rule, c.variant), c.rule))
    kept, rest = ranked[:limit - 1], ranked[limit - 1:]
    counts: dict[str, int] = {}
    for card in rest:
        counts[card.rule] = counts.get(card.rule, 0) + 1
    more = Card(rule=MORE_RULE, values={"count": len(rest), "rules": sorted(counts.items()), "limit": limit})
    return sorted(kept, key=lambda c: (c.rule, c.variant or "", c.subject or "")) + [more]
