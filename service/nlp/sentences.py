"""Sentence splitting for clinical text: line breaks, and . ! ? not inside abbreviations or numbers."""
from __future__ import annotations

import re

_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "fig", "st", "no", "pt", "etc", "hx"}
# A full stop that ends a sentence: followed by space and not part of a number (3.5 mm) or level.
_BOUNDARY = re.compile(r"[.!?]+(?=\s)|\n\s*")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Spans (start, end) of the sentences of `text`, whitespace trimmed, empty ones dropped."""
    spans, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if match.group().startswith((".", "!", "?")) and _is_abbreviation(text, match.start()):
            continue
        spans.append((start, match.end() if match.group()[0] in ".!?" else match.start()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def _is_abbreviation(text: str, dot: int) -> bool:
    word_start = dot
    while word_start > 0 and (text[word_start - 1].isalpha() or text[word_start - 1] == "."):
        word_start -= 1
    word = text[word_start:dot].lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and word not in "ai")
