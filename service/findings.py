"""Step 3 of a hook call: findings, each with its evidence and its assertion.

From codes: the patient's Conditions (ICD-10-CM, SNOMED CT; status, category, encounter rank),
the studies of DiagnosticReports (LOINC/CPT), Procedures (CPT conservative care), and the draft
orders being signed with their reasons. From text: every finding of rules.md §2 in report
conclusions and attachments, notes, Condition and Procedure notes, with its spinal region read
from the level *in the same clause* as the finding, and its ConText assertion (affirmed,
negated, uncertain, historical; family findings are dropped: they are not the patient's).
"""
from __future__ import annotations

import bisect
import functools
import re
import tomllib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple
from datetime import date, datetime
from functools import cached_property

from .deadline import Deadline
from .nlp.concepts import KNOWLEDGE, ConceptLexicon, Target, lower_same_length
from .nlp.context import ContextLexicon
from .nlp.levels import MULTIPLE, LevelMention, find_levels
from .nlp.sentences import split_sentences
from .record import PatientRecord, TextSource
from .terminology import ICD10CM, Terminology

SNOMED = "http://snomed.info/sct"
NOT_CURRENT = {"inactive", "resolved", "remission"}
INVALID = {"entered-in-error", "refuted"}
SOFT = {"unconfirmed", "provisional", "differential"}
CANCELLED = {"entered-in-error", "cancelled", "revoked"}
ASSERTIONS = ("affirmed", "negated", "uncertain", "historical")

# Where a finding's level is looked for: its own clause first (clauses end at these words).
_CLAUSE_BREAK = re.compile(r";|,\s|\bwith(?:out)?\b|\bbut\b|\bwhile\b|\bwhereas\b|\band\s+(?=[a-z]+\s+(?:at|of)\b)",
                           re.IGNORECASE)
_WEEKS = re.compile(r"\b(\d{1,3})\s*(?:-|\s)?\s*(weeks?|wks?|months?|mos?)\b", re.IGNORECASE)


class Evidence(NamedTuple):
    """Where a finding was read: the resource, the element, the exact phrase, its assertion.

    (Named tuples rather than frozen dataclasses: a typical record makes hundreds of findings,
    and a frozen dataclass costs four times as much to build.)"""

    reference: str
    element: str
    text: str
    assertion: str = "affirmed"
    date: str | None = None

    def to_json(self) -> dict:
        return {"reference": self.reference, "element": self.element, "text": self.text,
                "assertion": self.assertion}


class Finding(NamedTuple):
    kind: str               # a finding of concepts.toml, e.g. "displacement"
    assertion: str          # affirmed | negated | uncertain | historical
    region: str | None      # region of the finding's own level (levels.REGIONS), None when unstated
    level: str | None       # the level as written ("C1 on C2"), None when unstated
    specific: bool          # a named level (C1-C2, odontoid), not a region word ("cervical")
    upper_cervical: bool    # described only as "upper/high cervical"
    phrase: str             # the words of the finding ("anterolisthesis")
    evidence: Evidence
    from_report: bool = False  # read in a DiagnosticReport (imaging, EMG)

    @property
    def affirmed(self) -> bool:
        return self.assertion == "affirmed"


@dataclass(frozen=True)
class CodedCondition:
    reference: str
    codes: tuple[str, ...]          # ICD-10-CM codes, normalised (M43.11)
    snomed: tuple[str, ...]
    text: str | None
    current: bool                   # not inactive/resolved; not refuted/entered-in-error
    firm: bool                      # current and confirmed (not unconfirmed/provisional/differential)
    category: str | None
    rank: int | None                # Encounter.diagnosis rank (or its order)
    date: str | None

    @property
    def code(self) -> str | None:
        return self.codes[0] if self.codes else None

    def evidence(self) -> Evidence:
        return Evidence(self.reference, "code", f"{self.code}{' ' + self.text if self.text else ''}",
                        "affirmed", self.date)


@dataclass(frozen=True)
class Study:
    """A DiagnosticReport or Procedure classified by its code (valuesets.toml)."""

    reference: str
    kind: str        # e.g. "mri-cervical", "flexion-extension", "electrodiagnostic", "conservative-care"
    status: str | None
    has_result: bool  # a conclusion or a readable report
    date: str | None
    weeks: float | None = None  # for care with a performed period


@dataclass(frozen=True)
class DraftOrder:
    reference: str
    cpt: tuple[str, ...]
    reason_codes: tuple[str, ...]        # ICD-10-CM reasons, from reasonCode and reasonReference
    reason_conditions: tuple[str, ...]   # Condition references in reasonReference


