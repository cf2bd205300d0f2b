"""The spondylolisthesis family (M43.1-), source: the M43.11 page as corrected by the tabular.

Tabular facts used here (CDC ICD-10-CM, April 2026): M43.1 Excludes1 acute traumatic
spondylolisthesis (code to fracture of vertebra by region) and congenital spondylolisthesis
(Q76.2); S12 needs a 7th character and codes an undocumented displacement as displaced and
an undocumented open/closed status as closed; myelopathy with M43.11 is G99.2 (code first the
underlying disease), never M47.011/M47.012 (anterior spinal artery compression).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..cards import Card, Suggestion
from ..findings import Finding, Findings
from ..nlp.levels import CERVICAL, MULTIPLE, OAA
from . import RuleContext, rule
from .tables import TABLES
from .common import (REGION_DIGIT, region_of_code, REGION_LABEL, documented_region, evidence_of, in_region, new_condition,
                     recode_card, recode_condition, remove_condition, sentences_of, slip_region, slips,
                     specificity_cards)

M43_1 = "M43.1"


def _m43(facts: Findings, firm: bool = True):
    return [c for c in facts.coded_with(M43_1, firm=firm) if c.code != M43_1]


# The M43.1- codes a slip at C0-C2 can be coded with (its own region's, the cervical one next to it,
# unspecified, multiple): an injury at C0-C2 is not the same slip as a lumbar one (I.A.12.a).
UPPER = ("M43.10", "M43.11", "M43.12", "M43.19")


def _m43_upper(facts: Findings, firm: bool = True):
    return [c for c in _m43(facts, firm) if c.code in UPPER]


# ------------------------------------------------------------ trauma analysis
@dataclass(frozen=True)
class TraumaticSlip:
    code: str | None            # billable S12/S13 code with its 7th character, when determinable
    category: str | None        # else the category the documentation allows (S12.1, S12.11 …)
    needs_detail: bool          # a more specific code needs the fracture's type/displacement
    evidence: tuple[Finding, ...]
    description: str
    cord_injury: bool


_C2 = re.compile(r"\b(?:C2|axis|dens|odontoid|hangman)", re.IGNORECASE)
_C1 = re.compile(r"\b(?:C1|atlas|Jefferson)\b", re.IGNORECASE)
_C0 = re.compile(r"\b(?:C0|occiput|occipito|atlanto-?occipital)", re.IGNORECASE)
_DISLOCATED = re.compile(r"\bdislocat", re.IGNORECASE)
_NONDISPLACED = re.compile(r"\bnon-?\s?displaced\b", re.IGNORECASE)


def _vertebra_of(fracture: Finding) -> str | None:
    """C1 or C2 from the fracture's own level and words (None when they do not say, or say both)."""
    own = f"{fracture.level or ''} {fracture.phrase}"
    c1, c2 = bool(_C1.search(own)), bool(_C2.search(own))
    return "C1" if c1 and not c2 else "C2" if c2 and not c1 else None


NOT_ACUTE = frozenset({"chronic", "old", "sequela"})
_INJURIES = frozenset({"trauma", "fracture"})  # what a slip linked to is an injury


def _acute(finding: Finding) -> bool:
    """Not said to be chronic, old, healed or a sequela (the modifiers that belong to the finding)."""
    return not (finding.modifiers & NOT_ACUTE) or "acute" in finding.modifiers


_SKULL_BASE = re.compile(r"\b(?:occipital\s+condyl\w*|condylar|skull\s+base|basilar\s+skull|basi-?occiput|clivus|clival)\b",
                         re.IGNORECASE)


def _skull_base(fracture: Finding) -> bool:
    """A fracture of the occipital condyle or skull base (S02.1-), not of C1 or C2, though its line
    of the report is the craniocervical junction's."""
    return _vertebra_of(fracture) is None and bool(_SKULL_BASE.search(f"{fracture.phrase} {fracture.evidence.text}"))


