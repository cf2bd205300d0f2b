"""Property-based fuzzing against the running server: schemathesis from /openapi.json, and
hypothesis strategies for hook bodies, prefetch and FHIR resources. Zero 5xx; every error a JSON
OperationOutcome. The number of requests tried is written to the test artifacts."""
from __future__ import annotations

import json
import os

import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st

from service import create_app

from .support import ROOT, ServedApp, fresh, load_fixture

pytestmark = pytest.mark.served
EXAMPLES = int(os.environ.get("SPINE_CDS_TEST_FUZZ_EXAMPLES", "120"))
COUNTS = {"schemathesis": 0, "hypothesis": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = create_app({"database_url": f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.sqlite3'}",
                      "log_level": "ERROR", "max_body_bytes": 200_000})
    instance = ServedApp(app)
    yield instance
    instance.close()
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "fuzz-counts.json").write_text(json.dumps(COUNTS))


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def _operations(api_schema):
    return [result.ok() for result in api_schema.get_all_operations()]


def _content_type(response) -> str:
    headers = {k.lower(): v for k, v in response.headers.items()}  # requests' or schemathesis' response
    value = headers.get("content-type", "")
    return value[0] if isinstance(value, list) else value


def _check_error_body(response) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert _content_type(response).startswith("application/json"), (response.status_code, response.text[:200])
        body = response.json()
        assert body["resourceType"] == "OperationOutcome" and body["issue"], body


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_error_and_the_answers_match_the_document(api_schema, mode):
    """Every operation of /openapi.json, with data that fits the document and data that does not.
    (Driven through schemathesis' strategies: its pytest plugin does not run on pytest 9.)"""
    operations = _operations(api_schema)
    assert len(operations) == 14  # 4 services × (call, feedback) + discovery, health, readiness, stats, metrics, rule pages
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call()
            COUNTS["schemathesis"] += 1
            _check_error_body(response)
            if response.status_code == 413:
                return  # a body over the size limit is refused before its content is looked at
            # Every check of schemathesis but positive_data_acceptance: a schema-valid request
            # without the Conditions in prefetch and no FHIR server is answered 412, as CDS Hooks asks.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except Unsatisfiable:
            # an operation whose only inputs are free strings (GET /healthz, /rules/{rule_id}) has
            # no invalid data to make
            assert mode == GenerationMode.NEGATIVE


# ------------------------------------------------------------- hypothesis strategies
_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4) |
                     st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
_codes = st.sampled_from(["M43.10", "M43.11", "M43.12", "M43.1", "M54.11", "M54.12", "M54.19", "Q76.2", "G54.2",
                          "S12.110", "S12.112A", "I10", "", "m4311", "X" * 40])
_coding = st.fixed_dictionaries({"system": st.sampled_from(["http://hl7.org/fhir/sid/icd-10-cm",
                                                            "http://snomed.info/sct", "urn:x"]),
                                 "code": _codes}, optional={"display": st.text(max_size=30)})
_texts = st.sampled_from(["Anterolisthesis of C1 on C2.", "No fracture.", "C2 radiculopathy", "RA", "",
                          "<p>dens fracture type II</p>", "\u0130\u0130 C1-C2", "?" * 50]) | st.text(max_size=80)
_condition = st.fixed_dictionaries(
    {"resourceType": st.just("Condition"), "id": st.from_regex(r"[a-z0-9\-]{1,12}", fullmatch=True),
     "subject": st.just({"reference": "Patient/vp-1"})},
    optional={"code": st.fixed_dictionaries({}, optional={"coding": st.lists(_coding, max_size=2),
                                                          "text": _texts}),
              "clinicalStatus": st.just({"coding": [{"code": "active"}]}) | _json,
              "verificationStatus": _json, "onsetDateTime": st.text(max_size=25) | st.just("2026-01-01"),
              "note": st.lists(st.fixed_dictionaries({"text": _texts}), max_size=2), "extra": _json})
_report = st.fixed_dictionaries(
    {"resourceType": st.just("DiagnosticReport"), "id": st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
     "status": st.sampled_from(["final", "preliminary", "bogus"]), "code": st.just({"text": "MRI"}),
     "subject": st.just({"reference": "Patient/vp-1"})},
    optional={"conclusion": _texts, "presentedForm": st.lists(st.fixed_dictionaries(
        {"contentType": st.sampled_from(["text/plain", "text/html", "application/pdf", "x"]),
         "data": st.sampled_from(["QUJD", "====", "%%%", ""]) | st.text(max_size=20)}), max_size=2)})
_bundle_of = lambda resource: st.fixed_dictionaries(  # noqa: E731
    {"resourceType": st.just("Bundle")},
    optional={"type": st.just("searchset"), "entry": st.lists(
        st.fixed_dictionaries({"resource": resource}) | _json, max_size=4), "link": _json})
_prefetch = st.fixed_dictionaries({}, optional={
    "conditions": _bundle_of(_condition) | st.none() | st.just({"resourceType": "OperationOutcome"}) | _json,
    "diagnosticReports": _bundle_of(_report) | st.none() | _json,
    "encounter": st.none() | _json, "patient": st.none() | _json, "extra": _json})


@given(prefetch=_prefetch, draft=st.lists(_json | st.fixed_dictionaries({"resource": _json}), max_size=3),
       hook=st.sampled_from(["order-sign", "encounter-sign", "encounter-discharge", "patient-view", 7]),
       context_extra=st.dictionaries(st.sampled_from(["userId", "patientId", "encounterId", "x"]), _json, max_size=2))
@settings(max_examples=EXAMPLES * 3, deadline=None, suppress_health_check=list(HealthCheck))
def test_hypothesis_hook_bodies_never_break_the_service(server, prefetch, draft, hook, context_extra):
    body = fresh(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json"))
    body["hook"] = hook
    body["prefetch"] = prefetch
    body["context"]["draftOrders"]["entry"] = draft
    body["context"].update(context_extra)
    service = {"encounter-sign": "spine-coding-encounter-sign",
               "encounter-discharge": "spine-coding-encounter-discharge"}.get(hook, "spine-coding-order-sign")
    response = requests.post(f"{server.url}/cds-services/{service}", json=body, timeout=30)
    COUNTS["hypothesis"] += 1
    _check_error_body(response)
    if response.status_code == 200:
        assert isinstance(response.json()["cards"], list)


@given(raw=st.binary(max_size=400) | _json.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_hypothesis_raw_bodies_on_every_post(server, raw):
    for path in ("/cds-services/spine-coding-order-sign", "/cds-services/spine-coding-order-sign/feedback"):
        response = requests.post(server.url + path, data=raw, headers={"Content-Type": "application/json"},
                                 timeout=30)
        COUNTS["hypothesis"] += 1
        _check_error_body(response)
