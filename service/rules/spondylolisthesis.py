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
from ..nlp.levels import CERVICAL, OAA
from . import RuleContext, rule
from .common import (REGION_DIGIT, REGION_LABEL, documented_region, evidence_of, in_region, new_condition,
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


def _vertebra_of(fracture: Finding) -> str | None:
    """C1 or C2 from the fracture's own level and words (None when they do not say, or say both)."""
    own = f"{fracture.level or ''} {fracture.phrase}"
    c1, c2 = bool(_C1.search(own)), bool(_C2.search(own))
    return "C1" if c1 and not c2 else "C2" if c2 and not c1 else None


def _seventh(facts: Findings, fracture: bool, text: str) -> str:
    """The 7th character from what the injury's own sentences say (`text`), not from any sentence
    of the chart: a plan's "follow-up visit in two weeks" says nothing about the fracture's care."""
    lowered = text.lower()
    if "sequela" in lowered or "late effect" in lowered:
        return "S"
    if re.search(r"subsequent encounter|routine healing|follow-?up (?:visit )?(?:of|for)|healing well|interval healing",
                 lowered):
        return "D"
    if fracture and re.search(r"\bopen\s+fracture\b", text, re.IGNORECASE):
        return "B"
    return "A"


def _complete(ctx: RuleContext, stem: str, seventh: str) -> str | None:
    return ctx.terminology.with_seventh(stem, seventh)


NOT_ACUTE = frozenset({"chronic", "old", "sequela"})


def _acute(finding: Finding) -> bool:
    """Not said to be chronic, old, healed or a sequela (the modifiers that belong to the finding)."""
    return not (finding.modifiers & NOT_ACUTE) or "acute" in finding.modifiers


def traumatic_slip(facts: Findings, ctx: RuleContext) -> TraumaticSlip | None:
    """Once per hook call (four rules ask)."""
    if "traumatic_slip" not in facts.memo:
        facts.memo["traumatic_slip"] = _traumatic_slip(facts, ctx)
    return facts.memo["traumatic_slip"]


def _traumatic_slip(facts: Findings, ctx: RuleContext) -> TraumaticSlip | None:
    """An acute traumatic slip or fracture at C0-C2, and the code the tabular sends it to.

    The acuity belongs to the slip or fracture itself: a fracture said to be old or healed, or a
    slip documented as chronic or as the sequela of an old injury, is not acute whatever else
    the encounter says about an injury."""
    fractures = [f for f in facts.of("fracture") if f.region == OAA and _acute(f)]
    trauma = [f for f in facts.of("trauma") if not (f.modifiers & NOT_ACUTE)]
    cord = bool(facts.of("cord-compression") or facts.of("myelopathy")) and bool(trauma or fractures)
    if fractures:
        # Which vertebra is broken is read from each fracture's own level and words, not from
        # everything its sentences mention ("C1: fracture of the atlas; the dens is intact").
        by_vertebra = {"C1": [], "C2": [], None: []}
        for f in fractures:
            by_vertebra[_vertebra_of(f)].append(f)
        if by_vertebra["C1"] and not by_vertebra["C2"]:
            fractures = by_vertebra["C1"] + by_vertebra[None]
        elif by_vertebra["C2"] and not by_vertebra["C1"]:
            fractures = by_vertebra["C2"] + by_vertebra[None]
        text = sentences_of(fractures)
        lowered = text.lower()
        displaced = "nondisplaced" not in lowered and "non-displaced" not in lowered
        seventh = _seventh(facts, True, text)
        on_c2, on_c1 = bool(by_vertebra["C2"]), bool(by_vertebra["C1"])
        if not (on_c1 or on_c2):
            on_c2, on_c1 = bool(_C2.search(text)), bool(_C1.search(text))
        stem, category, detail = None, None, False
        if on_c2 and (re.search(r"hangman|traumatic\s+spondylolisthesis", lowered)):
            stem = "S12.14" if re.search(r"type\s*(?:iii|3)\b", lowered) else ("S12.130" if displaced else "S12.131")
            description = "traumatic spondylolisthesis of C2"
        elif on_c2 and re.search(r"\b(?:dens|odontoid)\b", lowered):
            description = "dens fracture"
            if re.search(r"type\s*(?:ii|2)\b", lowered):
                if not displaced:
                    stem = "S12.112"
                elif "anterior" in lowered:
                    stem = "S12.110"
                elif "posterior" in lowered:
                    stem = "S12.111"
                else:
                    category, detail = "S12.11", True
            elif re.search(r"type\s*(?:i|iii|1|3)\b", lowered):
                stem = "S12.120" if displaced else "S12.121"
            else:
                stem, detail = ("S12.100" if displaced else "S12.101"), True
        elif on_c2 and not on_c1:
            stem, detail, description = ("S12.100" if displaced else "S12.101"), True, "fracture of C2"
        elif on_c1 and not on_c2:
            description = "fracture of C1"
            if re.search(r"jefferson|unstable\s+burst", lowered):
                stem = "S12.02"
            elif re.search(r"stable\s+burst", lowered):
                stem = "S12.01"
            elif "posterior arch" in lowered:
                stem = "S12.030" if displaced else "S12.031"
            elif "lateral mass" in lowered:
                stem = "S12.040" if displaced else "S12.041"
            else:
                stem, detail = ("S12.000" if displaced else "S12.001"), True
        else:
            category, detail, description = "S12", True, "fracture at C0-C2"
        code = _complete(ctx, stem, seventh) if stem else None
        if stem and code is None:
            category, detail = stem, True
        return TraumaticSlip(code, category if code is None else None, detail,
                             tuple(fractures + trauma[:1]), description, cord)
    slipped = [f for f in in_region(slips(facts), OAA) + [f for f in facts.of("dislocation") if f.region == OAA]
               if _acute(f)]
    oaa_slips = in_region(slips(facts), OAA)
    if slipped and any(f.modifiers & NOT_ACUTE for f in oaa_slips):
        return None  # the slip is documented as chronic or a sequela: no acute injury of it
    if slipped and any(f.modifiers & {"acquired", "congenital"} and not f.modifiers & {"traumatic", "acute"}
                       for f in oaa_slips):
        return None  # documented as degenerative or congenital: an injury elsewhere is not its cause
    if trauma and slipped:
        text = sentences_of(slipped)
        dislocated = bool(re.search(r"\bdislocat", text, re.IGNORECASE))
        joint = "S13.11" if _C0.search(text) else "S13.12"
        stem = joint + ("1" if dislocated else "0")
        code = _complete(ctx, stem, _seventh(facts, False, text))
        which = "C0/C1" if joint == "S13.11" else "C1/C2"
        return TraumaticSlip(code, None if code else stem, code is None, tuple(slipped[:2] + trauma[:1]),
                             f"traumatic {'dislocation' if dislocated else 'subluxation'} of {which}", cord)
    return None


def congenital_slip(facts: Findings) -> list[Finding]:
    """Affirmed slips said to be congenital themselves: the modifier belongs to the slip ("acquired
    C1-C2 slip above a congenital C2-3 fusion" is an acquired slip)."""
    return [f for f in slips(facts) if "congenital" in f.modifiers and "acquired" not in f.modifiers]


def acquired_slip(facts: Findings) -> list[Finding]:
    return [f for f in slips(facts) if "acquired" in f.modifiers] or facts.of("acquired")


def _acute_s_code(facts: Findings):
    """Conditions coded with an initial-encounter S12.0-/S12.1-/S13.11-/S13.12- (the acute injury)."""
    return [c for c in facts.coded_with("S12.0", "S12.1", "S13.11", "S13.12") if c.code[-1] in "AB"]


def _changes_code(facts: Findings, ctx: RuleContext) -> bool:
    """The slip's code will change for trauma or congenital origin: other M43 cards stay silent."""
    return traumatic_slip(facts, ctx) is not None or bool(congenital_slip(facts)) \
        or bool(facts.coded_with("Q76.2")) or bool(_acute_s_code(facts))


# ------------------------------------------------------------------- the rules
@rule("SPL-SPECIFICITY")
def spl_specificity(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43(facts):
        return []
    region = slip_region(facts)
    if region is None or _changes_code(facts, ctx):
        return []
    evidence = in_region(slips(facts), region) if region != "multiple" else [f for f in slips(facts) if f.specific]
    return specificity_cards("SPL-SPECIFICITY", facts, ctx, _m43(facts), f"M43.1{REGION_DIGIT[region]}", evidence,
                             region=REGION_LABEL[region], level=evidence[0].level if evidence else region)


@rule("SPL-GENERIC-LEVEL")
def spl_generic_level(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43(facts):
        return []
    found = slips(facts)
    if not found or documented_region(found) is not None or _changes_code(facts, ctx):
        return []
    generic = [f for f in found if not f.specific and f.region == CERVICAL]
    if not generic:
        return []
    cards = []
    for condition in _m43(facts):
        if condition.code != "M43.11":
            continue
        cards.append(recode_card("SPL-GENERIC-LEVEL", facts, ctx, condition, "M43.12", evidence_of(generic),
                                 recommended=False, missing=["region"], wording=generic[0].level))
    return cards


@rule("SPL-TRAUMA")
def spl_trauma(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43_upper(facts):
        return []
    slip = traumatic_slip(facts, ctx)
    if slip is None or _acute_s_code(facts):
        return []
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
            ))
        else:
            values.update(category=slip.category, category_display=ctx.terminology.display(slip.category)
                          if ctx.terminology.exists(slip.category) else slip.category)
            cards.append(Card(
                rule="SPL-TRAUMA", variant="undetermined", values=values, current_codes=[condition.code],
                proposed_codes=[slip.category], missing_documentation=["fracture-detail"],
                evidence=evidence_of(list(slip.evidence)),
            ))
    return cards


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
    if not (coded or proposed) or _changes_code(facts, ctx):
        return []
    if region is not None and region != OAA:
        return []  # the slip is documented elsewhere: SPL-SPECIFICITY proposes that region's code
    generic_only = bool(slips(facts)) and documented_region(slips(facts)) is None
    if generic_only and any(c.code == "M43.11" for c in _m43(facts)):
        return []  # SPL-GENERIC-LEVEL asks for the level
    missing = []
    if region != OAA:
        missing.append("region")
    if facts.record.has("diagnosticReports") and not _imaging_confirms_slip(facts):
        missing.append("imaging")
    if not (facts.of("acquired") or facts.of("congenital") or facts.of("trauma")):
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
    )]


