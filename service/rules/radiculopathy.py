"""The radiculopathy family (M54.1-), source: the M54.11 page as corrected by the tabular.

Tabular facts used here (CDC ICD-10-CM, April 2026): M54.1 Excludes1 neuralgia and neuritis
NOS (M79.2), radiculopathy with cervical disc disorder (M50.1), with lumbar disc disorder
(M51.1-), with spondylosis (M47.2-); section G50-G59 Excludes1 radiculitis NOS (M54.1-), so
G54.2 and M54.11 conflict; occipital neuralgia is M54.81 (not G54.2, as the source page
says); there is no disc at C1-C2 and "high cervical" M50.x1 is C2-C3/C3-C4; M05 sends
rheumatoid arthritis of the spine to M45.-, M06.08 is seronegative RA of the vertebrae.
"""
from __future__ import annotations

import re

from ..cards import Card, Suggestion
from ..findings import Finding, Findings
from ..nlp.levels import CERVICAL, CERVICOTHORACIC, OAA
from . import ORDER_HOOKS, RuleContext, rule
from .spondylolisthesis import NOT_ACUTE
from .tables import TABLES
from .common import (REGION_DIGIT, reason_of_order, REGION_LABEL, documented_region, evidence_of, new_condition, radicular,
                     radiculopathy_region, recode_card, recode_condition, region_of_code, remove_condition, resequence,
                     sentences_of, slips, specificity_cards)

RA_CODES = TABLES.ra_coded


def _m54(facts: Findings, firm: bool = True):
    return [c for c in facts.coded_with("M54.1", firm=firm) if c.code != "M54.1"]


def _m54_11(facts: Findings, firm: bool = True):
    return [c for c in _m54(facts, firm) if c.code == "M54.11"]


# --------------------------------------------------------------- shared facts
def radicular_mechanism(facts: Findings) -> list[Finding]:
    """What makes pain radicular rather than peripheral: root compression, foraminal stenosis,
    a root named at C1-C2, a positive Spurling."""
    found = [f for f in facts.of("radiculopathy") if f.specific or re.search(r"root", f.phrase, re.I)]
    found += facts.of("foraminal-stenosis")
    found += [f for f in facts.of("radicular-signs") if "spurling" in f.phrase.lower() or f.specific]
    return found


_RADICULAR = ("radiculopathy", "radicular-signs", "c1c2-radicular")


def _causes_radiculopathy(finding: Finding, anywhere: bool = False) -> bool:
    """The note names this finding as the cause of the radiculopathy coded M54.11 ("radiculopathy
    secondary to ..."): a radicular finding at C0-C2 or without a level of its own; with
    `anywhere`, at any level (when no C0-C2 radiculopathy is documented, the one the disc causes is
    the one that was coded)."""
    return any(kind in _RADICULAR and (anywhere or region in (OAA, None)) for kind, region in finding.linked)


def _spondylosis_reroute(facts: Findings):
    """Spondylosis that causes the C1-C2 radiculopathy: at C0-C2 itself, or linked to it by the note.
    Spondylosis elsewhere ("C5-C6: disc osteophyte complex", "multilevel spondylosis") is another
    condition: M47.21 is spondylosis *with* radiculopathy of the occipito-atlanto-axial region."""
    if not (facts.of("radiculopathy") or [f for f in facts.of("radicular-signs") if f.specific]):
        return None  # "no radiculopathy": there is nothing for a code "with radiculopathy" to say
    linked = [f for f in facts.of("spondylosis") if _causes_radiculopathy(f) and f.region in (OAA, None)]
    if linked:
        return "M47.21", linked
    # Spondylosis at C0-C2 is taken as the cause only when the note names no other: "radiculopathy
    # due to the C1-C2 anterolisthesis" beside "osteophytes of the lateral atlantoaxial joints" is
    # the slip's radiculopathy (M54.11 with M43.11), not spondylosis with radiculopathy.
    if _other_cause_named(facts):
        return None
    found = [f for f in facts.of("spondylosis") if f.specific and f.region == OAA]
    return ("M47.21", found) if found else None