_BEFORE_INJURY = re.compile(r"\bchronic\b|\blong-?standing\b|\bknown\b|\b(?:since|from|in|on)\s+(?:the\s+)?(?:\w+\s+)?"
                            r"(?:19|20)\d\d\b", re.IGNORECASE)


def slip_predates_injury(facts: Findings) -> bool:
    """The C0-C2 slip is documented as older than the injury: chronic, long-standing or known, or
    dated to an earlier year ("chronic grade 1 anterolisthesis of C1 on C2, unchanged since 2024"),
    with no word of its own making it traumatic, and not disputed anywhere (a slip the record says
    is "not a degenerative slip" but the fracture's displacement is the injury). A new fracture
    beside it is another condition (I.A.12.a), not the slip's cause."""
    oaa = in_region(slips(facts), OAA)
    if not oaa or any("traumatic" in f.modifiers or ("acute" in f.modifiers and "chronic" not in f.modifiers)
                      or any(k in _INJURIES for k, _ in f.linked) for f in oaa):
        return False  # ("chronic ... slip with no acute change": the chronic word is the slip's)
    if [f for f in facts.of("displacement", "negated") if f.region in (OAA, None)]:
        return False
    return any("chronic" in f.modifiers and _BEFORE_INJURY.search(f.evidence.text) for f in oaa)


def traumatic_slip(facts: Findings, ctx: RuleContext) -> TraumaticSlip | None:
    """Once per hook call (several rules ask)."""
    if "traumatic_slip" not in facts.memo:
        facts.memo["traumatic_slip"] = _traumatic_slip(facts, ctx)
    return facts.memo["traumatic_slip"]


def _fracture(ctx: RuleContext, fractures: list[Finding], seventh: str | None = None):
    """(code, category, needs detail, description) of fractures at C0-C2, by the code tables."""
    by_vertebra = {"C1": [], "C2": [], None: []}
    for f in fractures:
        by_vertebra[_vertebra_of(f)].append(f)
    # Which vertebra is broken is read from each fracture's own level and words, not from
    # everything its sentences mention ("C1: fracture of the atlas; the dens is intact").
    if by_vertebra["C1"] and not by_vertebra["C2"]:
        fractures = by_vertebra["C1"] + by_vertebra[None]
    elif by_vertebra["C2"] and not by_vertebra["C1"]:
        fractures = by_vertebra["C2"] + by_vertebra[None]
    text = sentences_of(fractures)
    on_c2, on_c1 = bool(by_vertebra["C2"]), bool(by_vertebra["C1"])
    if not (on_c1 or on_c2):
        on_c2, on_c1 = bool(_C2.search(text)), bool(_C1.search(text))
    seventh = seventh or TABLES.seventh_for(text, fracture=True)
    entry = TABLES.fracture_for(text, on_c1, on_c2)
    if entry is None:
        return None, "S12", True, "fracture at C0-C2", fractures
    displaced = not _NONDISPLACED.search(text)
    lowered = text.lower()
    stem, category = (entry.displaced if displaced else entry.nondisplaced), None
    if not stem:
        stem = entry.anterior if "anterior" in lowered else entry.posterior if "posterior" in lowered else None
        category = None if stem else entry.category
    code = ctx.terminology.with_seventh(stem, seventh) if stem else None
    if stem and code is None:
        category = stem
    return code, (category if code is None else None), entry.detail or code is None, entry.description, fractures


def _joint(ctx: RuleContext, slipped: list[Finding], seventh: str | None = None):
    """(code, stem, description) of a traumatic subluxation/dislocation at C0-C1 or C1-C2."""
    text = sentences_of(slipped)
    dislocated = bool(_DISLOCATED.search(text))
    joint = TABLES.joints["c0-c1"] if _C0.search(text) else TABLES.joints["c1-c2"]
    stem = joint + TABLES.joints["dislocation" if dislocated else "subluxation"]
    code = ctx.terminology.with_seventh(stem, seventh or TABLES.seventh_for(text, fracture=False))
    which = "C0/C1" if joint == TABLES.joints["c0-c1"] else "C1/C2"
    return code, stem, f"traumatic {'dislocation' if dislocated else 'subluxation'} of {which}"