_NEURO = (
    # (finding, codes that already say it, proposed code)
    ("myelopathy", ("G99.2", "M47.1", "M50.0", "M43.3", "G95.9"), "G99.2"),
    ("cord-compression", ("G95.2",), "G95.20"),
)


@rule("SPL-NEURO")
def spl_neuro(facts: Findings, ctx: RuleContext) -> list[Card]:
    m43_11 = [c for c in _m43(facts) if c.code == "M43.11"]
    if not m43_11 or _changes_code(facts, ctx):
        return []
    cards = []
    for kind, already, proposed in _NEURO:
        # G99.2 / G95.2- code the cord's complication of this slip: a compressed cord at another
        # level ("C5-C6: ... cord flattening") belongs to another condition.
        found = [f for f in facts.of(kind) if f.region in (OAA, None)]
        if not found or facts.has_code(*already):
            continue
        if kind == "cord-compression" and [f for f in facts.of("myelopathy") if f.region in (OAA, None)] \
                and not facts.has_code("G99.2"):
            continue  # one finding, one card: the myelopathy card covers the compressed cord
        cards.append(_additional(facts, ctx, kind, proposed, found))
    radiculopathy = [f for f in facts.of("radiculopathy") if f.region in (OAA, None)]
    if radiculopathy and not facts.has_code("M54.1", "M47.2", "M50.1"):
        cards.append(_additional(facts, ctx, "radiculopathy", "M54.11", radiculopathy))
    return cards


