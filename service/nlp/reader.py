"""A document in, its findings out: the reader the hook call uses.

Per text, in this order (one module each): words normalized (`spelling`: abbreviations,
misspellings), sections found (`sections`), sentences split across hard-wrapped lines
(`sentences`), each sentence given its section and, in a structured report, the level line it
belongs to ("C5-C6: ..."); then in each sentence the finding targets (`concepts`), their ConText
assertion (`context`) turned by the section (history, family, indication, differential), the level
of each finding (`levels`: its own clause, else its level line), and the modifiers and causes that
belong to it (`modifiers`).

Bounded cost: every step is linear in the text; the hook's deadline is checked inside the loops;
a text longer than `max_text_chars` is read up to that length, a sentence longer than
`max_sentence_chars` is cut at a clause break, and a record's texts past `max_record_chars` are
not read. Each cap reached is counted in `Reading.limits`, which the answer reports.
"""
from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from .concepts import ConceptLexicon, Target, lower_same_length
from .context import ContextLexicon
from .levels import MULTIPLE, LevelMention, find_levels
from .modifiers import ModifierLexicon, links
from .sections import NO_SECTION, SectionKind, SectionLexicon
from .sentences import LEVEL_LABEL, split
from ..caches import BoundedCache
from .spelling import SpellingLexicon

# Where a finding's level is looked for: its own clause first (clauses end at these words).
_CLAUSE_BREAK = re.compile(r";|,\s|\bwith(?:out)?\b|\bbut\b|\bwhile\b|\bwhereas\b|\band\s+(?=[a-z]+\s+(?:at|of)\b)|"
                           r"\band\s+(?=(?:the|there|a|an)\b)|\babove\b|\bbelow\b",
                           re.IGNORECASE)
ASSERTIONS = ("affirmed", "negated", "uncertain", "historical")
_BONE_INJURIES = frozenset({"fracture", "dislocation"})
_SECTION_EFFECT = {"historical": "historical", "uncertain": "uncertain"}
# A plan sentence about care that goes on, not care still to come.
_ONGOING = re.compile(r"\b(?:continue[sd]?|continuing|currently|ongoing|resume[sd]?|completed?|has\s+(?:had|done|tried)|"
                      r"tried|failed|s/p|status\s+post)\b", re.IGNORECASE)


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
        """The quote as one line (a hard-wrapped sentence is one sentence), with its date when known."""
        out = {"reference": self.reference, "element": self.element, "text": " ".join(self.text.split()),
               "assertion": self.assertion}
        if self.date:
            out["date"] = self.date
        return out


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
    modifiers: frozenset = frozenset()  # acute, chronic, old, sequela, traumatic, congenital, acquired
    linked: frozenset = frozenset()     # kinds of the findings the note names as its cause or effect
    section: str = "none"               # the kind of section it was read in
    prior: bool = False                 # read in a note of an earlier encounter
    # Uncertain by the Official Guidelines' uncertainty terms only ("likely C2 radiculopathy"), in
    # the text's own words (not by its section, a plan, or workup wording such as "rule out"): what
    # the inpatient convention codes as if established (Section II.H), the outpatient one not (IV.H).
    hedged: bool = False

    @property
    def affirmed(self) -> bool:
        return self.assertion == "affirmed"


class Source(NamedTuple):
    """One text to read: where it comes from and how much it counts (the evidence policy's)."""

    reference: str
    element: str
    text: str
    date: str | None
    from_report: bool
    prior: bool = False


@dataclass
class Reading:
    findings: list[Finding] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)  # cap name → times reached

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.limits[name] = self.limits.get(name, 0) + n


