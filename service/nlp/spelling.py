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


class SpellingLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "spelling.toml"):
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        name = Path(path).name
        unknown = set(raw) - {"vocabulary", "protected", "abbreviations", "misspellings"}
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