def _additional(facts: Findings, ctx: RuleContext, kind: str, code: str, found: list[Finding]) -> Card:
    return Card(
        rule="SPL-NEURO", variant=kind,
        values={"finding": kind, "proposed": code, "proposed_display": ctx.terminology.display(code)},
        current_codes=["M43.11"], proposed_codes=[code], evidence=evidence_of(found),
        suggestions=[Suggestion("add", [new_condition(facts, code, ctx.terminology)], is_recommended=True)],
    )


@rule("SPL-EXCLUDES")
def spl_excludes(facts: Findings, ctx: RuleContext) -> list[Card]:
    if not _m43(facts) or not (facts.coded_with("Q76.2") or _acute_s_code(facts)):
        return []
    cards = []
    for m43 in _m43(facts):
        for other in facts.coded_with("Q76.2"):
            congenital, acquired = congenital_slip(facts), acquired_slip(facts)
            keep_congenital = bool(congenital) and not acquired
            keep_acquired = bool(acquired) and not congenital
            suggestions = []
            if not keep_acquired:
                suggestions.append(Suggestion("keep_congenital", [remove_condition(m43.reference, m43.code)],
                                              {"removed": m43.code, "kept": "Q76.2"}, is_recommended=keep_congenital))
            if not keep_congenital:
                suggestions.append(Suggestion("keep_acquired", [remove_condition(other.reference, "Q76.2")],
                                              {"removed": "Q76.2", "kept": m43.code}, is_recommended=keep_acquired))
            notes = [n.note for n in ctx.terminology.excludes1_between(m43.code, "Q76.2")]
            cards.append(Card(
                rule="SPL-EXCLUDES", values={"current": m43.code, "other": "Q76.2", "notes": notes},
                current_codes=[m43.code, "Q76.2"], evidence=[m43.evidence(), other.evidence()]
                + evidence_of(congenital or acquired, 2),
                suggestions=suggestions,
            ))
        for acute in _acute_s_code(facts) if m43.code in UPPER else ():
            cards.append(Card(
                rule="SPL-EXCLUDES", variant="acute-injury",
                values={"current": m43.code, "other": acute.code, "other_display": ctx.terminology.display(acute.code),
                        "notes": []},
                current_codes=[m43.code, acute.code], evidence=[m43.evidence(), acute.evidence()],
                suggestions=[Suggestion("keep_injury", [remove_condition(m43.reference, m43.code)],
                                        {"removed": m43.code, "kept": acute.code}, is_recommended=True)],
            ))
    return cards
