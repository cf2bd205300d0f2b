"""Words as clinicians write them: abbreviations expanded, misspellings of the lexicons' words
corrected, before anything else reads the text.

The data is `service/knowledge/spelling.toml`. Abbreviations are whole words ("AAI", "GON",
"radic", "w/o"). A misspelling is a word of 8+ letters one edit from a vocabulary word (two from
11+ letters; rapidfuzz's Levenshtein distance), with the same first two letters and last letter,
and not a protected real word ("spondylitis" is not "spondylosis"). Short words are never
corrected: too many real words are one edit apart.

The reading runs on the normalized text; `Normalized.original(position)` maps a position back,
so evidence quotes the record's own words. Linear: one pass over the words, each looked up once
(corrections are cached by word).
"""
from __future__ import annotations

import bisect
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from .concepts import KNOWLEDGE, LexiconError, lower_same_length, require_text

_ABBREVIATION_KEYS = {"written", "means", "any_case", "example", "example_finding"}
_MISSPELLING_KEYS = {"written", "means", "example", "example_finding"}
MIN_LENGTH = 8
_LONG_WORD = re.compile(r"[a-z]{8,}")


@dataclass(frozen=True)
class Example:
    written: str
    means: str
    example: str
    example_finding: str


class Normalized:
    """A text with its corrections, and the way back to the original's positions."""

    def __init__(self, original: str, text: str, breakpoints: list[tuple[int, int, int, int]]):
        self.original_text = original
        self.text = text
        # (normalized start, normalized end, original start, original end) of each replacement
        self._points = breakpoints
        self._starts = [p[0] for p in breakpoints]

    @property
    def changed(self) -> bool:
        return bool(self._points)

    def original(self, position: int) -> int:
        if not self._points:
            return position
        i = bisect.bisect_right(self._starts, position) - 1
        if i < 0:
            return position
        n_start, n_end, o_start, o_end = self._points[i]
        if position >= n_end:
            return o_end + (position - n_end)
        return o_start if position == n_start else o_end  # inside a replacement: its original span

    def truncated(self, length: int) -> "Normalized":
        """The normalized text cut at `length` (the original cut where that position maps)."""
        end = self.original(length)
        return Normalized(self.original_text[:end], self.text[:length],
                          [p for p in self._points if p[1] <= length])

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self.original(start), self.original(end)


_SPOKEN_KEYS = {"numbers", "not_after", "not_before", "levels", "not_levels"}
_SPOKEN_LEVEL_KEYS = {"written", "means", "example", "example_finding"}
_LETTER_RANGE = {"C": range(0, 9), "T": range(1, 13), "L": range(1, 6), "S": range(1, 6)}
_WORD_BEFORE = re.compile(r"([a-z]+)\W*$")
_WORD_AFTER = re.compile(r"\W*([a-z]+)")


