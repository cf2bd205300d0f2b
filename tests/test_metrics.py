"""GET /metrics (issue 13): Prometheus metrics that add up to /stats, across gunicorn workers too.

In process (the Flask test client) each app has its own registry; served (`spine-cds serve`, 2 gevent
workers) the workers write their values to files of one directory that /metrics merges, so whichever
worker answers the scrape, the totals are every worker's, a worker restarted included.
"""
from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy.exc
from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from service.rules import load_rules
from service.rules.resolve import MADE_HERE
from service.services import SERVICES

from .served import Gunicorn
from .support import FakeFhirServer, fresh, load_fixture
from .test_jwt import BASE, ISS, Client

ENCOUNTER_SIGN = "/cds-services/spine-coding-encounter-sign"
ORDER_SIGN = "/cds-services/spine-coding-order-sign"
FIXTURES = {  # request → its service; each gets cards or none, as noted
    "order-sign_c1-c2-slip_coded-m43.10.json": "spine-coding-order-sign",                # ORD-DIAGNOSIS
    "encounter-sign_c1-c2-slip_coded-m43.10.json": "spine-coding-encounter-sign",        # SPL-SPECIFICITY
    "encounter-discharge_c1-c2-slip_coded-m43.10.json": "spine-coding-encounter-discharge",  # SPL-SPECIFICITY
    "vignettes/well-documented-record-is-silent.json": "spine-coding-order-sign",        # no card
    "vignettes/rad-cause-fires-stenosis.json": "spine-coding-encounter-sign",            # RAD-CAUSE, silent here
    "vignettes/ord-fusion-docs-fires-nothing-documented.json": "spine-coding-order-sign",  # ORD-FUSION-DOCS
}
SILENT_RULE = "RAD-CAUSE"
OVERRIDE = {"reason": {"code": "provider-will-be-queried", "system": "urn:spine-coding-cds:override-reason"}}


# ------------------------------------------------------------------ reading a scrape
def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(scraped: list, name: str, **labels) -> float:
    return sum(s.value for s in scraped if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def by(scraped: list, name: str, label: str, **labels) -> dict:
    out: Counter = Counter()
    for s in scraped:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()) and s.value:
            out[s.labels[label]] += int(s.value)
    return dict(out)


def stats_view(scraped: list) -> dict:
    """What /stats reports, computed from a scrape."""
    stored = int(total(scraped, "spine_cds_feedback_results_total", result="stored"))
    return {"cardsByRule": by(scraped, "spine_cds_cards_total", "rule", state="shown"),
            "silentCardsByRule": by(scraped, "spine_cds_cards_total", "rule", state="silent"),
            "suppressedCardsByRule": by(scraped, "spine_cds_cards_total", "rule", state="suppressed"),
            "hookTimeouts": int(total(scraped, "spine_cds_hook_deadline_exceeded_total")),
            "feedbackStored": stored}


def of_stats(stats: dict) -> dict:
    return {k: stats[k] for k in ("cardsByRule", "silentCardsByRule", "suppressedCardsByRule", "hookTimeouts")} | {
        "feedbackStored": sum(stats["feedback"].values())}


def _feedback_item(card: dict, outcome: str) -> dict:
    item = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": "2026-11-21T10:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    else:
        item["overrideReason"] = OVERRIDE
    return item


# ------------------------------------------------------------------ in process
def _post(client, path, body):
    response = client.post(path, json=body)
    response.close()  # the issued cards are written on close, as after a served answer
    return response