class TextReader:
    """Lexicons loaded once; `read_all` turns a record's texts into findings.

    Two bounded LRU caches keep repeated text cheap (EHRs send the same record at order-select,
    order-sign and encounter-sign; notes repeat boilerplate sentences): findings per source, keyed
    by its content and place, and the analysis of each sentence, keyed by the sentence, its
    section and its level line. Nothing is written anywhere."""

    def __init__(self, source_cache: int = 1024, sentence_cache: int = 20_000, max_text_chars: int = 200_000,
                 max_record_chars: int = 1_000_000, max_sentence_chars: int = 1_500,
                 source_cache_bytes: int = 32 << 20, sentence_cache_bytes: int = 32 << 20):
        self.concepts = ConceptLexicon()
        self.context = ContextLexicon()
        self.sections = SectionLexicon()
        self.spelling = SpellingLexicon()
        self.modifiers = ModifierLexicon()
        self.max_text_chars = max_text_chars
        self.max_record_chars = max_record_chars
        self.max_sentence_chars = max_sentence_chars
        # Bounded by entries and by bytes (an estimate of the findings' quoted text): a worker sent
        # hundreds of 5 MB notes keeps at most the budget, not every note.
        self._sources = BoundedCache(source_cache, source_cache_bytes)
        self._sentences = BoundedCache(sentence_cache, sentence_cache_bytes)

    # ------------------------------------------------------------------ a record
    def read_all(self, sources: list[Source], deadline=None) -> Reading:
        reading = Reading()
        budget = self.max_record_chars
        results: dict[int, tuple] = {}
        todo: list[tuple[int, Source, str, dict]] = []  # texts not read before: normalized first
        for n, source in enumerate(sources):
            if deadline is not None:
                deadline.check()
            if budget <= 0:
                reading.count("record-text-not-read")
                continue
            key = _source_key(source, self.max_text_chars)
            cached = self._sources.get(key)
            if cached is not None:
                results[n] = cached
            else:
                limits: dict[str, int] = {}
                text = source.text
                cap = min(budget, self.max_text_chars)
                if len(text) > cap:
                    text = text[:cap]
                    limits["text-truncated"] = 1
                todo.append((n, source, text, limits, key))
            budget -= min(len(source.text), self.max_text_chars)
        if todo:
            normalized = []
            for _, _, text, limits, _ in todo:
                read = self.spelling.normalize(text, deadline)
                if len(read.text) > self.max_text_chars:  # expanded abbreviations count against the cap
                    read = read.truncated(self.max_text_chars)
                    limits["text-truncated"] = 1
                normalized.append(read)
            # Which concepts may occur: one pass of anchor tests over all the new texts at once
            # (per text, the tests' own overhead was a tenth of the reading).
            joined = "\n\n".join(x.text for x in normalized)
            candidates = self.concepts.candidates(joined, lower_same_length(joined))
            for (n, source, _, limits, key), text in zip(todo, normalized):
                found = self._read_source(source, text, candidates, limits, deadline) if candidates else ()
                results[n] = (found, tuple(limits.items()))
                self._sources.put(key, results[n], _findings_bytes(found))
        for n in sorted(results):
            found, limits = results[n]
            for name, count in limits:
                reading.count(name, count)
            reading.findings.extend(found)
        return reading

    def describe_limits(self, limits: dict[str, int]) -> list[dict]:
        """The caps a reading reached, as the answer reports them (no content, only counts)."""
        caps = {"text-truncated": ("a text is read up to", self.max_text_chars),
                "long-sentence-cut": ("a sentence is cut at a clause break past", self.max_sentence_chars),
                "record-text-not-read": ("a record's texts are read up to", self.max_record_chars)}
        out = []
        for name, count in sorted(limits.items()):
            if name not in caps:
                continue  # a cap of another step (the rules'): it describes itself
            what, value = caps[name]
            out.append({"limit": name, "count": count, "maxCharacters": value,
                        "description": f"{what} {value} characters"})
        return out

    def read(self, source: Source) -> tuple[Finding, ...]:
        return tuple(self.read_all([source]).findings)

    # ------------------------------------------------------------------ a text
    def _read_source(self, source: Source, normalized, candidates, limits: dict, deadline) -> tuple[Finding, ...]:
        original = normalized.original_text
        text = normalized.text
        lowered = lower_same_length(text)
        occurrences = self.concepts.occurrences(text, lowered)
        if not (occurrences[0] or occurrences[1] or self.concepts.always_scanned):
            return ()  # no anchor of any concept: no finding
        sections = self.sections.sections(text, "report" if source.from_report else "note", deadline)
        splitting = split(text, sections.headers, self.max_sentence_chars, deadline)
        if splitting.long_sentences_cut:
            limits["long-sentence-cut"] = splitting.long_sentences_cut
        spans = splitting.spans
        matches = self.concepts.matches_in(text, lowered, candidates, spans, deadline, occurrences)
        starts = [s for s, _ in spans]
        by_sentence: dict[int, list[Target]] = {}
        for match in matches:
            i = bisect.bisect_right(starts, match.start) - 1
            if i >= 0 and match.end <= spans[i][1]:  # a match across a sentence end is no target
                by_sentence.setdefault(i, []).append(match)
        line_levels = _line_levels(text, spans, by_sentence, deadline)
        found: list[Finding] = []
        evidence_cache: dict[tuple[int, str], Evidence] = {}
        for count, i in enumerate(sorted(by_sentence)):
            if deadline is not None and count % 16 == 0:
                deadline.check()
            start, end = spans[i]
            sentence = text[start:end]
            section = sections.at(start)
            if section.assertion == "ignored":
                continue
            line_level = line_levels.get(i)
            analysed = self._analyse(sentence, [Target(t.finding, t.start - start, t.end - start, t.text)
                                                for t in by_sentence[i]], section, line_level)
            for kind, assertion, region, level, specific, upper, phrase, modifiers, linked, hedged in analysed:
                key = (i, assertion)
                evidence = evidence_cache.get(key)
                if evidence is None:
                    o_start, o_end = normalized.original_span(start, end)
                    evidence = evidence_cache[key] = Evidence(source.reference, source.element,
                                                              original[o_start:o_end], assertion, source.date)
                found.append(Finding(kind, assertion, region, level, specific, upper, phrase, evidence,
                                     source.from_report, modifiers, linked, section.name, source.prior, hedged))
        return tuple(_addendum_supersedes(found))

    def _analyse(self, sentence: str, matches: list[Target], section: SectionKind,
                 line_level: LevelMention | None) -> tuple:
        key = (sentence, section.name, line_level)
        cached = self._sentences.get(key)
        if cached is not None:
            return cached
        analysed = self.analyse_sentence(sentence, matches, section, line_level)
        self._sentences.put(key, analysed, 2 * len(sentence) + 160 * len(analysed) + 200)
        return analysed

    def analyse_sentence(self, sentence: str, matches: list[Target] | None = None,
                         section: SectionKind = NO_SECTION, line_level: LevelMention | None = None) -> tuple:
        """(kind, assertion, region, level, specific, upper, phrase, modifiers, linked, hedged) of
        each finding of a sentence."""
        if matches is None:
            targets = self.concepts.targets(sentence)
        else:
            lowered_sentence = sentence.lower()
            concepts = self.concepts.concepts
            targets = [t for t in matches if concepts[t.finding].accepts(t.text, sentence, lowered_sentence)]
        if not targets:
            return ()
        targets = _drop_nested(targets)
        assertions = self.context.assertions(sentence, targets, section.sentence_negation)
        leveled = any(self.concepts.concepts[t.finding].level_from != "none" for t in targets)
        levels = _levels_by_target(sentence, targets, find_levels(sentence), self.concepts, line_level) \
            if leveled else {}
        lowered = lower_same_length(sentence)
        modifiers = self.modifiers.attach(lowered, targets, assertions)
        linked = links(sentence, targets, assertions)
        ongoing = bool(section.planned) and _ONGOING.search(sentence) is not None
        placed = [_level_of(levels.get(t, ()), self.concepts.concepts[t.finding].level_from) for t in targets]
        out = []
        for n, (target, assertion) in enumerate(zip(targets, assertions)):
            hedged = assertion == "probable"
            if hedged:
                assertion = "uncertain"
                hedged = section.assertion not in _SECTION_EFFECT and target.finding not in section.planned
            if assertion == "affirmed" and section.assertion in _SECTION_EFFECT:
                assertion = _SECTION_EFFECT[section.assertion]
            if assertion == "affirmed" and target.finding in section.planned and not ongoing:
                assertion = "uncertain"  # planned, not yet done
            if assertion == "family" or section.assertion == "family":
                continue
            region, level, specific, upper = placed[n]
            # the findings the note links it to, with the region each is at: (kind, region)
            causes = frozenset((targets[m].finding, placed[m][0]) for m in linked[n])
            out.append((target.finding, assertion, region, level, specific, upper, target.text,
                        modifiers[n], causes, hedged))
        return tuple(out)


