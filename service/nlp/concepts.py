"""Finding targets in a sentence, from the reviewable lexicon `service/knowledge/concepts.toml`."""
from __future__ import annotations

import bisect
import re
import tomllib
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import ahocorasick

try:  # the standard library's own regular-expression parser, to find what every match must contain
    from re import _constants as sre_constants, _parser as sre_parse
except ImportError:  # Python < 3.11
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

KNOWLEDGE = Path(__file__).resolve().parent.parent / "knowledge"
LEVEL_SOURCES = ("segment", "root", "none")


def lower_same_length(text: str) -> str:
    """Lower case with every position kept: matches found in it slice the original text. (A few
    characters, such as U+0130, lower-case to two; they are left as they are.)"""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class LexiconError(ValueError):
    """A lexicon file that does not follow its schema: refused at load, with the reason."""


def read_toml(path, error: type[LexiconError] = LexiconError) -> dict:
    """A knowledge file's TOML; `error` (naming the file) when it is not TOML."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{Path(path).name}: not TOML ({exc})") from None


def finding_kinds(path=None) -> set[str]:
    """The finding kinds of concepts.toml (its tables), for the knowledge files that name them."""
    return {k for k, v in read_toml(path or KNOWLEDGE / "concepts.toml").items() if isinstance(v, dict)}


def require_text(spec: dict, keys, where: str) -> None:
    """Each of `keys` is a non-empty string in the lexicon entry (its test example among them)."""
    for key in keys:
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise LexiconError(f"{where}: {key} is required (every entry is tested by its example)")


class Target(NamedTuple):
    finding: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Concept:
    finding: str
    level_from: str
    # (regex, on the lower-cased text?, a leading \b moved out of it?) — see _compile
    scans: tuple[tuple[re.Pattern, bool, bool], ...]
    ambiguous: re.Pattern | None = None
    context: tuple[str, ...] = ()
    not_context: tuple[str, ...] = ()
    anchors: tuple[str, ...] | None = None  # lower-case strings one of which every lower-case match contains
    cased_anchors: tuple[str, ...] | None = None  # strings one of which every case-sensitive match contains

    def __post_init__(self):
        object.__setattr__(self, "_context_lower", tuple(p.lower() for p in self.context))
        object.__setattr__(self, "_not_context_lower", tuple(p.lower() for p in self.not_context))
        object.__setattr__(self, "_verdicts", {})

    def accepts(self, match_text: str, sentence: str, lowered: str | None = None) -> bool:
        """An ambiguous match ("RA") counts only with its context (when it has one) and without its
        counter-context."""
        if self.ambiguous is None or not self.ambiguous.search(match_text):
            return True
        lowered = sentence.lower() if lowered is None else lowered
        verdict = self._verdicts.get(lowered)
        if verdict is None:  # the same for every match of the sentence: decided once
            verdict = not any(phrase in lowered for phrase in self._not_context_lower) and (
                not self.context or any(phrase in lowered for phrase in self._context_lower))
            if len(self._verdicts) > 256:
                self._verdicts.clear()
            self._verdicts[lowered] = verdict
        return verdict

    def matches(self, sentence: str, lowered: str, use_lower: bool = True, use_cased: bool = True,
                start: int = 0, end: int | None = None):
        end = len(sentence) if end is None else end
        for regex, on_lower, bounded in self.scans:
            if not (use_lower if on_lower else use_cased):
                continue
            text = lowered if on_lower else sentence
            for m in regex.finditer(text, start, end):
                start = m.start()
                # a leading \b moved out of the pattern (it stops the engine's fast skip-ahead)
                if bounded and start and (text[start - 1].isalnum() or text[start - 1] == "_"):
                    continue
                yield start, m.end()


def _compile(patterns: list[str], on_lower: bool) -> list[tuple[re.Pattern, bool, bool]]:
    """Patterns grouped by whether they start with \b: that \b is checked after the match instead,
    so the engine can skip ahead to the pattern's first letters (measured 25x faster)."""
    bounded, free = [], []
    for p in patterns:
        if p.startswith("\\b"):
            bounded.append(p[2:])
        elif p.startswith("(?-i:\\b"):
            bounded.append("(?-i:" + p[7:])
        else:
            free.append(p)
    out = []
    for group, is_bounded in ((bounded, True), (free, False)):
        if group:
            out.append((re.compile("|".join(f"(?:{p})" for p in group)), on_lower, is_bounded))
    return out