def test_the_counters_add_up_to_stats_in_process(make_app):
    app = make_app(silent_rules=SILENT_RULE)
    client = app.test_client()
    shown = []
    for name, service in FIXTURES.items():
        for _ in range(2):
            shown += _post(client, f"/cds-services/{service}", fresh(load_fixture(name))).get_json()["cards"]
    order_card = next(c for c in shown if c["extension"]["spine-coding-cds"]["rule"] == "ORD-DIAGNOSIS")
    fusion_card = next(c for c in shown if c["extension"]["spine-coding-cds"]["rule"] == "ORD-FUSION-DOCS")
    items = [_feedback_item(order_card, "overridden"), _feedback_item(fusion_card, "accepted"),
             _feedback_item(order_card, "overridden"),  # the same again in one request: a duplicate
             {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z"}]
    answer = client.post(ORDER_SIGN + "/feedback", json={"feedback": items})
    assert answer.status_code == 200 and answer.get_json()["duplicates"] == 1
    # now suppressed: the order's card, for the same patient, order and rule in this encounter
    again = _post(client, ORDER_SIGN, fresh(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")))
    assert again.status_code == 200
    assert _post(client, "/cds-services/nope", {}).status_code == 404
    assert client.post(ENCOUNTER_SIGN, data="{", content_type="application/json").status_code == 400

    scraped = samples(client.get("/metrics").get_data(as_text=True))
    stats = client.get("/stats").get_json()
    assert stats_view(scraped) == of_stats(stats)
    assert stats["suppressedCardsByRule"] == {"ORD-DIAGNOSIS": 1} and stats["silentCardsByRule"] == {SILENT_RULE: 2}
    items_by = by(scraped, "spine_cds_feedback_items_total", "outcome")
    duplicates = total(scraped, "spine_cds_feedback_results_total", result="duplicate")
    assert items_by == {"overridden": 3, "accepted": 1} and duplicates == 1
    assert stats["feedback"] == {"overridden": items_by["overridden"] - duplicates, "accepted": 1}
    assert total(scraped, "spine_cds_feedback_unknown_cards_total") == 1
    calls = {(s.labels["service"], s.labels["outcome"]): s.value for s in scraped
             if s.name == "spine_cds_hook_calls_total" and s.value}
    assert calls == {("spine-coding-order-sign", "answered"): 7, ("spine-coding-encounter-sign", "answered"): 4,
                     ("spine-coding-encounter-discharge", "answered"): 2, ("other", "client_error"): 1,
                     ("spine-coding-encounter-sign", "client_error"): 1}
    assert total(scraped, "spine_cds_hook_duration_seconds_count") == sum(calls.values())
    info = next(s for s in scraped if s.name == "spine_cds_info")
    assert info.labels["code_set"] == app.extensions["spine_cds"].release.title and info.labels["version"]
    assert not [s for s in scraped if s.name.endswith("_created")]  # as in multiprocess mode


def test_deadline_hits_are_counted_as_stats_counts_timeouts(make_app):
    app = make_app(hook_deadline=0.000001)  # every call stops at the deadline
    client = app.test_client()
    for _ in range(3):
        assert _post(client, ENCOUNTER_SIGN, fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))
                     ).get_json() == {"cards": []}
    scraped = samples(client.get("/metrics").get_data(as_text=True))
    assert client.get("/stats").get_json()["hookTimeouts"] == 3
    assert total(scraped, "spine_cds_hook_deadline_exceeded_total", service="spine-coding-encounter-sign") == 3
    assert total(scraped, "spine_cds_hook_calls_total", outcome="deadline") == 3
    assert total(scraped, "spine_cds_cards_total") == 0
    # the deadline is a bucket bound of the latency histogram
    assert {s.labels["le"] for s in scraped if s.name == "spine_cds_hook_duration_seconds_bucket"} >= {"1e-06", "1.0"}


def test_fhir_fetch_failures_by_kind(make_app, fhir_server):
    fhir_server.route("DiagnosticReport", {"resourceType": "OperationOutcome", "issue": []}, status=500)
    fhir_server.route("DocumentReference", {"resourceType": "Patient"})
    fhir_server.route("Procedure", b"{not json")
    app = make_app(fhir_allowlist=[fhir_server.base])
    client = app.test_client()
    body = fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))
    for key in ("diagnosticReports", "documentReferences", "procedures"):
        del body["prefetch"][key]
    body["fhirServer"] = fhir_server.base
    assert _post(client, ENCOUNTER_SIGN, body).status_code == 200
    off_list = fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))
    off_list["fhirServer"] = "https://elsewhere.example/fhir"
    assert _post(client, ENCOUNTER_SIGN, off_list).status_code == 200
    failures = by(samples(client.get("/metrics").get_data(as_text=True)), "spine_cds_fhir_fetch_failures_total", "kind")
    assert failures == {"status": 1, "unexpected_resource": 1, "invalid_json": 1, "not_allowed": 1}