def _traumatic_slip(facts: Findings, ctx: RuleContext) -> TraumaticSlip | None:
    """An acute traumatic slip or fracture at C0-C2, and the code the tabular sends it to.

    The acuity and the cause belong to the slip or fracture itself: a fracture said to be old or
    healed, or a slip documented as chronic, unchanged since an earlier study or the sequela of an
    old injury, is not acute whatever else the encounter says about an injury; and a slip is an
    injury only where its own words make it one (traumatic, acute, caused by the trauma)."""
    fractures = [f for f in facts.of("fracture") if f.region == OAA and _acute(f) and not _skull_base(f)]
    trauma = [f for f in facts.of("trauma") if not (f.modifiers & NOT_ACUTE)]
    cord = bool(facts.of("cord-compression") or facts.of("myelopathy")) and bool(trauma or fractures)
    if fractures and slip_predates_injury(facts):
        return None  # a new fracture beside a slip older than it: two conditions, no reroute of the slip
    if fractures:
        code, category, detail, description, fractures = _fracture(ctx, fractures)
        return TraumaticSlip(code, category, detail, tuple(fractures + trauma[:1]), description, cord)
    slipped = [f for f in in_region(slips(facts), OAA) + [f for f in facts.of("dislocation") if f.region == OAA]
               if _acute(f)]
    oaa_slips = in_region(slips(facts), OAA)
    if slipped and any(f.modifiers & NOT_ACUTE for f in oaa_slips):
        return None  # the slip is documented as chronic or a sequela: no acute injury of it
    if slipped and any(f.modifiers & {"acquired", "congenital"} and not f.modifiers & {"traumatic", "acute"}
                       for f in oaa_slips):
        return None  # documented as degenerative or congenital: an injury elsewhere is not its cause
    # The slip itself is the injury: said to be traumatic (or acute, in an encounter for an injury),
    # or linked by the note to the trauma or fracture that caused it ("C1-C2 subluxation from the
    # MVC"). A slip with no word of its own beside a fall today is not made acute by the fall.
    slipped = [f for f in slipped if f.modifiers & {"traumatic", "acute"} or
               any(kind in _INJURIES for kind, _ in f.linked)]
    if trauma and slipped:
        code, stem, description = _joint(ctx, slipped)
        return TraumaticSlip(code, None if code else stem, code is None, tuple(slipped[:2] + trauma[:1]),
                             description, cord)
    return None


def sequela_slip(facts: Findings, ctx: RuleContext) -> tuple[str, str, list[Finding]] | None:
    """A C0-C2 slip documented as the residual of an old injury (a sequela, or post-traumatic and
    chronic): guideline I.B.10 codes the residual condition (M43.11) first and the injury with the
    7th character S after it. (code, description, evidence), or None."""
    injuries = {(f.evidence.reference, f.evidence.text) for f in facts.of("trauma", "affirmed", "historical")}
    candidates = in_region(slips(facts), OAA) + [f for f in facts.of("dislocation", "affirmed", "historical")
                                                 if f.region == OAA]
    # The slip's own words make it an injury's residual: "sequela"/"late effect" of an injury named
    # with it, or post-traumatic and chronic. A postoperative "residual 1 mm slip" is no sequela.
    residual = [f for f in candidates if "congenital" not in f.modifiers and (
        ("sequela" in f.modifiers and ("traumatic" in f.modifiers
                                       or (f.evidence.reference, f.evidence.text) in injuries))
        or ("traumatic" in f.modifiers and f.modifiers & {"chronic", "old"}))]
    if not residual or traumatic_slip(facts, ctx) is not None:
        return None
    old_fractures = [f for f in facts.of("fracture", "affirmed", "historical") if f.region == OAA and not _acute(f)]
    if old_fractures:
        code, _category, _detail, description, _ = _fracture(ctx, old_fractures, seventh="S")
        if code:
            return code, description, residual + old_fractures
    code, _stem, description = _joint(ctx, residual, seventh="S")
    return (code, description, residual) if code else None