def _addendum_supersedes(found: list[Finding]) -> list[Finding]:
    """An addendum corrects its document: where it speaks of a finding (in any assertion), what the
    body said of that finding no longer counts ("CORRECTION: ... there is no fracture")."""
    corrected = {f.kind for f in found if f.section == "addendum"}
    if not corrected:
        return found
    return [f for f in found if f.section == "addendum" or f.kind not in corrected]


def _line_levels(text: str, spans: list[tuple[int, int]], by_sentence: dict, deadline=None
                 ) -> dict[int, LevelMention]:
    """The level line each sentence belongs to: a sentence that starts with a level label
    ("C5-C6:", "At C1-C2,") opens it; the sentences after it on the same line (a wrapped level line
    counts as one) stay in it; a new line without a label, a blank line or a header ends it."""
    out: dict[int, LevelMention] = {}
    current: LevelMention | None = None
    previous_end = 0
    for i, (start, end) in enumerate(spans):
        if deadline is not None and i % 4096 == 4095:
            deadline.check()
        label = LEVEL_LABEL.match(text, start)
        if label:
            mentions = find_levels(text[start:label.end()])
            current = mentions[0] if mentions else None
            line_start = text.rfind("\n", 0, start) + 1
            # "C5-C6: ..." at the start of a line opens a level line; "At C1-C2, there is ..." inside a
            # dictated paragraph is about its own sentence only
            continues = not text[line_start:start].strip()
            if current is not None and i in by_sentence:
                out[i] = current
            if not continues:
                current = None
        else:
            if "\n" in text[previous_end:start]:
                current = None
            if current is not None and i in by_sentence:
                out[i] = current
        previous_end = end
    return out