class SpokenLevels:
    """Levels as speech recognition writes them ("C two", "C one dash C two", "C one-two"), read as
    written levels (spelling.toml [spoken_levels]). One regular expression over the text, each match
    checked against the words around it: linear."""

    def __init__(self, spec, name: str):
        if spec is None:
            spec = {"numbers": [], "not_after": [], "not_before": []}
        if not isinstance(spec, dict) or set(spec) - _SPOKEN_KEYS:
            raise LexiconError(f"{name}: [spoken_levels] keys must be among {sorted(_SPOKEN_KEYS)}")
        for key in ("numbers", "not_after", "not_before"):
            words = spec.get(key, [])
            if not isinstance(words, list) or not all(isinstance(w, str) and w.isalpha() and w == w.lower()
                                                      for w in words):
                raise LexiconError(f"{name}: [spoken_levels] {key} must be a list of lower-case words")
        self.numbers = {word: n for n, word in enumerate(spec.get("numbers", []))}
        self.not_after = frozenset(spec.get("not_after", []))
        self.not_before = frozenset(spec.get("not_before", []))
        self.examples: list[Example] = []
        for n, entry in enumerate(spec.get("levels", [])):
            where = f"{name}: [[spoken_levels.levels]] #{n + 1}"
            if not isinstance(entry, dict) or set(entry) != _SPOKEN_LEVEL_KEYS:
                raise LexiconError(f"{where}: needs exactly {sorted(_SPOKEN_LEVEL_KEYS)}")
            require_text(entry, tuple(_SPOKEN_LEVEL_KEYS), where)
            self.examples.append(Example(entry["written"], entry["means"], entry["example"], entry["example_finding"]))
        not_levels = spec.get("not_levels", {"examples": []})
        if not isinstance(not_levels, dict) or set(not_levels) != {"examples"} or \
                not all(isinstance(t, str) and t.strip() for t in not_levels["examples"]):
            raise LexiconError(f"{name}: [spoken_levels.not_levels] needs `examples`, a list of texts")
        self.not_level_examples: list[str] = list(not_levels["examples"])
        self._pattern = None
        if self.numbers:
            words = "|".join(sorted(self.numbers, key=len, reverse=True))
            number = rf"(?i:{words})\b"
            self._pattern = re.compile(
                rf"(?<![\w.-])(?P<l1>[CTLS])(?:\s{{1,3}}|-)?(?:(?P<w1>{number})|(?P<d1>\d{{1,2}})(?=\s+dash\s))"
                rf"(?:(?P<sep>\s{{0,3}}[-\u2013/]\s{{0,3}}|\s{{1,3}}(?i:dash|to|through|on|over)\s{{1,3}})"
                rf"(?:(?P<l2>[CTLS])(?:\s{{1,3}}|-)?)?(?:(?P<w2>{number})|(?P<d2>\d{{1,2}})\b))?")
        self._gate = tuple(self.numbers) + (" dash ",)

    def _value(self, word: str | None, digits: str | None) -> int | None:
        if word is not None:
            return self.numbers.get(word.lower())
        return int(digits) if digits is not None else None

    def replacements(self, text: str, lowered: str, deadline=None) -> list[tuple[int, int, str]]:
        """(start, end, written level) of each spoken level of the text."""
        if self._pattern is None or not any(g in lowered for g in self._gate):
            return []
        out = []
        for n, m in enumerate(self._pattern.finditer(text)):
            if deadline is not None and n % 4096 == 4095:
                deadline.check()
            if m.group("w1") is None and m.group("w2") is None and "dash" not in (m.group("sep") or ""):
                continue  # written as a level already
            letter = m.group("l1")
            first = self._value(m.group("w1"), m.group("d1"))
            if first not in _LETTER_RANGE[letter]:
                continue
            before = _WORD_BEFORE.search(lowered, max(0, m.start() - 30), m.start())
            if before and before.group(1) in self.not_after:
                continue  # "hepatitis C two years ago", "vitamin C two tablets"
            end, written = m.end(), f"{letter}{first}"
            if m.group("sep") is not None:
                second_letter = m.group("l2") or letter
                second = self._value(m.group("w2"), m.group("d2"))
                if second_letter in _LETTER_RANGE and second in _LETTER_RANGE[second_letter]:
                    word = m.group("sep").strip().lower()
                    joint = "-" if word in ("-", "\u2013", "dash") else "/" if word == "/" else f" {word} "
                    written += joint + (m.group("l2") or "") + str(second)
                else:
                    end = m.end("w1") if m.group("w1") is not None else m.end("d1")
                    if m.group("w1") is None:
                        continue
            after = _WORD_AFTER.match(lowered, end)
            if after and after.group(1) in self.not_before:
                continue  # "C two years", "S one times"
            out.append((m.start(), end, written))
        return out


class SpellingLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "spelling.toml"):
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        name = Path(path).name
        unknown = set(raw) - {"vocabulary", "protected", "abbreviations", "misspellings", "spoken_levels"}
        if unknown:
            raise LexiconError(f"{name}: unknown keys {sorted(unknown)}")
        for key in ("vocabulary", "protected"):
            words = raw.get(key, [])
            if not all(isinstance(w, str) and w.isalpha() and w == w.lower() for w in words):
                raise LexiconError(f"{name}: {key} must be lower-case words")
        self.vocabulary = set(raw.get("vocabulary", []))
        self.protected = set(raw.get("protected", [])) | self.vocabulary
        self._by_start: dict[str, list[str]] = {}
        for word in sorted(self.vocabulary):
            self._by_start.setdefault(word[:2], []).append(word)
        self.abbreviations: list[Example] = []
        self.misspellings: list[Example] = []
        cased, any_case = {}, {}
        for n, spec in enumerate(raw.get("abbreviations", [])):
            entry = self._entry(spec, _ABBREVIATION_KEYS, f"{name} abbreviation #{n + 1}")
            self.abbreviations.append(entry)
            (any_case if spec.get("any_case") else cased)[entry.written.lower() if spec.get("any_case")
                                                          else entry.written] = entry.means
        for n, spec in enumerate(raw.get("misspellings", [])):
            self.misspellings.append(self._entry(spec, _MISSPELLING_KEYS, f"{name} misspelling #{n + 1}"))
        self._cased = cased
        self._any_case = any_case
        # Two scans, the cased ones on the text and the others on its lower-cased copy; the word
        # boundary before a match is checked after it (a leading look-behind stops the engine's
        # fast skip to the first letters).
        def scan(words):
            alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
            return re.compile(r"(?:" + alternatives + r")(?![\w/])") if words else None
        self._cased_scan = scan(cased)
        self._any_case_scan = scan(list(any_case))
        self._cache: dict[str, str | None] = {}
        self._starts = frozenset(self._by_start)
        self.spoken = SpokenLevels(raw.get("spoken_levels"), name)

    @staticmethod
    def _entry(spec, keys: set[str], where: str) -> Example:
        if not isinstance(spec, dict):
            raise LexiconError(f"{where}: must be a table")
        unknown = set(spec) - keys
        if unknown:
            raise LexiconError(f"{where}: unknown keys {sorted(unknown)}")
        require_text(spec, ("written", "means", "example", "example_finding"), where)
        return Example(spec["written"], spec["means"], spec["example"], spec["example_finding"])

    def correction(self, word: str) -> str | None:
        """The vocabulary word a long word misspells, or None."""
        lowered = word.lower()
        if lowered in self._cache:
            return self._cache[lowered]
        result = None
        if lowered not in self.protected and len(lowered) >= MIN_LENGTH:
            choices = [w for w in self._by_start.get(lowered[:2], ()) if w[-1] == lowered[-1]
                       and abs(len(w) - len(lowered)) <= 2]
            if choices:
                limit = 2 if len(lowered) >= 11 else 1
                best = process.extractOne(lowered, choices, scorer=Levenshtein.distance, score_cutoff=limit)
                if best is not None:
                    result = best[0]
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[lowered] = result
        return result

    def normalize(self, text: str, deadline=None) -> Normalized:
        replacements: list[tuple[int, int, str]] = []
        lowered = lower_same_length(text)
        for scan, haystack, table in ((self._cased_scan, text, self._cased),
                                      (self._any_case_scan, lowered, self._any_case)):
            for m in scan.finditer(haystack) if scan is not None else ():
                before = text[m.start() - 1] if m.start() else " "
                if before.isalnum() or before in "_/":
                    continue
                means = table.get(m.group())
                if means:
                    replacements.append((m.start(), m.end(), means))
        replacements.extend(self.spoken.replacements(text, lowered, deadline))
        starts = self._starts
        # Misspellings, on the lower-cased text; only a word that starts like a vocabulary word can
        # misspell one, so most long words cost a set look-up.
        for n, m in enumerate(_LONG_WORD.finditer(lowered)):
            if deadline is not None and n % 4096 == 4095:
                deadline.check()
            if m.group()[:2] not in starts:
                continue
            written = text[m.start():m.end()]
            corrected = self.correction(written)
            if corrected is not None:
                if written.isupper():
                    corrected = corrected.upper()
                elif written[0].isupper():
                    corrected = corrected.capitalize()
                replacements.append((m.start(), m.end(), corrected))
        if not replacements:
            return Normalized(text, text, [])
        replacements.sort()
        kept, last_end = [], -1
        for r in replacements:  # an abbreviation and a correction never overlap: the first wins
            if r[0] >= last_end:
                kept.append(r)
                last_end = r[1]
        replacements = kept
        parts, points, position, shift = [], [], 0, 0
        for start, end, new in replacements:
            parts.append(text[position:start])
            n_start = start + shift
            parts.append(new)
            points.append((n_start, n_start + len(new), start, end))
            shift += len(new) - (end - start)
            position = end
        parts.append(text[position:])
        return Normalized(text, "".join(parts), points)