def congenital_slip(facts: Findings) -> list[Finding]:
    """Affirmed slips said to be congenital themselves: the modifier belongs to the slip ("acquired
    C1-C2 slip above a congenital C2-3 fusion" is an acquired slip)."""
    return [f for f in slips(facts) if "congenital" in f.modifiers and "acquired" not in f.modifiers]


def acquired_slip(facts: Findings) -> list[Finding]:
    return [f for f in slips(facts) if "acquired" in f.modifiers] or facts.of("acquired")


def _acute_s_code(facts: Findings):
    """Conditions coded with an initial-encounter S12.0-/S12.1-/S13.11-/S13.12- (the acute injury)."""
    return [c for c in facts.coded_with("S12.0", "S12.1", "S13.11", "S13.12") if c.code[-1] in "AB"]


# ------------------------------------------------------------------- the rules
@rule("SPL-SPECIFICITY")
def spl_specificity(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43(facts):
        return []
    region = slip_region(facts)
    if region is None:
        return []
    evidence = in_region(slips(facts), region) if region != "multiple" else [f for f in slips(facts) if f.specific]
    # With Q76.2 coded for a congenital slip at another region, the M43.1- code's own region is right.
    conditions = [c for c in _m43(facts) if not (facts.coded_with("Q76.2") and _unrelated_to_q76(facts, c))]
    if region == MULTIPLE:
        return _multiple_regions(facts, ctx, conditions)
    return specificity_cards("SPL-SPECIFICITY", facts, ctx, conditions, f"M43.1{REGION_DIGIT[region]}", evidence,
                             region=REGION_LABEL[region], level=evidence[0].level if evidence else region)


def _multiple_regions(facts: Findings, ctx: RuleContext, conditions) -> list[Card]:
    """Slips documented in several regions. A Condition already coded for one of them is right (a
    C4-C5 slip coded M43.12 beside a C1-C2 slip coded M43.10); the others take the one region no
    Condition covers yet, or M43.19 when several remain."""
    found = [f for f in slips(facts) if f.specific and f.region and f.region != MULTIPLE
             and ("congenital" not in f.modifiers or "acquired" in f.modifiers)]
    regions = {f.region for f in found}
    covered = {region_of_code(c.code) for c in conditions} & regions
    if not covered:  # no Condition names a documented region: one code for the several sites
        evidence = [f for f in slips(facts) if f.specific]
        return specificity_cards("SPL-SPECIFICITY", facts, ctx, conditions, f"M43.1{REGION_DIGIT[MULTIPLE]}",
                                 evidence, region=REGION_LABEL[MULTIPLE], level=evidence[0].level)
    remaining = regions - covered
    if not remaining:
        return []
    target_region = next(iter(remaining)) if len(remaining) == 1 and covered else MULTIPLE
    evidence = [f for f in found if f.region in remaining] if target_region != MULTIPLE else found
    cards = []
    for condition in conditions:
        if region_of_code(condition.code) in regions:
            continue
        cards += specificity_cards("SPL-SPECIFICITY", facts, ctx, [condition], f"M43.1{REGION_DIGIT[target_region]}",
                                   evidence, region=REGION_LABEL[target_region], level=evidence[0].level)
    return cards


@rule("SPL-GENERIC-LEVEL")
def spl_generic_level(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43(facts):
        return []
    found = slips(facts)
    if not found or documented_region(found) is not None:
        return []
    generic = [f for f in found if not f.specific and f.region == CERVICAL]
    if not generic:
        return []
    return [recode_card("SPL-GENERIC-LEVEL", facts, ctx, condition, "M43.12", evidence_of(generic),
                        recommended=False, missing=["region"], wording=generic[0].level)
            for condition in _m43(facts) if condition.code == "M43.11"]


@rule("SPL-TRAUMA")
def spl_trauma(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43_upper(facts):
        return []
    slip = traumatic_slip(facts, ctx)
    if slip is None:
        return _sequela(facts, ctx)
    if _acute_s_code(facts):
        return []  # the injury is coded: SPL-EXCLUDES says which of the two stays
    cards = []
    for condition in _m43_upper(facts):
        values = {"current": condition.code, "current_display": ctx.terminology.display(condition.code),
                  "description": slip.description, "cord_injury": slip.cord_injury}
        if slip.code:
            values.update(proposed=slip.code, proposed_display=ctx.terminology.display(slip.code))
            cards.append(Card(
                rule="SPL-TRAUMA", values=values, current_codes=[condition.code], proposed_codes=[slip.code],
                missing_documentation=["fracture-detail"] if slip.needs_detail else [],
                evidence=evidence_of(list(slip.evidence)),
                suggestions=[Suggestion("recode", [recode_condition(facts, condition.reference, slip.code,
                                                                    ctx.terminology)], is_recommended=True)],
                subject=condition.reference,
            ))
        else:
            values.update(category=slip.category, category_display=ctx.terminology.display(slip.category)
                          if ctx.terminology.exists(slip.category) else slip.category)
            cards.append(Card(
                rule="SPL-TRAUMA", variant="undetermined", values=values, current_codes=[condition.code],
                proposed_codes=[slip.category], missing_documentation=["fracture-detail"],
                evidence=evidence_of(list(slip.evidence)), subject=condition.reference,
            ))
    return cards


def _sequela(facts: Findings, ctx: RuleContext) -> list[Card]:
    """Guideline I.B.10: the residual condition (the slip, M43.11) is sequenced first, the injury
    that caused it follows with the 7th character S; the slip's code stays."""
    found = sequela_slip(facts, ctx)
    if found is None:
        return []
    code, description, evidence = found
    if any(c.code.endswith("S") for c in facts.coded_with(code[:5], firm=False)):
        return []  # an injury code for the sequela is coded
    m43_11 = [c for c in _m43_upper(facts) if c.code == "M43.11"]
    if not m43_11:
        return []  # the slip's own code is SPL-SPECIFICITY's to fix first
    condition = m43_11[0]
    return [Card(
        rule="SPL-TRAUMA", variant="sequela",
        values={"current": condition.code, "current_display": ctx.terminology.display(condition.code),
                "description": description, "proposed": code, "proposed_display": ctx.terminology.display(code)},
        current_codes=[condition.code], proposed_codes=[code], evidence=evidence_of(evidence),
        suggestions=[Suggestion("add_sequela", [new_condition(facts, code, ctx.terminology)], is_recommended=True)],
        subject=condition.reference, premise=condition.code,
    )]


@rule("SPL-CONGENITAL")
def spl_congenital(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43(facts):
        return []
    found = congenital_slip(facts)
    if not found or facts.coded_with("Q76.2"):
        return []
    return [recode_card("SPL-CONGENITAL", facts, ctx, c, "Q76.2", evidence_of(found)) for c in _m43(facts)]


def _imaging_confirms_slip(facts: Findings) -> bool:
    imaging = ("ct-cervical", "mri-cervical", "flexion-extension", "xr-cervical")
    reports = {s.reference for s in facts.studies_of(*imaging)}
    if any(f.evidence.reference in reports for f in slips(facts)):
        return True
    imaging_sentences = {(f.evidence.reference, f.evidence.text) for f in facts.of("imaging")}
    return any(f.from_report or (f.evidence.reference, f.evidence.text) in imaging_sentences for f in slips(facts))


@rule("SPL-DOCS")
def spl_docs(facts: Findings, ctx: RuleContext) -> list[Card]:
    """M43.11 coded (or about to be: the slip is documented at C0-C2), and what supports it is missing."""
    if not _m43(facts, firm=False):
        return []
    region = slip_region(facts)
    coded = [c for c in _m43(facts, firm=False) if c.code == "M43.11"]
    proposed = region == OAA and bool(_m43(facts))
    if not (coded or proposed):
        return []
    if region is not None and region != OAA:
        return []  # the slip is documented elsewhere: nothing about C0-C2 to ask
    missing = []
    if region != OAA:
        missing.append("region")
    if facts.record.has("diagnosticReports") and not _imaging_confirms_slip(facts):
        missing.append("imaging")
    # An injury in the encounter documents the slip's etiology only when it is the slip's own (a
    # fall today beside a slip described in no words of its own leaves open whether it is
    # degenerative or traumatic).
    slip_injured = traumatic_slip(facts, ctx) is not None or any(
        "traumatic" in f.modifiers or any(kind in _INJURIES for kind, _ in f.linked) for f in slips(facts))
    if not (facts.of("acquired") or facts.of("congenital") or slip_injured
            or any(f.modifiers & {"acquired", "congenital"} for f in slips(facts))
            or (facts.of("trauma") and not slips(facts)) or sequela_slip(facts, ctx) is not None):
        missing.append("etiology")
    if not facts.documented("trauma"):
        missing.append("trauma-status")
    if not missing:
        return []
    condition = (coded or _m43(facts))[0]
    return [Card(
        rule="SPL-DOCS",
        values={"current": condition.code, "proposed_by_level": not coded},
        current_codes=[condition.code], missing_documentation=missing,
        evidence=evidence_of(slips(facts)) or [condition.evidence()],
        subject=condition.reference, premise="M43.11",
    )]


@rule("SPL-NEURO")
def spl_neuro(facts: Findings, ctx: RuleContext) -> list[Card]:
    m43_11 = [c for c in _m43(facts) if c.code == "M43.11"]
    if not m43_11:
        return []
    by_finding = {entry.finding: entry for entry in TABLES.neuro}
    cards = []
    for entry in TABLES.neuro:
        # G99.2 / G95.2- code the cord's complication of this slip: a compressed cord at another
        # level ("C5-C6: ... cord flattening") belongs to another condition.
        found = [f for f in facts.of(entry.finding) if f.region in (OAA, None)]
        if not found or facts.has_code(*entry.already):
            continue
        myelopathy = by_finding.get("myelopathy")
        if entry.finding == "cord-compression" and myelopathy and not facts.has_code(*myelopathy.already) \
                and [f for f in facts.of("myelopathy") if f.region in (OAA, None)]:
            continue  # one finding, one card: the myelopathy card covers the compressed cord
        cards.append(_additional(facts, ctx, entry.finding, entry.proposed, found, m43_11[0]))
    return cards


def _additional(facts: Findings, ctx: RuleContext, kind: str, code: str, found: list[Finding], basis) -> Card:
    return Card(
        rule="SPL-NEURO", variant=kind,
        values={"finding": kind, "proposed": code, "proposed_display": ctx.terminology.display(code)},
        current_codes=["M43.11"], proposed_codes=[code], evidence=evidence_of(found),
        suggestions=[Suggestion("add", [new_condition(facts, code, ctx.terminology)], is_recommended=True)],
        subject=basis.reference, premise="M43.11",
    )


def _unrelated_to_q76(facts: Findings, m43) -> bool:
    """The coded M43.1- slip and the Q76.2 are two conditions: the slip of the M43 code's region is
    acquired and not congenital, and a slip or a congenital finding is documented at another region
    ("L5 pars defects with L5-S1 spondylolisthesis" beside "degenerative C1 on C2")."""
    region = region_of_code(m43.code) or slip_region(facts)
    if region is None or region == MULTIPLE:
        return False
    here = in_region(slips(facts), region)
    if not here or any("congenital" in f.modifiers for f in here) or not any("acquired" in f.modifiers for f in here):
        return False
    elsewhere = [f for f in slips(facts) + facts.of("congenital") if f.specific and f.region not in (region, None)]
    return bool(elsewhere)


def _removals(conditions) -> list:
    return [remove_condition(c.reference, c.code) for c in conditions]


@rule("SPL-EXCLUDES")
def spl_excludes(facts: Findings, ctx: RuleContext) -> list[Card]:
    """One card per pair of distinct codes (150 Conditions coded M43.11 beside 150 coded Q76.2
    are one pair, not 22,500), whose suggestions remove every Condition of the code let go."""
    if not _m43(facts) or not (facts.coded_with("Q76.2") or _acute_s_code(facts)):
        return []
    cards = []
    congenital, acquired = congenital_slip(facts), acquired_slip(facts)
    q76 = facts.coded_with("Q76.2")
    by_code: dict[str, list] = {}
    for c in _m43(facts):
        by_code.setdefault(c.code, []).append(c)
    for code, m43s in by_code.items():
        m43 = m43s[0]
        if q76:
            other = q76[0]
            if _unrelated_to_q76(facts, m43):
                # A congenital condition at one level and an acquired slip at another are unrelated
                # conditions: guideline I.A.12.a lets both codes stand.
                cards.append(Card(rule="SPL-EXCLUDES", variant="unrelated", subject=m43.reference, keeps=True,
                                  suggestions=[Suggestion("keep_both", _removals(m43s) + _removals(q76))]))
            else:
                keep_congenital = bool(congenital) and not acquired
                keep_acquired = bool(acquired) and not congenital
                suggestions = []
                if not keep_acquired:
                    suggestions.append(Suggestion("keep_congenital", _removals(m43s),
                                                  {"removed": code, "kept": "Q76.2"}, is_recommended=keep_congenital))
                if not keep_congenital:
                    suggestions.append(Suggestion("keep_acquired", _removals(q76),
                                                  {"removed": "Q76.2", "kept": code}, is_recommended=keep_acquired))
                notes = [n.note for n in ctx.terminology.excludes1_between(code, "Q76.2")]
                cards.append(Card(
                    rule="SPL-EXCLUDES", values={"current": code, "other": "Q76.2", "notes": notes},
                    current_codes=[code, "Q76.2"], evidence=[m43.evidence(), other.evidence()]
                    + evidence_of(congenital or acquired, 2),
                    suggestions=suggestions, subject=m43.reference,
                ))
        if code in UPPER and _acute_s_code(facts) and slip_predates_injury(facts):
            # The injury coded beside a slip older than it: two conditions (I.A.12.a); M43.1's
            # Excludes1 is the acute traumatic slip, which this is not.
            cards.append(Card(rule="SPL-EXCLUDES", variant="unrelated", subject=m43.reference, keeps=True,
                              suggestions=[Suggestion("keep_both", _removals(m43s) + _removals(_acute_s_code(facts)))]))
        elif code in UPPER:
            acute_by_code: dict[str, list] = {}
            for acute in _acute_s_code(facts):
                acute_by_code.setdefault(acute.code, []).append(acute)
            for acute_code, acutes in acute_by_code.items():
                cards.append(Card(
                    rule="SPL-EXCLUDES", variant="acute-injury",
                    values={"current": code, "other": acute_code,
                            "other_display": ctx.terminology.display(acute_code), "notes": []},
                    current_codes=[code, acute_code], evidence=[m43.evidence(), acutes[0].evidence()],
                    suggestions=[Suggestion("keep_injury", _removals(m43s),
                                            {"removed": code, "kept": acute_code}, is_recommended=True)],
                    subject=m43.reference,
                ))
    return cards
