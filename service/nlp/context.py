"""ConText (Harkema et al., 2009): is a finding negated, uncertain, historical, or about family?

Triggers come from `service/knowledge/context_rules.json`, checked against its schema at load.
A trigger modifies the findings in its scope: after it (FORWARD), before it (BACKWARD) or both,
up to a terminator, the sentence end, or `max_scope` words. PSEUDO phrases ("no interval
change") contain a trigger word but are not triggers. Where several triggers reach a finding,
negation wins over family, family over uncertainty, uncertainty over history. An uncertainty of
the Official Guidelines' terms alone ("likely", "probable", "suspected") is "probable": workup
wording ("rule out", "evaluate for") makes it plain uncertain.
"""
from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

from .concepts import KNOWLEDGE, LexiconError, Target, anchors_of, lower_same_length, require_text

CATEGORIES = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "PROBABLE_EXISTENCE", "HYPOTHETICAL", "HISTORICAL",
              "FAMILY", "PSEUDO", "TERMINATE")
DIRECTIONS = ("FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO")
# "probable": uncertain by one of the Official Guidelines' uncertainty terms (Section II.H: probable,
# likely, suspected ...) and by nothing else; the reader reads it as uncertain and marks it hedged.
ASSERTIONS = ("affirmed", "negated", "uncertain", "probable", "historical", "family")
_PRIORITY = {"negated": 0, "family": 1, "uncertain": 2, "probable": 3, "historical": 4}
_RULE_KEYS = {"literal", "pattern", "category", "direction", "max_scope", "example", "example_finding",
              "example_assertion", "words"}
DEFAULT_SCOPE = {"FORWARD": 10, "BACKWARD": 6}
# A negation reaches on through a coordinated list ("no A, B, C, or D"), up to LIST_SCOPE words,
# as long as what lies between holds commas and no verb that would start a clause of its own.
LIST_SCOPE = 30
_LIST = re.compile(r"(?=[^;]*,)(?![^;]*\b(?:is|are|was|were|there|shows?|showed|demonstrates?|reveals?|has|have|had|"
                   r"noted|seen|identified|present|but|however|although|which|with)\b)[^;.]*", re.IGNORECASE)