def _source_key(source: Source, max_chars: int) -> tuple:
    """A text's cache key: where it is from and a digest of what is read of it (the cache must not
    hold a record's megabytes of text as its keys)."""
    digest = hashlib.blake2b(source.text[:max_chars + 1].encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return (source.reference, source.element, source.date, source.from_report, source.prior, digest)


def _findings_bytes(found) -> int:
    """What a source's cached findings hold, roughly: their quoted sentences and the tuples."""
    return 200 + sum(400 + 2 * len(f.evidence.text) for f in found)


def _drop_nested(targets: list[Target]) -> list[Target]:
    """Of two targets of the same finding, the longer wins; a target inside another kind's
    longer phrase yields to it ("without radiation" is axial pain, not a radicular sign).
    One sweep by start (longest first): a target is dropped when the furthest-reaching kept target
    that started before it covers it (linear, the pairwise form was quadratic)."""
    kept: list[Target] = []
    cover: Target | None = None
    for t in sorted(targets, key=lambda t: (t.start, -(t.end - t.start))):
        if cover is not None and cover.start <= t.start and t.end <= cover.end and \
                (cover.finding == t.finding or (cover.end - cover.start) > (t.end - t.start)):
            continue
        kept.append(t)
        if cover is None or t.end > cover.end:
            cover = t
    return kept


def _levels_by_target(sentence: str, targets: list[Target], levels: list[LevelMention],
                      concepts: ConceptLexicon, line_level: LevelMention | None = None
                      ) -> dict[Target, list[LevelMention]]:
    """Each level mention goes to the nearest finding of its clause that has a level of its own:
    in "anterolisthesis of L4 on L5 and C5-C6 disc bulge" the slip is lumbar, the disc cervical.
    A finding with no mention in its clause takes its level line's level ("C5-C6: ... mild
    uncovertebral hypertrophy"), else a specific level within 40 characters. Linear: clauses and
    mentions are walked in order."""
    leveled = [t for t in targets if concepts.concepts[t.finding].level_from != "none"]
    owned: dict[Target, list[LevelMention]] = {t: [] for t in leveled}
    if not leveled:
        return owned
    sites = [t for t in targets if t.finding == "non-spinal-site"]
    breaks = [0]
    for m in _CLAUSE_BREAK.finditer(sentence):
        breaks.append(m.start())
        breaks.append(m.end())
    breaks.append(len(sentence))
    by_clause: dict[int, list[Target]] = {}
    for t in leveled:
        by_clause.setdefault(bisect.bisect_right(breaks, t.start), []).append(t)
    clause_starts = {clause: [c.start for c in members] for clause, members in by_clause.items()}
    for mention in levels:
        clause = bisect.bisect_right(breaks, mention.start)
        candidates = by_clause.get(clause)
        if candidates and bisect.bisect_left(breaks, mention.end) <= clause:
            k = bisect.bisect_left(clause_starts[clause], mention.start)
            near = [c for c in candidates[max(0, k - 1):k + 1]]
            nearest = min(near, key=lambda t: _distance(t, mention))
            owned[nearest].append(mention)
    taken = {id(m) for mentions in owned.values() for m in mentions}
    specific = [m for m in levels if m.specific and id(m) not in taken]
    specific_starts = [m.start for m in specific]
    for target in leveled:
        if target.finding in _BONE_INJURIES and any(
                bisect.bisect_right(breaks, site.start) == bisect.bisect_right(breaks, target.start) for site in sites):
            owned[target] = []  # "fracture of the left first rib": not a spinal level, whatever is near
            continue
        if owned[target]:
            continue
        if line_level is not None:
            owned[target] = [line_level]
            continue
        k = bisect.bisect_left(specific_starts, target.start)
        nearby = [m for m in specific[max(0, k - 1):k + 1] if _distance(target, m) <= 40
                  and ";" not in sentence[min(m.end, target.end):max(m.start, target.start)]]
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