def _other_cause_named(facts: Findings) -> bool:
    """The note names the C0-C2 radiculopathy's cause, and it is not spondylosis."""
    causes = {kind for f in facts.of("radiculopathy") + facts.of("radicular-signs") + facts.of("c1c2-radicular")
              if f.region in (OAA, None) for kind, _ in f.linked}
    return bool(causes) and "spondylosis" not in causes


_PAIR = re.compile(r"C(\d)\s*(?:-|\u2013|/|on)\s*C?(\d)|C(\d)\s*-\s*T1", re.I)


def _disc_code(finding: Finding) -> str | None:
    """M50.1- at the disc's real level; None at C0-C2, where there is no disc."""
    if finding.region == OAA:
        return None
    match = _PAIR.search(finding.level or "")
    if match and match.group(3):
        return TABLES.disc_by_level.get(f"C{match.group(3)}-T1", TABLES.disc_cervicothoracic)
    if match:
        return TABLES.disc_by_level.get(f"C{match.group(1)}-C{match.group(2)}", TABLES.disc_unleveled)
    if finding.region == CERVICOTHORACIC:
        return TABLES.disc_cervicothoracic
    return TABLES.disc_unleveled if finding.region in (CERVICAL, None) else None


def _disc_reroute(facts: Findings):
    """A cervical disc disorder the note names as the radiculopathy's cause: M50.1- of the disc's
    level (there is no disc at C1-C2). An incidental disc bulge at another level is no cause."""
    # A C2 radiculopathy documented beside a C7 one a C6-C7 disc causes: two conditions, no reroute.
    anywhere = not [f for f in facts.of("radiculopathy") if f.specific and f.region == OAA]
    for finding in facts.of("disc-disorder"):
        if finding.region in (CERVICAL, CERVICOTHORACIC, None) and _causes_radiculopathy(finding, anywhere):
            code = _disc_code(finding)
            if code and not facts.has_code(code):
                return code, [finding]
    return None


def _occipital_neuralgia(facts: Findings) -> list[Finding]:
    found = facts.of("occipital-neuralgia")
    return found if found and not radicular_mechanism(facts) else []


def _cervicalgia(facts: Findings) -> list[Finding]:
    axial = facts.of("axial-neck-pain")
    if not axial:
        return []
    radicular_anything = (facts.of("radiculopathy") or facts.of("radicular-signs") or facts.of("c1c2-radicular")
                          or facts.of("occipital-neuralgia"))
    return [] if radicular_anything else axial


