"""The text of reports and notes: attachments decoded, markup stripped.

Text comes from `DiagnosticReport.presentedForm` and `DocumentReference.content.attachment`
(base64 `data`, or a `url` to a Binary on the FHIR server), as text/plain or text/html.
Other content types (PDF, images) are reported as unread, not guessed at.
"""
from __future__ import annotations

import base64
import binascii
import re
from html.parser import HTMLParser

READABLE_TYPES = ("text/plain", "text/html", "application/xhtml+xml")


class _TextOfHtml(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "td", "th"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n", text).strip()


def media_type(content_type: str | None) -> tuple[str, str]:
    """('text/html', 'utf-8') from 'text/html; charset=UTF-8'."""
    if not content_type:
        return "", "utf-8"
    main, _, params = content_type.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    return main.strip().lower(), charset


def decode_text(content_type: str | None, data: bytes) -> str | None:
    """The readable text of an attachment's bytes, or None when its type is not text."""
    kind, charset = media_type(content_type)
    if kind not in READABLE_TYPES:
        return None
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = data.decode("utf-8", errors="replace")
    if kind == "text/plain":
        return text.strip()
    return html_to_text(text)


def decode_base64(value: str) -> bytes | None:
    """Strict base64: invalid data is reported, not silently turned into empty text."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # tolerate line breaks inside the base64, as many EHRs send it
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
