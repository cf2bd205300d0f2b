"""Documents as EHRs export them, written byte by byte: no library, so the fixtures can be rebuilt
anywhere and say exactly what they hold.

- `text_pdf(pages)`: a PDF 1.4 with a text layer, as a report writer makes it: Helvetica in
  WinAnsiEncoding, one text object a page (`Td`/`T*` line moves, a blank line a double move),
  Flate-compressed content streams, a page footer, an Info dictionary and a byte-exact xref table.
- `scanned_pdf(pages)`: what a scanner makes: each page one grey image (Flate), no text at all.
- `rtf(text)`: RTF 1.9 as WordPad / Epic's RTF writer exports a note: font and colour tables, a
  generator group, `\\pard` paragraph formatting, a bold first line, `\\par` line ends, `\\'hh` escapes for
  Windows-1252 characters and `\\uN?` for the others.

Used by build_ehr.py (the fixtures) and by tests/test_ehr_data.py (hostile variants).
"""
from __future__ import annotations

import zlib

LINES_PER_PAGE = 52
_LEADING = 13


def _pdf_string(line: str) -> bytes:
    out = bytearray(b"(")
    for byte in line.encode("cp1252", errors="replace"):
        if byte in b"()\\":
            out += b"\\" + bytes([byte])
        elif byte < 32 or byte > 126:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b")")


def _page_content(lines: list[str], footer: str | None) -> bytes:
    ops = [b"BT", b"/F1 10 Tf", b"%d TL" % _LEADING, b"72 740 Td"]
    pending = 0  # blank lines before the next line: one longer move, as report writers do
    first = True
    for line in lines:
        if not line.strip():
            pending += 1
            continue
        if not first:
            ops.append(b"0 %d Td" % (-_LEADING * (pending + 1)))
        ops.append(_pdf_string(line) + b" Tj")
        first, pending = False, 0
    ops.append(b"ET")
    if footer:
        ops += [b"BT", b"/F1 8 Tf", b"72 40 Td", _pdf_string(footer) + b" Tj", b"ET"]
    return b"\n".join(ops) + b"\n"


def _assemble(objects: list[bytes], info: bytes | None = None) -> bytes:
    """Objects 1..n (1 is the catalog), an xref table with real offsets, the trailer."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objects) + 1)
    if info:
        trailer += b" /Info " + info
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"", compress: bool = True) -> bytes:
    if compress:
        data = zlib.compress(data, 9)
        extra += b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def paginate(text: str, lines_per_page: int = LINES_PER_PAGE) -> list[list[str]]:
    """Lines into pages, a page break only at a blank line (a report writer keeps paragraphs)."""
    pages, page = [], []
    for line in text.split("\n"):
        if len(page) >= lines_per_page and not line.strip():
            pages.append(page)
            page = []
            continue
        page.append(line)
    if page:
        pages.append(page)
    return pages


def text_pdf(pages: list[list[str]], title: str = "Report", footer: bool = True, compress: bool = True) -> bytes:
    """A text-layer PDF, one list of lines a page."""
    n = len(pages)
    # 1 catalog, 2 pages, 3 font, 4 info, then (page, content) pairs
    kids = [5 + 2 * i for i in range(n)]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % n,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Title " + _pdf_string(title) + b" /Producer (spine-coding-cds fixtures) /CreationDate (D:20261120101500-05'00') >>",
    ]
    for i, lines in enumerate(pages):
        content = _page_content(lines, f"Page {i + 1} of {n}" if footer else None)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (6 + 2 * i))
        objects.append(_stream(content, compress=compress))
    return _assemble(objects, b"4 0 R")


def scanned_pdf(pages: int = 1, width: int = 306, height: int = 396) -> bytes:
    """An image-only PDF: each page one 8-bit grey image of 'scanned' rows, no text operator."""
    kids = [3 + 3 * i for i in range(pages)]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % pages,
    ]
    for i in range(pages):
        rows = bytearray()
        for y in range(height):
            inked = (y // 6) % 3 == 0 and 40 < y < height - 40
            rows += bytes(((x * 7 + y * 3 + i) % 50 if inked and 30 < x < width - 30 and (x // 9) % 4 else 245)
                          for x in range(width))
        content = b"q 612 0 0 792 0 0 cm /Im1 Do Q\n"
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im1 %d 0 R >> >> "
                       b"/Contents %d 0 R >>" % (5 + 3 * i, 4 + 3 * i))
        objects.append(_stream(content))
        objects.append(_stream(bytes(rows), b" /Type /XObject /Subtype /Image /Width %d /Height %d "
                                            b"/ColorSpace /DeviceGray /BitsPerComponent 8" % (width, height)))
    return _assemble(objects)


def _rtf_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\\{}":
            out.append("\\" + ch)
        elif ord(ch) < 128:
            out.append(ch)
        else:
            try:
                out.append("\\'%02x" % ch.encode("cp1252")[0])
            except UnicodeEncodeError:
                code = ord(ch)
                out.append("\\u%d?" % (code - 65536 if code > 32767 else code))
    return "".join(out)


def rtf(text: str) -> bytes:
    """A note as an EHR's RTF writer exports it (Windows-1252, CRLF between control lines)."""
    lines = text.split("\n")
    head = ("{\\rtf1\\ansi\\ansicpg1252\\deff0\\nouicompat\\deflang1033"
            "{\\fonttbl{\\f0\\fswiss\\fcharset0 Arial;}{\\f1\\fmodern\\fcharset0 Courier New;}{\\f2\\fnil\\fcharset2 Symbol;}}\r\n"
            "{\\colortbl ;\\red0\\green0\\blue0;\\red31\\green73\\blue125;}\r\n"
            "{\\*\\generator Riched20 10.0.19041}{\\info{\\author Clinic}{\\creatim\\yr2026\\mo11\\dy20}}\\viewkind4\\uc1 \r\n"
            "\\pard\\sa0\\sl240\\slmult1\\cf1\\f0\\fs20\\lang9 ")
    body = []
    for n, line in enumerate(lines):
        escaped = _rtf_escape(line)
        if n == 0 and escaped:
            escaped = "{\\b\\cf2 " + escaped + "}"
        body.append(escaped + "\\par\r\n")
    return (head + "".join(body) + "}\r\n").encode("ascii")