# ------------------------------------------------------------------- the rules
@rule("RAD-SPECIFICITY")
def rad_specificity(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m54(facts):
        return []
    region = radiculopathy_region(facts)
    if region is None:
        return []
    found = [f for f in radicular(facts) if f.region == region]
    return specificity_cards("RAD-SPECIFICITY", facts, ctx, _m54(facts), f"M54.1{REGION_DIGIT[region]}", found,
                             region=REGION_LABEL[region], level=found[0].level)


def _generic_only(facts: Findings) -> list[Finding]:
    found = facts.of("radiculopathy")
    if not found or any(f.specific for f in found):
        return []
    return [f for f in found if f.region == CERVICAL]


@rule("RAD-GENERIC-LEVEL")
def rad_generic_level(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m54_11(facts):
        return []
    generic = _generic_only(facts)
    if not generic:
        return []
    return [Card(
        rule="RAD-GENERIC-LEVEL", values={"current": c.code, "wording": generic[0].level},
        current_codes=[c.code], missing_documentation=["region"], evidence=evidence_of(generic),
        subject=c.reference, premise="M54.11",
    ) for c in _m54_11(facts)]


@rule("RAD-OCCIPITAL-NEURALGIA")
def rad_occipital_neuralgia(facts: Findings, ctx: RuleContext) -> list[Card]:
    """Occipital neuralgia is M54.81. Coded M54.11 without a radicular mechanism: recode it. Coded
    G54.2 (cervical root disorders, which Excludes1 radiculitis NOS) for a documented occipital
    neuralgia: G54.2 becomes M54.81, whatever the radiculopathy beside it (a documented C2
    radiculopathy keeps its M54.11: both conditions are real)."""
    if not (facts.coded_with("G54.2") or _m54_11(facts)):
        return []  # codes first: a record without them is never read
    found = facts.of("occipital-neuralgia")
    if not found or facts.has_code("M54.81"):
        return []
    radiculopathy_stays = bool(_m54_11(facts)) and not _occipital_neuralgia(facts)
    cards = [recode_card("RAD-OCCIPITAL-NEURALGIA", facts, ctx, c, "M54.81", evidence_of(found),
                         radiculopathy_stays=radiculopathy_stays)
             for c in facts.coded_with("G54.2")]
    for card in cards:
        card.variant = "g54"
        # A draft order being signed for G54.2 (an occipital nerve block) takes the same reason.
        for order in facts.orders:
            if any(code.startswith("G54.2") for code in order.reason_codes):
                card.suggestions[0].actions.append(
                    reason_of_order(facts, order.reference, "M54.81", ctx.terminology, old_code="G54.2"))
    if _occipital_neuralgia(facts):
        cards += [recode_card("RAD-OCCIPITAL-NEURALGIA", facts, ctx, c, "M54.81", evidence_of(found))
                  for c in _m54_11(facts)]
    return cards


@rule("RAD-CERVICALGIA")
def rad_cervicalgia(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m54_11(facts):
        return []
    found = _cervicalgia(facts)
    if not found or facts.has_code("M54.2"):
        return []
    return [recode_card("RAD-CERVICALGIA", facts, ctx, c, "M54.2", evidence_of(found), recommended=False,
                        missing=["radicular-findings"]) for c in _m54_11(facts)]


@rule("RAD-EXCLUDES")
def rad_excludes(facts: Findings, ctx: RuleContext) -> list[Card]:
    cards = []
    for condition in _m54_11(facts):
        reroute = _spondylosis_reroute(facts)
        variant = None
        if reroute is None:
            reroute, variant = _disc_reroute(facts), "disc"
        if reroute is not None:
            code, found = reroute
            card = recode_card("RAD-EXCLUDES", facts, ctx, condition, code, evidence_of(found), level=found[0].level,
                               notes=[n.note for n in ctx.terminology.excludes1_between("M54.11", code)])
            card.variant = variant
            cards.append(card)
        if reroute is None and [f for f in radicular(facts) if f.region == OAA]:
            # A coded disc disorder or spondylosis with radiculopathy elsewhere (a C6-C7 disc for a C7
            # root) beside a documented C1-C2 radiculopathy that it does not cause: two conditions,
            # and guideline I.A.12.a lets both codes stand.
            for other in facts.coded_with("M50.1", "M51.1", "M47.2"):
                if not other.code.startswith("M47.21"):
                    cards.append(Card(rule="RAD-EXCLUDES", variant="unrelated", subject=condition.reference,
                                      keeps=True, suggestions=[Suggestion("keep_both", [
                                          remove_condition(condition.reference, "M54.11"),
                                          remove_condition(other.reference, other.code)])]))
        for other in facts.coded_with("M79.2", "G54.2"):
            notes = [n.note for n in ctx.terminology.excludes1_between("M54.11", other.code)]
            cards.append(Card(
                rule="RAD-EXCLUDES", variant="conflict",
                values={"current": "M54.11", "other": other.code, "other_display": ctx.terminology.display(other.code),
                        "notes": notes},
                current_codes=["M54.11", other.code], evidence=[condition.evidence(), other.evidence()],
                suggestions=[
                    Suggestion("keep", [remove_condition(other.reference, other.code)],
                               {"kept": "M54.11", "removed": other.code}),
                    Suggestion("keep", [remove_condition(condition.reference, "M54.11")],
                               {"kept": other.code, "removed": "M54.11"}),
                ],
                subject=condition.reference,
            ))
    return cards


def _ra_documented(facts: Findings) -> list[Finding]:
    """Rheumatoid arthritis the record makes the cause of the spinal condition: linked by the note
    to the radiculopathy ("C2 radiculopathy due to rheumatoid pannus"), or documented at the spine
    itself ("rheumatoid involvement of the cervical spine", "RA with C1-C2 pannus"). RA of the hands
    beside a radiculopathy of another cause is no "code first" (the code-first note needs a cause)."""
    return [f for f in facts.of("rheumatoid-arthritis")
            if any(kind == "radiculopathy" for kind, _ in f.linked) or _ra_at_spine(f.evidence.text)]


_RA_AT = re.compile(r"(?:rheumatoid\s+arthritis|rheumatoid|\bRA\b)(?:\s+\w+){0,2}?\s+(?:of|involving|in|at|affecting|with)\s+"
                    r"(?:the\s+)?(?:\w+\s+){0,2}?(?:spine|spinal|cervical|atlanto-?axial|C[0-7]\b|C1-C2|cranio-?cervical|"
                    r"odontoid|dens|neck|vertebra\w*)|"
                    r"(?:cervical|spinal|atlanto-?axial|cranio-?cervical)\s+(?:\w+\s+){0,1}(?:rheumatoid|RA\b)|"
                    r"rheumatoid\s+(?:pannus|involvement\s+of\s+the\s+(?:cervical\s+)?spine)", re.IGNORECASE)


def _ra_at_spine(sentence: str) -> bool:
    """The sentence puts the rheumatoid disease at the spine itself: "rheumatoid arthritis of the
    cervical spine", "RA involving C1-C2", "cervical rheumatoid disease", "rheumatoid pannus"; not a
    spinal level elsewhere in the sentence ("C2 radiculopathy in a patient with RA of the hands")."""
    return bool(_RA_AT.search(sentence))


def _ra_code_at_spine(code: str) -> bool:
    """An RA code of the spine itself: the vertebrae (M05.x8/M06.x8 fifth characters for vertebrae) or
    M45.- (ankylosing spondylitis, the tabular's home for rheumatoid arthritis of the spine)."""
    compact = code.replace(".", "")
    return compact.startswith("M45") or (compact[:3] in ("M05", "M06", "M08") and len(compact) >= 5 and compact[4] == "8")


@rule("RAD-RA-SEQUENCING")
def rad_ra_sequencing(facts: Findings, ctx: RuleContext) -> list[Card]:
    m54 = _m54_11(facts)
    if not m54:
        return []
    condition = m54[0]
    ra_coded = facts.coded_with(*RA_CODES)
    if ra_coded:
        # Code first needs the cause, and the code of the cause: an RA code of the spine (M45.-,
        # the vertebrae's M05/M06). RA of the hands coded after M54.11 is not resequenced; where the
        # record links RA to the spine, the spine's RA code is proposed below instead.
        at_spine = [c for c in ra_coded if _ra_code_at_spine(c.code)]
        if not at_spine:
            return _ra_additional(facts, ctx, condition)
        ra = at_spine[0]
        if condition.rank is None or ra.rank is None or ra.rank < condition.rank:
            return []
        action = resequence(facts, ra.reference, condition.reference)
        return [Card(
            rule="RAD-RA-SEQUENCING", variant="sequencing",
            values={"current": "M54.11", "ra": ra.code, "ra_display": ctx.terminology.display(ra.code),
                    "ra_rank": ra.rank, "m54_rank": condition.rank},
            current_codes=["M54.11", ra.code], evidence=[ra.evidence(), condition.evidence()],
            suggestions=[Suggestion("resequence", [action], {"ra": ra.code}, is_recommended=True)] if action else [],
            subject=condition.reference, premise="M54.11",
        )]
    return _ra_additional(facts, ctx, condition)


def _ra_additional(facts: Findings, ctx: RuleContext, condition) -> list[Card]:
    found = _ra_documented(facts)
    if not found or any(_ra_code_at_spine(c.code) for c in facts.coded_with(*RA_CODES, firm=False)):
        return []  # no documented cause, or the spine's RA code is there
    text = sentences_of(found).lower()
    seronegative = "seronegative" in text or "rheumatoid factor negative" in text
    seropositive = "seropositive" in text or "rheumatoid factor positive" in text
    # M06.08 is RA *without* rheumatoid factor: never for a seropositive patient (M05 → M45.- for the spine).
    options = list(TABLES.ra_options["seronegative" if seronegative else "seropositive" if seropositive
                                     else "unknown"])
    return [Card(
        rule="RAD-RA-SEQUENCING", variant="additional",
        values={"current": "M54.11", "seronegative": seronegative,
                "options": [(code, ctx.terminology.display(code)) for code in options]},
        current_codes=["M54.11"], proposed_codes=options, evidence=evidence_of(found),
        suggestions=[Suggestion("add_ra", [new_condition(facts, code, ctx.terminology)],
                                {"code": code, "display": ctx.terminology.display(code)}, is_recommended=(n == 0))
                     for n, code in enumerate(options)],
        subject=condition.reference, premise="M54.11",
    )]


@rule("RAD-CAUSE")
def rad_cause(facts: Findings, ctx: RuleContext) -> list[Card]:
    # M54.11 coded, or about to be: an M54.1- whose root the record places at C1-C2 (the
    # specificity card recodes it; the cause is coded beside it either way).
    m54 = _m54_11(facts) or ([c for c in _m54(facts)] if _m54(facts) and radiculopathy_region(facts) == OAA else [])
    if not m54:
        return []
    cards = []
    for entry in TABLES.causes:
        kind, already, proposed = entry.finding, entry.already, entry.proposed
        found = [f for f in facts.of(kind) if f.region == OAA]
        if kind == "instability":
            found += [f for f in facts.of(kind) if f.region is None and "atlanto" in f.evidence.text.lower()]
        if not found or facts.has_code(*already):
            continue
        cards.append(Card(
            rule="RAD-CAUSE", values={"finding": kind, "proposed": proposed,
                                      "proposed_display": ctx.terminology.display(proposed)},
            current_codes=["M54.11"], proposed_codes=[proposed], evidence=evidence_of(found),
            suggestions=[Suggestion("add", [new_condition(facts, proposed, ctx.terminology)], is_recommended=True)],
            subject=m54[0].reference, premise="M54.11",
        ))
    return cards


@rule("RAD-DOCS")
def rad_docs(facts: Findings, ctx: RuleContext) -> list[Card]:
    coded = _m54_11(facts, firm=False)
    if not coded:
        return []
    if radiculopathy_region(facts) not in (None, OAA):
        return []  # the root is documented in another region: nothing about C0-C2 to ask
    missing = []
    named = [f for f in radicular(facts) if f.region == OAA] or [f for f in slips(facts) if f.region == OAA]
    if not named and not _generic_only(facts):
        missing.append("region")
    if not (facts.of("c1c2-radicular") or facts.of("radicular-signs")):
        missing.append("radicular-findings")
    imaging = facts.studies_of("ct-cervical", "mri-cervical", "flexion-extension")
    if facts.record.has("diagnosticReports") and not imaging and not facts.of("imaging"):
        missing.append("imaging")
    performed = [s for s in facts.studies_of("electrodiagnostic") if s.reference.startswith("Procedure/")]
    results = [s for s in facts.studies_of("electrodiagnostic") if s.reference.startswith("DiagnosticReport/")
               and s.has_result]
    if performed and not results:
        missing.append("electrodiagnostics")
    procedure_orders = ctx.value_sets.members("craniocervical-surgery") | ctx.value_sets.members("c1-c2-injection")
    if ctx.hook in ORDER_HOOKS and any(set(o.cpt) & procedure_orders for o in facts.orders):
        care = facts.studies_of("conservative-care") or facts.of("conservative-care", "affirmed", "historical")
        if not care:
            missing.append("conservative-care")
    if not missing:
        return []
    return [Card(
        rule="RAD-DOCS", values={"current": "M54.11"}, current_codes=["M54.11"], missing_documentation=missing,
        evidence=evidence_of(radicular(facts)) or [coded[0].evidence()],
        subject=coded[0].reference, premise="M54.11",
    )]




# --------------------------------------------------------------- current injury
_INJURY_KINDS = frozenset({"trauma", "fracture", "dislocation"})


def injured_roots(facts: Findings) -> list[Finding]:
    """Radicular findings documented as a current injury: linked by the note to an acute fracture,
    dislocation or trauma of the same sentence ("left C2 radiculopathy from the displaced C1 arch
    fracture fragment"), or said to be traumatic and acute themselves. A radiculopathy after an old
    or healed injury is no current injury."""
    acute = {(f.evidence.reference, f.evidence.text, f.kind)
             for kind in _INJURY_KINDS for f in facts.of(kind) if not f.modifiers & NOT_ACUTE}
    out = []
    for f in facts.of("radiculopathy") + facts.of("radicular-signs") + facts.of("c1c2-radicular"):
        if f.modifiers & NOT_ACUTE:
            continue
        # A radicular sign (numbness, weakness) linked to an injury is a root injury only when that
        # injury is at the spine ("thumb numbness from the distal radius fracture" is not).
        linked = any(kind in _INJURY_KINDS and (f.evidence.reference, f.evidence.text, kind) in acute
                     and (f.kind == "radiculopathy" or region is not None) for kind, region in f.linked)
        if linked or ("traumatic" in f.modifiers and "acute" in f.modifiers):
            out.append(f)
    return out


@rule("RAD-INJURY")
def rad_injury(facts: Findings, ctx: RuleContext) -> list[Card]:
    """The M50-M54 block Excludes1 "current injury - see injury of spine by body region": a
    radiculopathy coded in the block that the record documents as a current injury is the nerve
    root injury code of its region (S14.2XX- for a cervical root), with its 7th character; where
    the root's region is not documented, the card says what is missing instead of a code."""
    coded = [c for c in facts.coded_with(*TABLES.root_injury_coded) if ctx.terminology.is_billable(c.code)]
    if not coded:
        return []
    injured = injured_roots(facts)
    if not injured:
        return []
    region = documented_region([f for f in injured if f.specific])
    stem = TABLES.root_injury.get(region) if region else None
    seventh = TABLES.seventh_for(sentences_of(injured), fracture=False)
    code = ctx.terminology.with_seventh(stem, seventh) if stem else None
    cards = []
    for condition in coded:
        coded_region = region_of_code(condition.code)
        if region and coded_region and coded_region != region and {coded_region, region} != {OAA, CERVICAL}:
            continue  # a radiculopathy of another region: another condition
        values = {"current": condition.code, "current_display": ctx.terminology.display(condition.code),
                  "level": injured[0].level or ""}
        if code:
            values.update(proposed=code, proposed_display=ctx.terminology.display(code))
            cards.append(Card(
                rule="RAD-INJURY", values=values, current_codes=[condition.code], proposed_codes=[code],
                evidence=evidence_of(injured),
                suggestions=[Suggestion("recode", [recode_condition(facts, condition.reference, code, ctx.terminology)],
                                        is_recommended=True)],
                subject=condition.reference,
            ))
        else:
            cards.append(Card(
                rule="RAD-INJURY", variant="undetermined", values=values, current_codes=[condition.code],
                missing_documentation=["region"], evidence=evidence_of(injured), subject=condition.reference,
                premise=condition.code,
            ))
    return cards