class ValueSets:
    def __init__(self, path=KNOWLEDGE / "valuesets.toml"):
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        self.systems = data["systems"]
        self.labels: dict[str, str] = {}
        self._by_code: dict[tuple[str, str], list[str]] = {}
        for family in ("studies", "procedures", "orders"):
            for name, spec in data[family].items():
                self.labels[name] = spec["label"]
                for system_key in ("loinc", "cpt"):
                    for code in spec.get(system_key, []):
                        self._by_code.setdefault((self.systems[system_key], code), []).append(name)
        self.snomed_findings: dict[str, str] = data["snomed_findings"]

    def kinds(self, system: str | None, code: str | None) -> list[str]:
        return self._by_code.get((system or "", code or ""), [])

    def members(self, name: str) -> set[str]:
        return {code for (system, code), names in self._by_code.items() if name in names}


class TextReader:
    """Lexicons loaded once; `read` turns one text into findings.

    Two caches keep repeated text cheap (EHRs send the same record at order-select, order-sign
    and encounter-sign; notes repeat boilerplate sentences): findings per text source, keyed by
    its content and place, and the analysis of each sentence, keyed by the sentence. Both are
    bounded LRU caches in process memory; nothing is written anywhere.
    """

    def __init__(self, source_cache: int = 1024, sentence_cache: int = 20_000):
        self.concepts = ConceptLexicon()
        self.context = ContextLexicon()
        self._sources: OrderedDict[tuple, tuple] = OrderedDict()
        self._source_cache = source_cache
        self._sentences: OrderedDict[str, tuple] = OrderedDict()
        self._sentence_cache = sentence_cache

    def read(self, source: TextSource, from_report: bool = False) -> tuple[Finding, ...]:
        return tuple(self.read_all([(source, from_report)]))

    def read_all(self, sources: list[tuple[TextSource, bool]], deadline: Deadline | None = None) -> list[Finding]:
        """The findings of all the texts of a record. Texts read before come from the cache; the
        others are joined into one string (a blank line apart, so no sentence crosses from one to
        the next) and read in one pass: per-text overheads were a fifth of the reading cost."""
        results: dict[int, tuple] = {}
        misses = []
        for n, key in enumerate(sources):
            cached = _lru_get(self._sources, key)
            if cached is None:
                misses.append(n)
            else:
                results[n] = cached
        if misses:
            read = self._read_joined([sources[n] for n in misses], deadline)
            for n, found in zip(misses, read):
                results[n] = found
                _lru_put(self._sources, sources[n], found, self._source_cache)
        return [f for n in range(len(sources)) for f in results[n]]

    def _read_joined(self, sources: list[tuple[TextSource, bool]], deadline) -> list[tuple[Finding, ...]]:
        offsets, parts, position = [], [], 0
        for source, _ in sources:
            offsets.append(position)
            parts.append(source.text)
            position += len(source.text) + 2
        text = "\n\n".join(parts)
        found: list[list[Finding]] = [[] for _ in sources]
        lowered = lower_same_length(text)
        candidates = self.concepts.candidates(text, lowered)
        if not candidates:
            return [()] * len(sources)
        spans = split_sentences(text)
        matches = self.concepts.matches_in(text, lowered, candidates, spans)
        starts = [s for s, _ in spans]
        by_sentence: dict[int, list[Target]] = {}
        for match in matches:
            i = bisect.bisect_right(starts, match.start) - 1
            if i >= 0 and match.end <= spans[i][1]:  # a match across a sentence end is no target
                by_sentence.setdefault(i, []).append(match)
        for count, i in enumerate(sorted(by_sentence)):
            if deadline is not None and count % 32 == 0:
                deadline.check()
            start, end = spans[i]
            sentence = text[start:end]
            analysed = self._analyse(sentence, [Target(t.finding, t.start - start, t.end - start, t.text)
                                                for t in by_sentence[i]])
            if not analysed:
                continue
            part = bisect.bisect_right(offsets, start) - 1
            source, from_report = sources[part]
            evidence = {a: Evidence(source.reference, source.element, sentence, a, source.date)
                        for a in {item[1] for item in analysed}}
            for kind, assertion, region, level, specific, upper, phrase in analysed:
                found[part].append(Finding(kind, assertion, region, level, specific, upper, phrase,
                                           evidence[assertion], from_report))
        return [tuple(f) for f in found]

    def _analyse(self, sentence: str, matches: list[Target]) -> tuple:
        """The sentence's findings, from the cache when this sentence was read before. The cache is
        keyed by the sentence alone: its `matches` were found in it, so they follow from it."""
        cached = _lru_get(self._sentences, sentence)
        if cached is not None:
            return cached
        analysed = self._analyse_sentence(sentence, matches)
        _lru_put(self._sentences, sentence, analysed, self._sentence_cache)
        return analysed

    def _analyse_sentence(self, sentence: str, matches: list[Target] | None = None) -> tuple:
        """(kind, assertion, region, level, specific, upper, phrase) of each finding of a sentence."""
        if matches is None:
            targets = self.concepts.targets(sentence)
        else:
            targets = [t for t in matches if self.concepts.concepts[t.finding].accepts(t.text, sentence)]
        if not targets:
            return ()
        targets = _drop_nested(targets)
        assertions = self.context.assertions(sentence, targets)
        leveled = any(self.concepts.concepts[t.finding].level_from != "none" for t in targets)
        levels = _levels_by_target(sentence, targets, find_levels(sentence), self.concepts) if leveled else {}
        out = []
        for target, assertion in zip(targets, assertions):
            if assertion == "family":
                continue
            concept = self.concepts.concepts[target.finding]
            region, level, specific, upper = _level_of(levels.get(target, ()), concept.level_from)
            out.append((target.finding, assertion, region, level, specific, upper, target.text))
        return tuple(out)


