"""Chart text is data, never markup: the one place where anything from a record is escaped for the
medium it enters (markdown of a card, an HTML page, a CSV cell, a log line).

- `markdown(value)`: a value shown as text inside CommonMark / GitHub-flavoured markdown (a card's
  detail, summary and labels). Every character that can start markup is backslash-escaped (links,
  images, raw HTML, code spans, emphasis, tables, strikethrough), block markers at the start of the
  value (`#`, `>`, `-`, `+`, `=`, `1.`) too, URL and e-mail autolinks (`scheme://`, `www.`, `a@b.c`) are broken, and
  line breaks and other control characters become spaces, so a value can neither open a block nor
  end the line it is on. `Markdown` marks a string that is already markdown (the product's wording,
  or a value escaped once): it is not escaped again.
- `shorten_markdown(text, limit)`: escaped markdown cut under a length, never inside an escape.
- `html_text(value)`: HTML-escaped text (quotes too), and `{`/`}` so that data never reads as
  template syntax on a page.
- `csv_cell(value)`: a cell a spreadsheet will not run: one starting with `=`, `+`, `-`, `@`, tab or
  CR gets a leading `'` (OWASP, CSV injection).
- `log_value(value)` and `EscapingFormatter`: control characters (C0, DEL, C1, the Unicode line and
  paragraph separators) and backslashes escaped in everything logged, so that no value can forge a
  log line or send terminal escapes.
"""
from __future__ import annotations

import html
import logging
import re

# ------------------------------------------------------------------ markdown

# Characters that can open or close inline or block markup anywhere in a line (CommonMark and GFM):
# \ escapes, ` code spans, * _ emphasis, [ ] links and images (so `](` can never form), < > raw HTML
# and autolinks, # headings, | tables, ~ strikethrough, @ e-mail autolinks (GFM's extended autolinks
# `user@host.example` and `mailto:`/`xmpp:`; entities such as &lt; only ever decode to text).
_MD_ANYWHERE = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|~@"})
# Control characters, DEL, C1, NEL and the Unicode line/paragraph separators: never inside a value.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LEADING_MARKER = re.compile(r"^(\s*)([-+=])")            # list item, setext underline
_LEADING_ORDERED = re.compile(r"^(\s*\d{1,9})([.)])")       # ordered list item
_URL_SCHEME = re.compile(r"(?i)(?<=[a-z0-9])(:)(?=//)")     # http://… autolinks (GFM)
_WWW = re.compile(r"(?i)\b(www)\.")                         # www.… autolinks (GFM)


class Markdown(str):
    """A string that is already markdown (the product's wording, or chart text escaped once):
    `markdown()` returns it unchanged, so nothing is escaped twice."""

    __slots__ = ()


def markdown(value) -> Markdown:
    """`value` (anything; str() of it) as markdown that renders as exactly that text, on one line."""
    if isinstance(value, Markdown):
        return value
    text = _CONTROL.sub(" ", str(value))
    text = text.translate(_MD_ANYWHERE)
    text = _URL_SCHEME.sub(r"\\:", text)
    text = _WWW.sub(r"\1\\.", text)
    text = _LEADING_MARKER.sub(r"\1\\\2", text, count=1)
    text = _LEADING_ORDERED.sub(r"\1\\\2", text, count=1)
    return Markdown(text)


def shorten_markdown(text: str, limit: int, ellipsis: str = "…") -> str:
    """`text` cut to fewer than `limit` characters (with the ellipsis), never between a backslash
    and the character it escapes; unchanged when it is already short enough."""
    if len(text) < limit:
        return text
    cut = text[: max(0, limit - 1 - len(ellipsis))]
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:
        cut = cut[:-1]  # a lone backslash would escape the ellipsis
    return cut.rstrip() + ellipsis


# ------------------------------------------------------------------ HTML

def html_text(value, braces: bool = True) -> str:
    """HTML-escaped text (`& < > " '`); with `braces`, `{` and `}` too, so that data (chart text)
    can never read as template syntax on a page."""
    out = html.escape(str(value), quote=True)
    return out.replace("{", "&#123;").replace("}", "&#125;") if braces else out


# ------------------------------------------------------------------ CSV

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: a string starting with a formula character gets a
    leading `'` (OWASP CSV injection guidance). Numbers and None are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_row(values):
    """Every cell of a row through `csv_cell` (a list for csv.writer, a dict for csv.DictWriter)."""
    if isinstance(values, dict):
        return {k: csv_cell(v) for k, v in values.items()}
    return [csv_cell(v) for v in values]


# ------------------------------------------------------------------ logs

_LOG_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LOG_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _log_escape(match: re.Match) -> str:
    c = match.group(0)
    return _LOG_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def log_value(value) -> str:
    """str(value) with backslashes and control characters escaped (\\n, \\r, \\t, \\x1b, \\u2028):
    one log line stays one line, and no escape sequence reaches a terminal."""
    return _LOG_UNSAFE.sub(_log_escape, str(value))


class LogLines(str):
    """Text of ours that is several lines on purpose (an exception's frames, logs.safe_exception):
    the formatter escapes each line and keeps the line breaks. Never built from request data."""

    __slots__ = ()


def _log_arg(value):
    if isinstance(value, LogLines):
        return "\n".join(log_value(line) for line in value.split("\n"))
    if value is None or isinstance(value, (bool, int, float)):
        return value  # %d / %.1f keep working
    return log_value(value)


class EscapingFormatter(logging.Formatter):
    """A Formatter that escapes, by `log_value`, every argument of a message (resource ids, paths,
    reasons, anything from a request) and the message itself, before it is formatted: no value can
    break the line it is logged on. `LogLines` arguments keep their own line breaks."""

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "_spine_escaped", False):
            args = record.args
            if isinstance(args, dict):
                args = {k: _log_arg(v) for k, v in args.items()}
            elif args:
                args = tuple(_log_arg(v) for v in args)
            msg = record.msg
            msg = msg if isinstance(msg, LogLines) else log_value(msg)
            # A copy: other handlers (pytest's caplog, gunicorn's) see the record as it was logged.
            record = logging.makeLogRecord({**record.__dict__, "msg": msg, "args": args or (),
                                            "_spine_escaped": True})
        return super().format(record)