_KEYS = {"level_from", "patterns", "ambiguous", "context", "not_context"}


class ConceptLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "concepts.toml"):
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        self.concepts: dict[str, Concept] = {}
        for finding, spec in raw.items():
            if not isinstance(spec, dict):
                raise LexiconError(f"{path.name}: [{finding}] must be a table")
            unknown = set(spec) - _KEYS
            if unknown:
                raise LexiconError(f"{path.name}: [{finding}] has unknown keys {sorted(unknown)}")
            if spec.get("level_from") not in LEVEL_SOURCES:
                raise LexiconError(f"{path.name}: [{finding}] level_from must be one of {LEVEL_SOURCES}")
            patterns = spec.get("patterns")
            if not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise LexiconError(f"{path.name}: [{finding}] needs a list of patterns")
            lower, cased = [], []
            for p in patterns:
                if "(?-i:" in p:
                    # Its anchors are matched as cased: no letter may stand outside (?-i:...) but in
                    # a look-around, or an upper-case text could slip past the anchor test.
                    outside = re.sub(r"\(\?-i:[^()]*\)|\(\?<?[!=][^()]*\)|\\.", "", p)
                    if re.search("[A-Za-z]", outside):
                        raise LexiconError(f"{path.name}: [{finding}] pattern {p!r} mixes cases: put the "
                                           "case-sensitive part alone in (?-i:...) and the rest in another pattern")
                    cased.append(p)
                elif re.search("[A-Z]", re.sub(r"\\.", "", p)):
                    raise LexiconError(f"{path.name}: [{finding}] pattern {p!r} has upper case outside (?-i:...): "
                                       "write it in lower case")
                else:
                    lower.append(p)
            try:
                scans = tuple(_compile(lower, True) + _compile(cased, False))
                ambiguous = re.compile(spec["ambiguous"]) if spec.get("ambiguous") else None
            except re.error as exc:
                raise LexiconError(f"{path.name}: [{finding}] has an invalid pattern ({exc})") from None
            self.concepts[finding] = Concept(finding, spec["level_from"], scans, ambiguous,
                                             tuple(spec.get("context", ())), tuple(spec.get("not_context", ())),
                                             anchors_of(lower) if lower else (),
                                             anchors_of(cased, keep_case=True) if cased else ())

        self._lower_anchors = sorted({a for c in self.concepts.values() for a in (c.anchors or ())})
        self._cased_anchors = sorted({a for c in self.concepts.values() for a in (c.cased_anchors or ())})
        # Every anchor found in one pass over a text (Aho-Corasick, pyahocorasick): where each one
        # occurs tells which concepts may occur and which sentences to scan for them. Substring
        # tests of each of ~300 anchors, and a find() loop per anchor, cost a tenth of the reading.
        self._automata = (_automaton(self._lower_anchors), _automaton(self._cased_anchors))
        self._concepts_of_lower: dict[str, list[str]] = {}
        self._concepts_of_cased: dict[str, list[str]] = {}
        for finding, concept in self.concepts.items():
            for anchor in concept.anchors or ():
                self._concepts_of_lower.setdefault(anchor, []).append(finding)
            for anchor in concept.cased_anchors or ():
                self._concepts_of_cased.setdefault(anchor, []).append(finding)
        self.always_scanned = any(c.anchors is None or c.cased_anchors is None for c in self.concepts.values())

    def occurrences(self, text: str, lowered: str) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Where each anchor starts: (lower-case anchors in `lowered`, cased ones in `text`)."""
        out: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
        for automaton, haystack, found in zip(self._automata, (lowered, text), out):
            if automaton is None:
                continue
            for end, anchor in automaton.iter(haystack):
                found.setdefault(anchor, []).append(end - len(anchor) + 1)
        return out

    @property
    def findings(self) -> list[str]:
        return list(self.concepts)

    def candidates(self, text: str, lowered_text: str | None = None, occurrences=None
                   ) -> list[tuple[Concept, tuple, tuple]]:
        """The concepts that may occur in a text, each with the anchors the text contains (lower
        case, and as cased): one pass over the text, so each sentence tests only those."""
        lowered_text = lower_same_length(text) if lowered_text is None else lowered_text
        present, present_cased = occurrences if occurrences is not None else self.occurrences(text, lowered_text)
        # From the anchors present to their concepts (few anchors are present in a text).
        lower_of: dict[str, list[str]] = {}
        cased_of: dict[str, list[str]] = {}
        for anchors, table, by_anchor in ((present, lower_of, self._concepts_of_lower),
                                          (present_cased, cased_of, self._concepts_of_cased)):
            for anchor in anchors:
                for finding in by_anchor.get(anchor, ()):
                    table.setdefault(finding, []).append(anchor)
        out = []
        for finding, concept in self.concepts.items():
            lower = None if concept.anchors is None else tuple(sorted(lower_of.get(finding, ())))
            cased = None if concept.cased_anchors is None else tuple(sorted(cased_of.get(finding, ())))
            if lower is None or cased is None or lower or cased:
                out.append((concept, lower, cased))
        return out

    def targets(self, sentence: str, candidates=None) -> list[Target]:
        """The finding targets of one sentence."""
        lowered = lower_same_length(sentence)
        found = self.matches_in(sentence, lowered, candidates if candidates is not None
                                else self.candidates(sentence, lowered))
        return [t for t in found if self.concepts[t.finding].accepts(t.text, sentence)]

    def matches_in(self, text: str, lowered: str, candidates, spans: list[tuple[int, int]] | None = None,
                   deadline=None, occurrences=None) -> list[Target]:
        """Every match of the candidate concepts in a whole text, before the context checks of
        ambiguous ones (which need the sentence). With the sentence spans, a concept is scanned
        only in the sentences that hold one of its anchors: a match contains an anchor and never
        crosses a sentence end, so no match is lost, and most of the text is never scanned."""
        found = []
        starts = [s for s, _ in spans] if spans else None
        if spans and occurrences is None:
            occurrences = self.occurrences(text, lowered)
        for concept, lower, cased in candidates:
            use_lower = lower is None or bool(lower)
            use_cased = cased is None or bool(cased)
            if spans is None or lower is None or cased is None:
                windows = [(0, len(text))]
            else:
                hit: set[int] = set()
                for anchors, where in ((lower, occurrences[0]), (cased, occurrences[1])):
                    for anchor in anchors:
                        for i in where.get(anchor, ()):
                            hit.add(bisect.bisect_right(starts, i) - 1)
                windows = [spans[i] for i in sorted(hit) if i >= 0]
            for n, (lo, hi) in enumerate(windows):
                if deadline is not None and n % 1024 == 1023:
                    deadline.check()
                for start, end in concept.matches(text, lowered, use_lower, use_cased, lo, hi):
                    if end > start:
                        found.append(Target(concept.finding, start, end, text[start:end]))
        return sorted(found, key=lambda t: (t.start, -t.end))


def _automaton(words: list[str]):
    if not words:
        return None
    automaton = ahocorasick.Automaton()
    for word in words:
        automaton.add_word(word, word)
    automaton.make_automaton()
    return automaton


# ------------------------------------------------------------------ anchors
# Measured on a 9 KB report: a case-insensitive pattern that starts with \b costs about 110 µs a
# scan, a substring test about 1 µs. Each pattern's anchors are read from its own parse tree, so
# adding a pattern to the lexicon needs nothing else; a pattern without a required literal gets
# no anchors and is always scanned.
def anchors_of(patterns: list[str], keep_case: bool = False) -> tuple[str, ...] | None:
    anchors: set[str] = set()
    for pattern in patterns:
        required = _required(sre_parse.parse(pattern, re.IGNORECASE), keep_case)
        if not required:
            return None
        anchors |= required
    return tuple(sorted(anchors))


def _required(items, keep_case: bool = False) -> set[str] | None:
    """Strings one of which every match of this parsed sequence contains (lower case, unless
    `keep_case` for the (?-i:...) patterns matched on the original text)."""
    candidates: list[set[str]] = []
    run = ""

    def close():
        nonlocal run
        if len(run) >= 2:
            candidates.append({run})
        run = ""

    for op, av in items:
        if op == sre_constants.LITERAL:
            run += chr(av) if keep_case else chr(av).lower()
            continue
        close()
        if op == sre_constants.SUBPATTERN:
            inner = _required(av[-1], keep_case)
            if inner:
                candidates.append(inner)
        elif op == sre_constants.BRANCH:
            union: set[str] = set()
            for branch in av[1]:
                inner = _required(branch, keep_case)
                if not inner:
                    union = set()
                    break
                union |= inner
            if union:
                candidates.append(union)
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[0] >= 1:
            inner = _required(av[2], keep_case)
            if inner:
                candidates.append(inner)
    close()
    if not candidates:
        return None
    return max(candidates, key=lambda c: min(len(x) for x in c))
