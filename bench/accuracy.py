"""The chart corpus scorecard (`make accuracy`): every chart of fhir_fixtures/charts/ through the
service, its cards compared with the cards a coder expects, and per rule: cards expected, produced,
right, wrong (produced but not expected) and missed; per class of reading problem: charts right.

  .venv/bin/python bench/accuracy.py                 # the scorecard
  .venv/bin/python bench/accuracy.py --chart ID ...  # one chart's cards, expected and produced
  .venv/bin/python bench/accuracy.py --json          # the scorecard as JSON
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("build_charts", ROOT / "fhir_fixtures" / "build_charts.py")
build_charts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_charts)


def signature(card: dict) -> tuple:
    payload = card["extension"]["spine-coding-cds"]
    return (payload["rule"], tuple(payload["proposedCodes"]), tuple(payload.get("missingDocumentation", [])))


def expected(chart: dict) -> Counter:
    return Counter((e["rule"], tuple(e.get("propose", [])), tuple(e.get("missing", []))) for e in chart["expect"])


def client():
    from service import create_app
    from service.services import SERVICES

    folder = tempfile.mkdtemp(prefix="spine-accuracy-")
    app = create_app({"database_url": f"sqlite:///{folder}/accuracy.sqlite3", "public_base_url": "https://cds.test"})
    paths = {s.hook: f"/cds-services/{s.id}" for s in SERVICES.values()}
    test_client = app.test_client()

    def answer(request: dict) -> dict:
        response = test_client.post(paths[request["hook"]], json=request)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.get_data(as_text=True)[:300]}")
        return response.get_json()

    return answer


def evaluate(charts: list[dict]) -> list[dict]:
    answer = client()
    results = []
    for chart in charts:
        response = answer(build_charts.build(chart))
        produced = Counter(signature(c) for c in response["cards"])
        want = expected(chart)
        results.append({"id": chart["id"], "classes": chart.get("classes", []), "expected": want,
                        "produced": produced, "right": produced == want,
                        "indicators": {signature(c): c["indicator"] for c in response["cards"]},
                        "summaries": [c["summary"] for c in response["cards"]]})
    return results


def findings_of(chart: dict):
    """The findings the service reads in a chart (for --findings)."""
    from service import create_app
    from service.findings import gather_findings
    from service.hook_request import parse_hook_request
    from service.record import build_record
    from service.deadline import Deadline
    from service.services import service_for_hook

    folder = tempfile.mkdtemp(prefix="spine-accuracy-")
    app = create_app({"database_url": f"sqlite:///{folder}/f.sqlite3", "public_base_url": "https://cds.test"})
    runtime = app.extensions["spine_cds"]
    request = build_charts.build(chart)
    parsed = parse_hook_request(request, service_for_hook(request["hook"]))
    record = build_record(parsed, None, Deadline(10))
    facts = gather_findings(record, runtime.reader, runtime.value_sets, runtime.terminology, Deadline(10))
    return facts.text


def scorecard(results: list[dict]) -> dict:
    rules: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        for sig, n in r["expected"].items():
            rules[sig[0]]["expected"] += n
        for sig, n in r["produced"].items():
            rules[sig[0]]["produced"] += n
            right = min(n, r["expected"].get(sig, 0))
            rules[sig[0]]["right"] += right
            rules[sig[0]]["wrong"] += n - right
        for sig, n in r["expected"].items():
            rules[sig[0]]["missed"] += max(0, n - r["produced"].get(sig, 0))
    classes: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        for name in r["classes"]:
            classes[name]["charts"] += 1
            classes[name]["right"] += r["right"]
    false_critical = sum(1 for r in results for sig, ind in r["indicators"].items()
                         if ind == "critical" and sig not in r["expected"])
    silent = [r for r in results if not r["expected"]]
    return {
        "charts": len(results), "right": sum(r["right"] for r in results),
        "silent_charts": len(silent), "silent_right": sum(r["right"] for r in silent),
        "false_critical_cards": false_critical,
        "rules": {k: dict(v) for k, v in sorted(rules.items())},
        "classes": {k: dict(v) for k, v in sorted(classes.items())},
        "wrong_charts": [r["id"] for r in results if not r["right"]],
    }


def _print(card: dict) -> None:
    print(f"chart corpus: {card['right']} of {card['charts']} charts right "
          f"({card['silent_right']} of {card['silent_charts']} silent charts silent); "
          f"false critical cards: {card['false_critical_cards']}")
    print(f"\n{'rule':26} {'expected':>8} {'produced':>8} {'right':>6} {'wrong':>6} {'missed':>6}")
    for rule, c in card["rules"].items():
        print(f"{rule:26} {c.get('expected', 0):>8} {c.get('produced', 0):>8} {c.get('right', 0):>6} "
              f"{c.get('wrong', 0):>6} {c.get('missed', 0):>6}")
    print(f"\n{'class':20} {'charts':>6} {'right':>6}")
    for name, c in card["classes"].items():
        print(f"{name:20} {c['charts']:>6} {c['right']:>6}")
    if card["wrong_charts"]:
        print("\nwrong: " + ", ".join(card["wrong_charts"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", nargs="*", help="show these charts' cards")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--findings", action="store_true", help="with --chart: what the reader read in each chart")
    args = parser.parse_args(argv)
    charts = build_charts.load_all()
    if args.chart:
        wanted = set(args.chart)
        charts = [c for c in charts if c["id"] in wanted or str(build_charts.CHARTS / (c["id"] + ".toml")) in wanted]
    results = evaluate(charts)
    if args.chart:
        for r in results:
            print(f"{r['id']}: {'right' if r['right'] else 'WRONG'}")
            print("  expected: " + (", ".join(map(str, sorted(r["expected"]))) or "no cards"))
            print("  produced: " + (", ".join(f"{s} [{r['indicators'][s]}]" for s in sorted(r["produced"])) or "no cards"))
            for summary in r["summaries"]:
                print("    - " + summary)
        if args.findings:
            for chart in charts:
                print(f"\n== {chart['id']}")
                for f in findings_of(chart):
                    print(f"  {f.kind:20} {f.assertion:10} {str(f.region):24} {str(f.level):14} "
                          f"{','.join(sorted(f.modifiers)) or '-':18} {','.join(sorted(f.linked)) or '-':14} "
                          f"{f.section:16} {'prior ' if f.prior else ''}{f.evidence.reference}: "
                          f"{' '.join(f.evidence.text.split())[:90]}")
        return 0
    card = scorecard(results)
    if args.json:
        print(json.dumps(card, indent=2))
    else:
        _print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