def test_database_errors_by_operation(make_app, monkeypatch):
    app = make_app()
    client = app.test_client()
    store = app.extensions["spine_cds"].store

    def fail(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("down"))

    monkeypatch.setattr(store, "_store_feedback", fail)
    monkeypatch.setattr(store, "_stats", fail)
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z"}
    assert client.post(ORDER_SIGN + "/feedback", json={"feedback": [item]}).status_code == 503
    assert client.get("/stats").status_code == 503
    scraped = samples(client.get("/metrics").get_data(as_text=True))
    assert by(scraped, "spine_cds_database_errors_total", "operation") == {"feedback": 1, "stats": 1}
    assert total(scraped, "spine_cds_feedback_items_total") == 0  # not answered 200: not counted


def test_each_app_counts_its_own_calls(make_app, tmp_path):
    first = make_app()
    second = make_app(database_url=f"sqlite:///{tmp_path / 'other.sqlite3'}")  # installed last
    _post(first.test_client(), ENCOUNTER_SIGN, fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json")))
    count = lambda app: total(samples(app.test_client().get("/metrics").get_data(as_text=True)),  # noqa: E731
                              "spine_cds_hook_calls_total")
    assert (count(first), count(second)) == (1, 0)
    # the store's and FHIR reader's hooks (no app of their own) record into the app whose request runs
    with first.app_context():
        metrics.database_error("read")
    assert total(samples(first.test_client().get("/metrics").get_data(as_text=True)),
                 "spine_cds_database_errors_total") == 1
    assert total(samples(second.test_client().get("/metrics").get_data(as_text=True)),
                 "spine_cds_database_errors_total") == 0


# ------------------------------------------------------------------ no clinical text, no identifiers
CANARY = "zqxcanary"


def _allowed_label_values() -> dict:
    services = set(SERVICES) | {"other"}
    return {
        "service": services,
        "rule": set(load_rules()) | set(MADE_HERE) | {"other"},
        "kind": set(_contract_kinds()) | set(metrics.FHIR_FAILURES) | {"other"},
        "state": set(metrics.CARD_STATES),
        "outcome": set(metrics.HOOK_OUTCOMES) | set(metrics.FEEDBACK_OUTCOMES) | {"other"},
        "result": set(metrics.FEEDBACK_RESULTS),
        "operation": set(metrics.DATABASE_OPERATIONS) | {"other"},
    }


def _contract_kinds():
    from service.cards import CardCatalogue

    return CardCatalogue().kinds


def test_labels_come_from_closed_sets_whatever_the_request_says(make_app):
    """Hostile ids and text everywhere a request can put them: none reaches /metrics."""
    app = make_app()
    client = app.test_client()
    hostile = f'{CANARY}"}} evil{{x="<script>\n# HELP'
    raw = json.dumps(fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json")))
    body = json.loads(raw.replace("pt-1001", CANARY + "-patient").replace("enc-2001", CANARY + "-encounter"))
    body["context"]["userId"] = f"Practitioner/{CANARY}-user"
    body["fhirServer"] = f"https://{CANARY}.example/fhir"  # off the allowlist: not contacted, counted
    for entry in body["prefetch"]["conditions"]["entry"]:
        entry["resource"]["id"] = CANARY + "-condition"
        entry["resource"]["code"]["text"] = hostile
        entry["resource"]["note"] = [{"text": f"{CANARY} note: C1-C2 slip"}]
    response = _post(client, ENCOUNTER_SIGN, body)
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert cards and CANARY in json.dumps(cards)  # the record was read, its ids and text in the card
    assert _post(client, f"/cds-services/{CANARY}-service", body).status_code == 404
    assert client.post(f"/cds-services/{CANARY}-service/feedback", json={"feedback": []}).status_code == 404
    items = [{"card": CANARY + "-card", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z",
              "overrideReason": {"reason": {"code": CANARY, "system": CANARY}, "userComment": hostile}}]
    items.append(_feedback_item(cards[0], "overridden"))
    assert client.post(ENCOUNTER_SIGN + "/feedback", json={"feedback": items}).status_code == 200
    assert client.post(ENCOUNTER_SIGN + "/feedback", json={"feedback": [dict(items[0], outcome=hostile)]}
                       ).status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    assert CANARY not in text.lower() and "<script>" not in text and "evil" not in text
    allowed = _allowed_label_values()
    info = {"version", "code_set"}
    for sample in samples(text):
        for label, value in sample.labels.items():
            if label == "le":
                float(value)
            elif label in info:
                assert sample.name == "spine_cds_info"
            else:
                assert value in allowed[label], (sample.name, label, value)
    scraped = samples(text)
    assert total(scraped, "spine_cds_hook_calls_total", service="other") == 1
    assert total(scraped, "spine_cds_fhir_fetch_failures_total", kind="not_allowed") == 1


# ------------------------------------------------------------------ protection
@pytest.fixture
def secured(make_app, tmp_path):
    ehr = Client()
    (tmp_path / "jwks.json").write_text(json.dumps(ehr.jwks))
    app = make_app(trusted_issuers=[{"iss": ISS, "jwks_file": str(tmp_path / "jwks.json")}], public_base_url=BASE)
    return app.test_client(), ehr


def test_with_authentication_on_metrics_needs_a_token_like_analytics(secured):
    client, ehr = secured
    for path in ("/metrics", "/analytics", "/stats"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.get_json()["resourceType"] == "OperationOutcome"
        other_endpoint = ehr.token(aud=BASE + "/cds-services")
        assert client.get(path, headers={"Authorization": f"Bearer {other_endpoint}"}).status_code == 401
        token = ehr.token(aud=BASE + path)
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401  # replayed


def test_a_scrape_token_lets_a_scraper_in_at_every_scrape_and_nothing_else(make_app, tmp_path):
    ehr = Client()
    (tmp_path / "jwks.json").write_text(json.dumps(ehr.jwks))
    scrape = "s" * 16 + "0123456789abcdef0123"
    client = make_app(trusted_issuers=[{"iss": ISS, "jwks_file": str(tmp_path / "jwks.json")}], public_base_url=BASE,
                      metrics_token=scrape).test_client()
    for _ in range(3):  # not accepted once like a JWT: the same token at every scrape
        assert client.get("/metrics", headers={"Authorization": f"Bearer {scrape}"}).status_code == 200
    for wrong in (f"Bearer {scrape}x", f"Bearer {scrape[:-1]}", scrape, "Bearer "):
        assert client.get("/metrics", headers={"Authorization": wrong}).status_code == 401
    for path in ("/analytics", "/stats", "/cds-services"):  # the scrape token opens /metrics only
        assert client.get(path, headers={"Authorization": f"Bearer {scrape}"}).status_code == 401
    token = ehr.token(aud=BASE + "/metrics")  # JWTs still work
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_short_scrape_token_is_a_configuration_error(make_app):
    from service.config import ConfigError

    with pytest.raises(ConfigError, match="METRICS_TOKEN: too short"):
        make_app(metrics_token="short")


def test_with_authentication_off_metrics_is_open(client):
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert "spine_cds_hook_calls_total" in response.get_data(as_text=True)
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.mimetype == "application/openmetrics-text" and openmetrics.get_data(as_text=True).endswith("# EOF\n")


def test_the_multiprocess_directory_is_emptied_and_named_before_the_app(tmp_path, monkeypatch):
    from prometheus_client import values

    monkeypatch.setenv(metrics.ENV, "")  # empty: not given; restored (unset) after the test
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # chosen again by it: restored after
    stale = tmp_path / "metrics" / "counter_12345.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    (tmp_path / "metrics" / "keep.txt").write_text("not ours")
    directory = metrics.prepare_multiprocess(tmp_path)
    assert directory == (tmp_path / "metrics").resolve() and os.environ[metrics.ENV] == str(directory)
    assert not stale.exists() and (tmp_path / "metrics" / "keep.txt").exists()
    # an explicit PROMETHEUS_MULTIPROC_DIR is used as given
    os.environ[metrics.ENV] = str(tmp_path / "given")
    assert metrics.prepare_multiprocess(tmp_path / "unused") == (tmp_path / "given").resolve()


def test_metrics_are_not_imported_before_serve_names_the_directory():
    """prometheus_client reads PROMETHEUS_MULTIPROC_DIR when it is first imported: importing the app
    (as `spine-cds serve` does before it sets the variable) must not import it."""
    import subprocess
    import sys

    code = ("import sys, service.app, service.store, service.fhir_server, service.api.metrics; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


# ------------------------------------------------------------------ served: 2 workers, a restart
def _by_pid(directory: Path) -> dict[int, float]:
    """Hook calls per process, read from each process's own file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    out = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[-1])
        families = MultiProcessCollector.merge([str(path)], accumulate=False)
        out[pid] = sum(s.value for f in families for s in f.samples if s.name == "spine_cds_hook_calls_total")
    return out


def _scrape(server) -> list:
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    return samples(response.text)


def _stats(server) -> dict:
    return requests.get(server.url + "/stats", timeout=10).json()


def _settled(server, seconds: float = 20.0) -> tuple[list, dict]:
    """A scrape and /stats that agree (the issued cards are written just after each answer)."""
    ends = time.monotonic() + seconds
    while True:
        scraped, stats = _scrape(server), _stats(server)
        if stats_view(scraped) == of_stats(stats) or time.monotonic() > ends:
            return scraped, stats
        time.sleep(0.2)


@pytest.fixture
def served_with_fhir(tmp_path):
    fhir = FakeFhirServer()
    fhir.route("DocumentReference", {"resourceType": "Bundle", "type": "searchset", "entry": []}, delay=3)
    fhir.route("DiagnosticReport", {"resourceType": "OperationOutcome", "issue": []}, status=500)
    server = Gunicorn(tmp_path, env={
        "SPINE_CDS_TABULAR_EFFECTIVE": os.environ["SPINE_CDS_TABULAR_EFFECTIVE"],
        "SPINE_CDS_SILENT_RULES": SILENT_RULE, "SPINE_CDS_FHIR_ALLOWLIST": fhir.base,
        "SPINE_CDS_HOOK_DEADLINE": "0.5", "SPINE_CDS_FHIR_READ_TIMEOUT": "5"})
    yield server, fhir, tmp_path / "metrics"
    server.stop()
    fhir.close()


def _served_calls(server, fhir, rounds: int) -> list[dict]:
    """Hook calls of every kind, 6 at a time (so that both workers take some): the cards shown."""
    jobs = []
    for _ in range(rounds):
        for name, service in FIXTURES.items():
            jobs.append((f"/cds-services/{service}", fresh(load_fixture(name)), 200))
    slow = fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))  # past the deadline
    del slow["prefetch"]["documentReferences"]
    slow["fhirServer"] = fhir.base
    failing = fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))  # the FHIR server's 500
    del failing["prefetch"]["diagnosticReports"]
    failing["fhirServer"] = fhir.base
    jobs += [(ENCOUNTER_SIGN, fresh(slow), 200), (ENCOUNTER_SIGN, fresh(failing), 200),
             ("/cds-services/nope", {}, 404), (ENCOUNTER_SIGN, {"hook": "encounter-sign"}, 400)]

    def call(job):
        path, body, status = job
        response = requests.post(server.url + path, json=body, timeout=30)
        assert response.status_code == status, (path, response.status_code, response.text[:300])
        return response.json().get("cards", [])

    with ThreadPoolExecutor(6) as pool:
        return [card for cards in pool.map(call, jobs) for card in cards]


@pytest.mark.served
def test_served_metrics_add_up_to_stats_across_workers_and_a_restart(served_with_fhir):
    server, fhir, directory = served_with_fhir
    assert directory.is_dir() and os.environ.get(metrics.ENV) is None  # the server's, not this process's
    pids = server.workers_pids()
    shown = _served_calls(server, fhir, rounds=4)
    for _ in range(10):  # until both workers have served hook calls (6 at a time: they do at once)
        if min(_by_pid(directory).get(pid, 0) for pid in pids) > 0:
            break
        shown += _served_calls(server, fhir, rounds=1)
    assert all(_by_pid(directory).get(pid, 0) > 0 for pid in pids), _by_pid(directory)

    # feedback (a duplicate among it), then the overridden order card is suppressed
    order_card = next(c for c in shown if c["extension"]["spine-coding-cds"]["rule"] == "ORD-DIAGNOSIS")
    fusion_card = next(c for c in shown if c["extension"]["spine-coding-cds"]["rule"] == "ORD-FUSION-DOCS")
    _settled(server)  # the cards are recorded before the feedback on them
    items = [_feedback_item(order_card, "overridden"), _feedback_item(fusion_card, "accepted")]
    for body in ({"feedback": items}, {"feedback": items[:1]}):  # the override again: a duplicate
        response = requests.post(server.url + ORDER_SIGN + "/feedback", json=body, timeout=10)
        assert response.status_code == 200, response.text
    for _ in range(2):
        response = requests.post(server.url + ORDER_SIGN, json=fresh(load_fixture(
            "order-sign_c1-c2-slip_coded-m43.10.json")), timeout=30)
        assert response.status_code == 200

    scraped, stats = _settled(server)
    assert stats_view(scraped) == of_stats(stats), (stats_view(scraped), of_stats(stats))
    assert stats["suppressedCardsByRule"].get("ORD-DIAGNOSIS") == 2 and stats["silentCardsByRule"][SILENT_RULE] > 0
    assert stats["hookTimeouts"] >= 1 and stats["cardsByRule"]["SPL-SPECIFICITY"] > 0
    items_by = by(scraped, "spine_cds_feedback_items_total", "outcome")
    assert items_by == {"overridden": 2, "accepted": 1}
    assert total(scraped, "spine_cds_feedback_results_total", result="duplicate") == 1
    assert stats["feedback"] == {"overridden": 1, "accepted": 1}
    assert total(scraped, "spine_cds_fhir_fetch_failures_total", kind="status") >= 1
    assert total(scraped, "spine_cds_fhir_fetch_failures_total", kind="timeout") + total(
        scraped, "spine_cds_fhir_fetch_failures_total", kind="deadline") >= 1
    assert total(scraped, "spine_cds_hook_calls_total", outcome="client_error") >= 2
    assert total(scraped, "spine_cds_hook_calls_total", outcome="deadline") == stats["hookTimeouts"]
    # whichever worker answers a scrape, it answers the totals of both
    calls = total(scraped, "spine_cds_hook_calls_total")
    assert calls == sum(_by_pid(directory).values())
    for _ in range(6):
        again = _scrape(server)
        assert stats_view(again) == stats_view(scraped) and total(again, "spine_cds_hook_calls_total") == calls

    # a worker restarted (SIGTERM; gunicorn starts another): nothing counted is lost
    gone = pids[0]
    os.kill(gone, signal.SIGTERM)
    ends = time.monotonic() + 60
    while time.monotonic() < ends and (gone in server.workers_pids() or len(server.workers_pids()) != 2):
        time.sleep(0.2)
    assert gone not in server.workers_pids() and len(server.workers_pids()) == 2
    after_restart = _scrape(server)
    assert stats_view(after_restart) == stats_view(scraped)
    assert total(after_restart, "spine_cds_hook_calls_total") == calls
    assert (directory / f"counter_{gone}.db").exists()  # the dead worker's counters are kept
    more = _served_calls(server, fhir, rounds=1)
    assert more
    scraped, stats = _settled(server)
    assert stats_view(scraped) == of_stats(stats), (stats_view(scraped), of_stats(stats))
    assert total(scraped, "spine_cds_hook_calls_total") == calls + len(FIXTURES) + 4
    assert "metrics:" not in server.log_text()  # no metric failed to record, nor a worker's to be marked