def _lru_get(cache: OrderedDict, key):
    value = cache.get(key)
    if value is not None:
        try:
            cache.move_to_end(key)
        except KeyError:  # evicted meanwhile by another thread (development server)
            pass
    return value


def _lru_put(cache: OrderedDict, key, value, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        try:
            cache.popitem(last=False)
        except KeyError:
            pass


def _drop_nested(targets: list[Target]) -> list[Target]:
    """Of two targets of the same finding, the longer wins; a target inside another kind's
    longer phrase yields to it ("without radiation" is axial pain, not a radicular sign)."""
    kept: list[Target] = []
    for t in sorted(targets, key=lambda t: (-(t.end - t.start), t.start)):
        if any(k.start <= t.start and t.end <= k.end and (k.finding == t.finding or (k.end - k.start) > (t.end - t.start))
               for k in kept):
            continue
        kept.append(t)
    return sorted(kept, key=lambda t: t.start)


def _levels_by_target(sentence: str, targets: list[Target], levels: list[LevelMention],
                      concepts: ConceptLexicon) -> dict[Target, list[LevelMention]]:
    """Each level mention goes to the nearest finding of its clause that has a level of its own:
    in "anterolisthesis of L4 on L5 and C5-C6 disc bulge" the slip is lumbar, the disc cervical.
    A finding with no mention in its clause takes a specific level within 40 characters."""
    leveled = [t for t in targets if concepts.concepts[t.finding].level_from != "none"]
    clauses = {t: _clause_around(sentence, t) for t in leveled}
    owned: dict[Target, list[LevelMention]] = {t: [] for t in leveled}
    for mention in levels:
        candidates = [t for t in leveled if clauses[t][0] <= mention.start and mention.end <= clauses[t][1]]
        if candidates:
            nearest = min(candidates, key=lambda t: _distance(t, mention))
            owned[nearest].append(mention)
    for target in leveled:
        if not owned[target]:
            nearby = [m for m in levels if m.specific and _distance(target, m) <= 40]
            owned[target] = sorted(nearby, key=lambda m: _distance(target, m))[:1]
    return owned


def _distance(target: Target, mention: LevelMention) -> int:
    return max(0, mention.start - target.end, target.start - mention.end)


def _level_of(mentions: list[LevelMention], level_from: str):
    """(region, level text, specific, upper_cervical) of a finding from the level mentions it owns."""
    if level_from == "none" or not mentions:
        return None, None, False, False
    chosen = [m for m in mentions if m.specific] or list(mentions)
    region_of = (lambda m: m.root_region) if level_from == "root" else (lambda m: m.segment_region)
    regions = {region_of(m) for m in chosen}
    region = regions.pop() if len(regions) == 1 else MULTIPLE
    specific = any(m.specific for m in chosen)
    upper = not specific and any(m.upper_cervical for m in chosen)
    return region, ", ".join(m.text for m in chosen), specific, upper


def _clause_around(sentence: str, target: Target) -> tuple[int, int]:
    start, end = 0, len(sentence)
    for m in _CLAUSE_BREAK.finditer(sentence):
        if m.end() <= target.start:
            start = m.end()
        elif m.start() >= target.end:
            end = m.start()
            break
    return start, end


# --------------------------------------------------------------------- the facts
@dataclass
class Findings:
    """Everything the rules read about one patient, built once per hook call."""

    record: PatientRecord
    conditions: list[CodedCondition] = field(default_factory=list)
    coded: list[Finding] = field(default_factory=list)  # findings read from SNOMED CT codes
    studies: list[Study] = field(default_factory=list)
    orders: list[DraftOrder] = field(default_factory=list)
    read_text: object = None  # () -> list[Finding]: the text is read when a rule first asks

    @cached_property
    def text(self) -> list[Finding]:
        """Findings of codes and text. Reading the text is most of a hook call's cost, and a record
        without a spine code or order never needs it: the rules ask for it only after their codes."""
        return self.coded + (self.read_text() if self.read_text else [])

    # Queries the rules share.
    def current(self, firm: bool = True) -> list[CodedCondition]:
        return self._current_firm if firm else self._current_all

    @cached_property
    def _current_firm(self) -> list[CodedCondition]:
        return [c for c in self.conditions if c.current and c.firm and c.code]

    @cached_property
    def _current_all(self) -> list[CodedCondition]:
        return [c for c in self.conditions if c.current and c.code]

    def coded_with(self, *prefixes: str, firm: bool = True) -> list[CodedCondition]:
        """Current Conditions whose ICD-10-CM code is, or falls under, one of the prefixes."""
        bare = _bare(prefixes)
        return [c for c in self.current(firm) if c.code.replace(".", "").startswith(bare)]

    def has_code(self, *prefixes: str) -> bool:
        return bool(self.coded_with(*prefixes, firm=False))

    def of(self, kind: str, *assertions: str) -> list[Finding]:
        wanted = assertions or ("affirmed",)
        return [f for f in self.text if f.kind == kind and f.assertion in wanted]

    def documented(self, kind: str) -> bool:
        """Present, or stated absent: the record speaks of it either way."""
        return bool(self.of(kind, "affirmed", "negated", "historical"))

    def studies_of(self, *kinds: str) -> list[Study]:
        return [s for s in self.studies if s.kind in kinds and s.status not in CANCELLED]



@functools.lru_cache(maxsize=1024)
def _bare(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.replace(".", "") for p in prefixes)


def gather_findings(record: PatientRecord, reader: TextReader, value_sets: ValueSets,
                    terminology: Terminology, deadline: Deadline | None = None) -> Findings:
    findings = Findings(record)
    ranks = _encounter_ranks(record)
    for condition in record.conditions:
        findings.conditions.append(_coded_condition(condition, ranks, terminology))
        for coding in (condition.code.coding if condition.code else None) or []:
            kind = value_sets.snomed_findings.get(coding.code) if coding.system == SNOMED else None
            if kind and findings.conditions[-1].current:
                ref = f"Condition/{condition.id}"
                text = coding.display or (condition.code.text or kind)
                findings.coded.append(Finding(kind, "affirmed", None, None, False, False, text,
                                              Evidence(ref, "code", text, "affirmed")))
    report_refs = set()
    for report in record.diagnostic_reports:
        ref = f"DiagnosticReport/{report.id}"
        report_refs.add(ref)
        has_result = bool(report.conclusion) or any(t.reference == ref and t.element.startswith("presentedForm")
                                                     for t in record.texts)
        for kind in _kinds_of(report.code, value_sets):
            findings.studies.append(Study(ref, kind, report.status, has_result, _date(report, "effectiveDateTime")))
    for procedure in record.procedures:
        ref = f"Procedure/{procedure.id}"
        for kind in _kinds_of(procedure.code, value_sets):
            findings.studies.append(Study(ref, kind, procedure.status, True, _date(procedure, "performedDateTime"),
                                          _period_weeks(procedure.performedPeriod)))
    for order in record.draft_orders:
        findings.orders.append(_draft_order(order, record, terminology))

    def read_text() -> list[Finding]:
        labels = _code_labels(record, terminology)
        sources = []
        for source in record.texts:
            if source.element == "code.text" and source.text.strip().lower() in labels.get(source.reference, ()):
                continue  # a label that only repeats its code's display documents nothing beyond the code
            if source.reference.startswith("ServiceRequest/"):
                continue  # an order's reason is the claim being checked, not evidence for it
            sources.append((source, source.reference in report_refs))
        if deadline is not None:
            deadline.check()
        return reader.read_all(sources, deadline)

    findings.read_text = read_text
    return findings


def _code_labels(record: PatientRecord, terminology: Terminology) -> dict[str, set[str]]:
    """Per Condition, the displays of its codings (as sent, and the tabular's)."""
    labels: dict[str, set[str]] = {}
    for condition in record.conditions:
        names = set()
        for c in (condition.code.coding if condition.code else None) or []:
            if c.display:
                names.add(c.display.strip().lower())
            if c.system == ICD10CM and c.code and terminology.exists(terminology.normalise(c.code)):
                names.add(terminology.display(terminology.normalise(c.code)).lower())
        labels[f"Condition/{condition.id}"] = names
    return labels


def _kinds_of(concept, value_sets: ValueSets) -> list[str]:
    kinds: list[str] = []
    for coding in (concept.coding if concept else None) or []:
        for kind in value_sets.kinds(coding.system, coding.code):
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def _icd_codes(concept, terminology: Terminology) -> tuple[str, ...]:
    return tuple(terminology.normalise(c.code) for c in (concept.coding if concept else None) or []
                 if c.system == ICD10CM and c.code)


def _coded_condition(condition, ranks: dict[str, int], terminology: Terminology) -> CodedCondition:
    clinical = _status(condition.clinicalStatus)
    verification = _status(condition.verificationStatus)
    current = clinical not in NOT_CURRENT and verification not in INVALID
    categories = [c.code for cat in condition.category or [] for c in cat.coding or []]
    ref = f"Condition/{condition.id}"
    return CodedCondition(
        reference=ref,
        codes=_icd_codes(condition.code, terminology),
        snomed=tuple(c.code for c in (condition.code.coding if condition.code else None) or [] if c.system == SNOMED),
        text=condition.code.text if condition.code else None,
        current=current,
        firm=current and verification not in SOFT,
        category=categories[0] if categories else None,
        rank=ranks.get(ref),
        date=_date(condition, "recordedDate") or _date(condition, "onsetDateTime"),
    )


def _status(concept) -> str | None:
    for coding in (concept.coding if concept else None) or []:
        return coding.code
    return None


def _encounter_ranks(record: PatientRecord) -> dict[str, int]:
    ranks: dict[str, int] = {}
    encounter = record.encounter
    for n, diagnosis in enumerate((encounter.diagnosis if encounter else None) or []):
        reference = diagnosis.condition.reference if diagnosis.condition else None
        if reference:
            key = "Condition/" + reference.rsplit("Condition/", 1)[-1]
            ranks[key] = diagnosis.rank if diagnosis.rank is not None else n + 1
    return ranks


def _draft_order(order, record: PatientRecord, terminology: Terminology) -> DraftOrder:
    cpt = tuple(c.code for c in (order.code.coding if order.code else None) or [] if c.code)
    reasons: list[str] = []
    for concept in order.reasonCode or []:
        reasons.extend(_icd_codes(concept, terminology))
    conditions = []
    by_ref = {f"Condition/{c.id}": c for c in record.conditions}
    for reference in order.reasonReference or []:
        ref = reference.reference or ""
        key = "Condition/" + ref.rsplit("Condition/", 1)[-1] if "Condition/" in ref else ref
        conditions.append(key)
        if key in by_ref:
            reasons.extend(c for c in _icd_codes(by_ref[key].code, terminology) if c not in reasons)
    return DraftOrder(f"ServiceRequest/{order.id}", cpt, tuple(dict.fromkeys(reasons)), tuple(conditions))


def _date(resource, attribute: str) -> str | None:
    value = getattr(resource, attribute, None)
    if isinstance(value, (datetime, date)):
        return value.isoformat()[:10]
    return str(value)[:10] if value else None


def _period_weeks(period) -> float | None:
    if period is None or period.start is None or period.end is None:
        return None
    start, end = period.start, period.end
    start = start.date() if isinstance(start, datetime) else start
    end = end.date() if isinstance(end, datetime) else end
    try:
        return (end - start).days / 7.0
    except TypeError:
        return None


def weeks_in(text: str) -> float | None:
    """The longest duration written in a phrase ("12 weeks", "3 months"), in weeks."""
    best = None
    for number, unit in _WEEKS.findall(text):
        weeks = float(number) * (4.345 if unit.lower().startswith("mo") else 1.0)
        best = weeks if best is None else max(best, weeks)
    return best