# What may follow a trigger that ends its sentence.
_ENDS = re.compile(r"[\s.!?)\]\"']*")
_WORD = re.compile(r"\w+")
# Words (with their inner / ' - as in "h/o", "s/p") and single punctuation marks (";", "?").
_TOKEN = re.compile(r"\w+(?:[/'-]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class ContextRule:
    text: str  # the literal or the pattern, as written
    category: str
    direction: str
    assertion: str | None
    max_scope: int | None
    example: str
    example_finding: str
    example_assertion: str


class Trigger(NamedTuple):
    rule: ContextRule
    start: int
    end: int


class ContextLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "context_rules.json"):
        data = json.loads(Path(path).read_text())
        mapping = data.get("categories", {})
        self.rules: list[ContextRule] = []
        self._phrases: dict[tuple[str, ...], int] = {}  # literal trigger as tokens → rule index
        patterns: list[tuple[re.Pattern, int]] = []
        gates: list[frozenset | None] = []
        for n, raw in enumerate(data.get("rules", [])):
            where = f"{Path(path).name} rule #{n + 1}"
            if not isinstance(raw, dict):
                raise LexiconError(f"{where}: must be an object")
            unknown = set(raw) - _RULE_KEYS
            if unknown:
                raise LexiconError(f"{where}: unknown keys {sorted(unknown)}")
            if ("literal" in raw) == ("pattern" in raw):
                raise LexiconError(f"{where}: needs exactly one of literal or pattern")
            if raw.get("category") not in CATEGORIES:
                raise LexiconError(f"{where}: category must be one of {CATEGORIES}")
            if raw.get("direction") not in DIRECTIONS:
                raise LexiconError(f"{where}: direction must be one of {DIRECTIONS}")
            require_text(raw, ("example", "example_finding", "example_assertion"), where)
            if raw["example_assertion"] not in ASSERTIONS:
                raise LexiconError(f"{where}: example_assertion must be one of {ASSERTIONS}")
            text = raw.get("literal", raw.get("pattern"))
            rule = ContextRule(text, raw["category"], raw["direction"], mapping.get(raw["category"]),
                               raw.get("max_scope"), raw["example"], raw["example_finding"],
                               raw["example_assertion"])
            index = len(self.rules)
            self.rules.append(rule)
            if "literal" in raw:
                phrase = tuple(m.group().lower() for m in _TOKEN.finditer(text))
                if not phrase:
                    raise LexiconError(f"{where}: the literal has no words")
                if phrase in self._phrases:
                    raise LexiconError(f"{where}: the literal {text!r} is listed twice")
                self._phrases[phrase] = index
            else:
                words = raw.get("words")
                if words is not None and (not isinstance(words, list) or not words
                                          or not all(isinstance(w, str) and w == w.lower() and w for w in words)):
                    raise LexiconError(f"{where}: words must be a list of lower-case words")
                gates.append(frozenset(words) if words else None)
                try:
                    patterns.append((re.compile(text, re.IGNORECASE), index))
                except re.error as exc:
                    raise LexiconError(f"{where}: invalid pattern ({exc})") from None
        self._patterns = patterns
        # Phrases by their first word, longest first: one dictionary look-up per word of a sentence.
        self._by_first_word: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for phrase, index in sorted(self._phrases.items(), key=lambda item: -len(item[0])):
            self._by_first_word.setdefault(phrase[0], []).append((phrase, index))
        # Pattern triggers run only in sentences holding one of their `words`, or else one of the
        # literals every match contains (measured: the pattern triggers were 60 % of ConText's cost).
        self._pattern_gates = [(gate, None if gate else anchors_of([p.pattern]))
                               for gate, (p, _) in zip(gates, self._patterns)]
        # The first words of the literal triggers that modify a finding (not terminators, not PSEUDO
        # phrases): a sentence holding none of them, where no pattern can match, is all affirmed.
        self._modifying_words = frozenset(phrase[0] for phrase, index in self._phrases.items()
                                          if self.rules[index].category not in ("TERMINATE", "PSEUDO"))

    def triggers(self, sentence: str, tokens: list | None = None) -> list[Trigger]:
        """Triggers in the sentence: at each word the longest literal phrase that starts there
        ("no interval change" before "no"), found by a look-up of each word among the phrases it
        starts (a 120-way regular expression measured 0.27 ms a sentence; this, about 0.01 ms),
        plus the few pattern triggers ("in 2015"). Linear in the sentence: a bounded number of
        phrases start at each word, and pattern matches are checked against the literal ones by
        bisection."""
        lowered = lower_same_length(sentence)
        matches = tokens if tokens is not None else list(_TOKEN.finditer(lowered))
        words = [m.group() for m in matches]
        out = []
        first_words = self._by_first_word
        i, count = 0, len(words)
        while i < count:
            starting = first_words.get(words[i])
            if starting:
                for phrase, index in starting:
                    n = len(phrase)
                    if n == 1 or tuple(words[i:i + n]) == phrase:  # its first word is this word
                        out.append(Trigger(self.rules[index], matches[i].start(), matches[i + n - 1].end()))
                        i += n
                        break
                else:
                    i += 1
            else:
                i += 1
        if self._patterns:
            found = [[] for _ in self._patterns]
            present = set(words)
            for n, ((pattern, index), (gate, anchors)) in enumerate(zip(self._patterns, self._pattern_gates)):
                if gate is not None:
                    if gate.isdisjoint(present):
                        continue
                elif anchors is not None and not any(a in lowered for a in anchors):
                    continue
                found[n] = [Trigger(self.rules[index], m.start(), m.end()) for m in pattern.finditer(sentence)]
            if not any(found):
                return out  # literal triggers only: already in order
            # A PSEUDO pattern ("72 year old") takes its words from the literal triggers in it ("old").
            pseudo = sorted((t for group in found for t in group if t.rule.category == "PSEUDO"), key=lambda t: t.start)
            if pseudo:
                starts = [t.start for t in pseudo]
                def inside_pseudo(t: Trigger) -> bool:
                    k = bisect.bisect_right(starts, t.start) - 1
                    return k >= 0 and pseudo[k].end > t.start
                out = [t for t in out if not inside_pseudo(t)]
            ends = [t.end for t in out]  # literal triggers do not overlap and are in order
            extra = list(pseudo)
            replaced: set[int] = set()
            for group in found:
                for trigger in group:
                    if trigger.rule.category == "PSEUDO":
                        continue
                    k = bisect.bisect_right(ends, trigger.start)
                    covered = []
                    while k < len(out) and out[k].start < trigger.end:
                        covered.append(k)
                        k += 1
                    if covered and not all(trigger.start <= out[j].start and out[j].end <= trigger.end
                                           and (out[j].rule.category, out[j].rule.direction)
                                           != (trigger.rule.category, trigger.rule.direction) for j in covered):
                        continue  # overlaps a literal trigger without holding it, or says what it says
                    replaced.update(covered)  # ": no" at the end of a field holds the literal "no"
                    extra.append(trigger)
            out = [t for n, t in enumerate(out) if n not in replaced] + extra
        return sorted(out, key=lambda t: t.start)

    def _may_match_pattern(self, lowered: str, present: set[str]) -> bool:
        for gate, anchors in self._pattern_gates:
            if gate is not None:
                if not gate.isdisjoint(present):
                    return True
            elif anchors is None or any(a in lowered for a in anchors):
                return True
        return False

    def assertions(self, sentence: str, targets: list[Target], sentence_negation: bool = False) -> list[str]:
        """The assertion of each target (same order): affirmed, negated, uncertain, historical, family.

        Two sweeps over the sentence (left to right for FORWARD triggers, right to left for
        BACKWARD), each keeping per assertion only how far its open triggers reach: a terminator
        closes them all. Linear in triggers + targets (the pairwise form was targets × triggers ×
        terminators). `sentence_negation`: a negation reaches the end of its sentence (ROS lists)."""
        if not targets:
            return []
        lowered = lower_same_length(sentence)
        present = set(_TOKEN.findall(lowered))
        if present.isdisjoint(self._modifying_words) and not self._may_match_pattern(lowered, present):
            return ["affirmed"] * len(targets)  # nothing here can modify a finding
        tokens = list(_TOKEN.finditer(lowered))
        triggers = [t for t in self.triggers(sentence, tokens) if t.rule.category != "PSEUDO"]
        if not triggers or all(t.rule.category == "TERMINATE" for t in triggers):
            return ["affirmed"] * len(targets)
        word_starts = [m.start() for m in tokens if m.group()[0].isalnum() or m.group()[0] == "_"]

        def words_before(position: int) -> int:
            return bisect.bisect_left(word_starts, position)

        found: list[set[str]] = [set() for _ in targets]
        forward = [t for t in triggers if t.rule.direction in ("FORWARD", "BIDIRECTIONAL")]
        backward = [t for t in triggers if t.rule.direction in ("BACKWARD", "BIDIRECTIONAL")]
        terminators = [t for t in triggers if t.rule.category == "TERMINATE"]
        if forward:
            # events at positions, as sortable tuples; at one position: close, open, query
            events = [(t.end, 0, n) for n, t in enumerate(terminators)]
            events += [(t.end, 1, n) for n, t in enumerate(forward)]
            events += [(t.start, 2, n) for n, t in enumerate(targets)]
            events.sort()
            reach: dict[str, float] = {}
            negation_end = None  # where the last open negation ended, for lists that run past its scope
            for position, kind, n in events:
                if kind == 0:
                    reach.clear()
                    negation_end = None
                elif kind == 1:
                    trigger = forward[n]
                    assertion = trigger.rule.assertion
                    limit = trigger.rule.max_scope or DEFAULT_SCOPE["FORWARD"]
                    if sentence_negation and assertion == "negated":
                        limit = float("inf")
                    far = words_before(trigger.end) + limit
                    if far > reach.get(assertion, -1):
                        reach[assertion] = far
                    if assertion == "negated":
                        negation_end = trigger.end
                else:
                    at = words_before(position)
                    found[n].update(a for a, far in reach.items() if at <= far)
                    if negation_end is not None and "negated" not in found[n] and \
                            at - words_before(negation_end) <= LIST_SCOPE and \
                            _LIST.fullmatch(sentence, negation_end, position):
                        found[n].add("negated")  # "No swelling, malalignment, widening of the ADI, or acute fracture"
        if backward:
            # right to left: at one position, close, open, query
            events = [(-t.start, 0, n) for n, t in enumerate(terminators)]
            events += [(-t.start, 1, n) for n, t in enumerate(backward)]
            events += [(-t.end, 2, n) for n, t in enumerate(targets)]
            events.sort()
            near: dict[str, float] = {}
            for position, kind, n in events:
                if kind == 0:
                    near.clear()
                elif kind == 1:
                    trigger = backward[n]
                    limit = trigger.rule.max_scope or DEFAULT_SCOPE["BACKWARD"]
                    if trigger.rule.max_scope is None and _ENDS.fullmatch(sentence, trigger.end):
                        limit = float("inf")  # "A fracture through the base of the dens is not identified."
                    low = words_before(trigger.start) - limit
                    assertion = trigger.rule.assertion
                    if low < near.get(assertion, float("inf")):
                        near[assertion] = low
                else:
                    at = words_before(-position)
                    found[n].update(a for a, low in near.items() if at >= low)
        return [min(f, key=_PRIORITY.__getitem__) if f else "affirmed" for f in found]
