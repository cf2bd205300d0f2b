"""The audit's outputs, the same whichever engine ran it: `audit.csv` and `audit.html`.

Rows are sorted (patient, encounter, rule, then the other columns), so two runs over the same export
write the same bytes whatever the engine, the number of workers or the order patients finished in.
Over PART_ROWS rows (or with `--partitioned`) the CSV is a folder, `audit/part-00000.csv` ...,
PART_ROWS rows a file, each with the header. Every cell goes through service/escaping.py (no
spreadsheet formulas); the page escapes everything it quotes.
"""
from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

from ..escaping import csv_row, html_text

COLUMNS = ["patient", "encounter", "rule", "kind", "indicator", "summary", "current_codes", "proposed_codes",
           "missing_documentation", "evidence"]
NOT_EVALUATED = "(not evaluated)"
PART_ROWS = 1_000_000  # rows of one part file, and the most rows written as one audit.csv
EXAMPLES = 3


def row_key(row: dict) -> tuple:
    return tuple(str(row.get(k, "")) for k in COLUMNS)


def _unread_order(lines: list[dict], patients: list[dict]) -> list[dict]:
    """The lines not read (`file:line`) in the order the export is read, then the patients by id."""
    def line_key(entry):
        name, _, line = entry["patient"].rpartition(":")
        return tuple(name.split("/")), int(line) if line.isdigit() else 0
    return sorted(lines, key=line_key) + sorted(patients, key=lambda u: (u["patient"], u["stage"], u["error"]))


def write(out: Path, rows: list[dict], unread_lines: list[dict], unread_patients: list[dict], *, patients: int, resources: int, engine: str,
          workers: int, seconds: float, partitioned: bool = False, part_rows: int = PART_ROWS) -> dict:
    """Writes audit.csv (or audit/part-*.csv) and audit.html into `out`; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=row_key)
    unread = _unread_order(unread_lines, unread_patients)
    counts_rule: Counter = Counter()
    counts_kind: Counter = Counter()
    examples: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["rule"] != NOT_EVALUATED:
            counts_rule[row["rule"]] += 1
            counts_kind[row.get("kind", "")] += 1
            if len(examples[row["rule"]]) < EXAMPLES:
                examples[row["rule"]].append(row)
    folder = out / "audit"
    if partitioned or len(rows) > part_rows:
        (out / "audit.csv").unlink(missing_ok=True)  # a single file of an earlier run would be read as this one
        folder.mkdir(exist_ok=True)
        for old in folder.glob("part-*.csv"):
            old.unlink()
        parts = max(1, -(-len(rows) // part_rows))
        for n in range(parts):
            _write_csv(folder / f"part-{n:05d}.csv", rows[n * part_rows:(n + 1) * part_rows])
        written = {"csv": "audit/part-*.csv", "csv_parts": parts}
    else:
        if folder.is_dir():
            for old in folder.glob("part-*.csv"):
                old.unlink()
        _write_csv(out / "audit.csv", rows)
        written = {"csv": "audit.csv", "csv_parts": 0}
    summary = {"patients": patients, "resources": resources, "cards": sum(counts_rule.values()),
               "by_rule": dict(sorted(counts_rule.items())), "by_kind": dict(sorted(counts_kind.items())),
               "rows": len(rows), **written, "unreadable": len(unread), "unreadable_patients": unread,
               "engine": engine, "workers": workers, "seconds": round(seconds, 2)}
    (out / "audit.html").write_text(_html(summary, examples))
    return summary


def _write_csv(file: Path, rows: list[dict]) -> None:
    with open(file, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(csv_row([row.get(k, "") for k in COLUMNS]) for row in rows)  # no formulas


def _html(summary: dict, examples: dict[str, list[dict]]) -> str:
    e = html_text
    rows = "".join(f"<tr><td>{e(rule)}</td><td>{n}</td></tr>" for rule, n in
                   sorted(summary["by_rule"].items(), key=lambda kv: (-kv[1], kv[0])))
    kinds = "".join(f"<tr><td>{e(k)}</td><td>{n}</td></tr>" for k, n in sorted(summary["by_kind"].items()))
    unread = "".join(f"<tr><td>{e(u['patient'])}</td><td>{e(u['stage'])}</td><td>{e(u['error'])}</td></tr>"
                     for u in summary.get("unreadable_patients", []))
    unread = (f"<h2>Not read ({summary.get('unreadable', 0)})</h2><p>Data that raised an error while it was read or "
              "evaluated, or whose worker process died: skipped, the audit went on.</p><table><tr><th>patient (or "
              f"file:line)</th><th>stage</th><th>error</th></tr>{unread}</table>") if unread else ""
    if summary["csv_parts"]:
        where = (f"The cards are in <code>audit/part-00000.csv</code> to <code>audit/part-{summary['csv_parts'] - 1:05d}"
                 f".csv</code> ({summary['csv_parts']} part files of at most {PART_ROWS:,} rows, each with the header, "
                 "in order).")
    else:
        where = "The cards are in <code>audit.csv</code>."
    blocks = []
    for rule, items in sorted(examples.items()):
        lis = "".join(f"<li><b>{e(i['summary'])}</b><br><small>patient {e(i['patient'])}, encounter "
                      f"{e(i['encounter'])}</small><br><q>{e(i['evidence'])}</q></li>" for i in items)
        blocks.append(f"<h3>{e(rule)}</h3><ul>{lis}</ul>")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Spine Coding CDS audit</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
td,th{{border-bottom:1px solid #dde;padding:.3rem .6rem;text-align:left}}table{{border-collapse:collapse}}</style></head><body>
<h1>Audit</h1><p>{summary['patients']} patients, {summary['resources']} resources, {summary['cards']} cards;
{summary.get('unreadable', 0)} not read. {where}</p>
<p class="run">Run by the {e(summary['engine'])} engine on {summary['workers']} workers in {summary['seconds']} s.</p>{unread}
<h2>Cards per rule</h2><table><tr><th>rule</th><th>cards</th></tr>{rows}</table>
<h2>Cards per kind</h2><table><tr><th>kind</th><th>cards</th></tr>{kinds}</table>
<h2>Examples with their evidence</h2>{''.join(blocks)}</body></html>"""
