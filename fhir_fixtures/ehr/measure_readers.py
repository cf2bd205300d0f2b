"""What reading an RTF or PDF attachment costs: ordinary documents and hostile ones.

    .venv/bin/python fhir_fixtures/ehr/measure_readers.py               # the service's readers
    .venv/bin/python fhir_fixtures/ehr/measure_readers.py --candidates [PYTHON]  # and the libraries compared

(PYTHON: an interpreter that has the candidates installed, e.g. a scratch venv with pypdf, pypdfium2,
pdfminer.six and striprtf; the project's own by default.)

Each case runs in its own process (time after imports, the best of three runs, and the peak
memory above the process's start, VmHWM): the service's reader (`service.clinical_text.read_attachment`,
its caps, and with a 1 s deadline as a hook call has), and with --candidates the bare libraries
compared when choosing (pypdf, pypdfium2, pdfminer.six, striprtf: whichever are installed), killed at
20 s. The hostile shapes are those of tests/test_ehr_data.py (`hostile_cases`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import documents  # noqa: E402


def report_text(lines: int) -> str:
    head = ["MRI CERVICAL SPINE WITHOUT CONTRAST", "", "INDICATION: Suboccipital neck pain for 6 months.", "", "FINDINGS:"]
    body = []
    for i in range(lines):
        body.append(f"C{i % 7 + 1}-C{i % 7 + 2}: Mild disc bulge without canal stenosis, series {i}. No fracture.")
        if i % 12 == 11:
            body.append("")
    return "\n".join(head + body + ["", "IMPRESSION:", "1. Grade I anterolisthesis of C1 on C2."])


def _one_page(stream: bytes) -> bytes:
    return documents._assemble([
        b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"])


def _bomb(size: int) -> bytes:
    c = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    parts = [c.compress(b"BT /F1 10 Tf 72 740 Td (")] + [c.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts + [c.compress(b") Tj ET\n"), c.flush()])


def hostile_cases() -> dict[str, tuple[str, bytes]]:
    """name → (content type, bytes): ordinary documents first, then hostile ones."""
    ops = lambda n: b"BT /F1 10 Tf 72 740 Td\n" + b"(C1 on C2 slip) Tj 0 -1 Td\n" * n + b"ET\n"  # noqa: E731
    pdf, rtf = "application/pdf", "text/rtf"
    three = documents.text_pdf(documents.paginate(report_text(140)))
    return {
        "pdf_3_pages": (pdf, three),
        "rtf_20KB": (rtf, documents.rtf(report_text(230))),
        "pdf_2000_pages": (pdf, documents.text_pdf([[f"Line of page {i}."] for i in range(2000)])),
        "pdf_40_dense_pages": (pdf, documents.text_pdf(documents.paginate(report_text(52 * 40 * 12 // 13), 52))),
        "pdf_300k_operators_one_page": (pdf, _one_page(zlib.compress(ops(300_000), 9))),
        "pdf_60KB_content_one_page": (pdf, _one_page(zlib.compress(ops(2_300), 9))),
        "pdf_flate_bomb_1GB": (pdf, _one_page(_bomb(1 << 30))),
        "pdf_nested_arrays_200k": (pdf, _one_page(zlib.compress(b"BT " + b"[" * 200_000 + b"]" * 200_000 + b" TJ ET"))),
        "pdf_truncated": (pdf, three[: len(three) // 2]),
        "pdf_garbage": (pdf, b"%PDF-1.7\n" + bytes((i * 7919) % 251 for i in range(200_000))),
        "pdf_page_tree_cycle": (pdf, documents._assemble([b"<< /Type /Catalog /Pages 2 0 R >>",
                                                          b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
                                                          b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>"])),
        "pdf_scanned_3_pages": (pdf, documents.scanned_pdf(3)),
        "rtf_1MB_text": (rtf, documents.rtf(report_text(12_000))),
        "rtf_deep_groups_1MB": (rtf, b"{\\rtf1 " + b"{" * 500_000 + b"x" + b"}" * 500_000),
        "rtf_unclosed_font_table_1MB": (rtf, b"{\\rtf1{\\fonttbl{\\f0 " + b"\\f1 a" * 250_000),
        "rtf_field_flood_1MB": (rtf, b"{\\rtf1 " + b"{\\field{\\*\\fldinst{HYPERLINK \"x" * 30_000 + b"}"),
        "rtf_hex_flood_1MB": (rtf, b"{\\rtf1\\ansi " + b"\\'e9" * 250_000 + b"}"),
        "rtf_picture_3MB": (rtf, b"{\\rtf1\\ansi Before.\\par{\\pict\\pngblip " + b"89504e47" * 375_000 + b"}After.\\par}"),
        "rtf_bad_unicode": (rtf, b"{\\rtf1 \\u99999999? \\'zz \\u-99999 x}"),
    }


_SERVICE = r'''
import sys, time
sys.path.insert(0, sys.argv[3])
from service.clinical_text import read_attachment
from service.deadline import Deadline, DeadlineExceeded
data = open(sys.argv[2], "rb").read()
def hwm(): return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
base, best, result = hwm(), None, None
for _ in range(3):
    t = time.perf_counter()
    reading = read_attachment(sys.argv[1], data)
    el = (time.perf_counter() - t) * 1000
    best = el if best is None else min(best, el)
    result = f"{len(reading.text or '')} chars; " + ("; ".join(reading.problems) or "no problem")
t = time.perf_counter()
try:
    read_attachment(sys.argv[1], data, Deadline(1.0))
    within = "read"
except DeadlineExceeded:
    within = "deadline"
deadline_ms = (time.perf_counter() - t) * 1000
print(f"{best:.1f} ms|{hwm() - base} MB|{result}|{within} after {deadline_ms:.0f} ms")
'''

_CANDIDATE = r'''
import io, sys, time
lib, path = sys.argv[1:3]
data = open(path, "rb").read()
def hwm(): return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
if lib == "pypdf": import pypdf
elif lib == "pypdfium2": import pypdfium2 as pdfium
elif lib == "pdfminer.six": from pdfminer.high_level import extract_text
else: from striprtf.striprtf import rtf_to_text
base = hwm()
t = time.perf_counter()
try:
    if lib == "pypdf":
        text = "".join(p.extract_text() or "" for p in pypdf.PdfReader(io.BytesIO(data)).pages[:50])
    elif lib == "pypdfium2":
        pdf = pdfium.PdfDocument(data)
        text = "".join(pdf[i].get_textpage().get_text_range() for i in range(min(len(pdf), 50)))
    elif lib == "pdfminer.six":
        text = extract_text(io.BytesIO(data), maxpages=50)
    else:
        text = rtf_to_text(data.decode("latin-1"), errors="replace")
    result = f"{len(text)} chars"
except BaseException as exc:
    result = f"raised {type(exc).__name__}"
print(f"{(time.perf_counter() - t) * 1000:.1f} ms|{hwm() - base} MB|{result}")
'''


def _run(code: str, args: list[str], timeout: float = 20, python: str = sys.executable) -> str:
    try:
        done = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"killed at {timeout:.0f} s"
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"died (exit {done.returncode})"


def main(argv: list[str]) -> int:
    candidates = "--candidates" in argv
    python = sys.executable
    if candidates and argv.index("--candidates") + 1 < len(argv):
        python = argv[argv.index("--candidates") + 1]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (content_type, data) in hostile_cases().items():
            path = os.path.join(folder, name)
            Path(path).write_bytes(data)
            row = {"bytes": len(data), "service": _run(_SERVICE, [content_type, path, str(ROOT)])}
            if candidates:
                libs = ["striprtf"] if content_type == "text/rtf" else ["pypdf", "pypdfium2", "pdfminer.six"]
                for lib in libs:
                    row[lib] = _run(_CANDIDATE, [lib, path], python=python)
            results[name] = row
            print(f"{name:30} {len(data):>9} B  " + "  ".join(f"{k}: {v}" for k, v in row.items() if k != "bytes"),
                  flush=True)
    out = ROOT / "test-artifacts" / "ehr-readers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
