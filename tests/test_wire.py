"""One wire model (service/wire.py): the request checks, the feedback checks, /openapi.json and the
card contract all come from the same pydantic models, and say the same thing.

- the OpenAPI components are the models' JSON Schema, and the document is valid OpenAPI 3.0;
- a constraint changed in a model changes the schema and the check together;
- on a corpus of malformed requests, the generated schema (validated with an OpenAPI validator,
  not pydantic) and the service's check agree on what is refused;
- the OperationOutcomes are the former hand-written checks' (bench/wire_legacy.py), issue for
  issue, except for the differences named in the tests below;
- every card of every vignette validates against the card model and the document's schema.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
import uuid

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate as validate_openapi

from bench import wire_legacy as legacy
from service import create_app, wire
from service.api.feedback import parse_feedback
from service.errors import Problem
from service.hook_request import parse_hook_request
from service.services import SERVICES, ContextField

from .support import FIXTURES, load_example, load_fixture

ORDER_SIGN = SERVICES["spine-coding-order-sign"]
INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"


def _schema_errors(schemas: dict, name: str, body) -> list[str]:
    """What an OpenAPI 3.0 validator (not pydantic) finds wrong with `body` under the document's schema."""
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    return [e.message for e in OAS30Validator(root, format_checker=oas30_format_checker).iter_errors(body)]


def _outcome(parse, body, *args):
    try:
        parse(copy.deepcopy(body), *args)
    except Problem as problem:
        return problem.status, [(i.code, i.diagnostics, i.expression) for i in problem.issues]
    except Exception as exc:  # noqa: BLE001 (the former check had one: see test_fhir_server_*)
        return 500, [("exception", type(exc).__name__, None)]
    return None


# ------------------------------------------------------------------------------------- corpus
def _base() -> dict:
    return load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")


def _with(path: str, value):
    """A request whose member at `path` ("context.patientId") is `value` (or removed, for `...`)."""
    body = _base()
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target[part]
    if value is ...:
        target.pop(last, None)
    else:
        target[last] = value
    return body


_TOP_VALUES = [None, 7, "", "x", [], {}, True, "https://ehr.example.org/fhir", "ftp://x", INSTANCE, "order-sign",
               "patient-view", {"access_token": "t", "token_type": "Bearer"}, {"resourceType": "Bundle"}, ...]
_CONTEXT_VALUES = [None, 5, "", "../x", "Practitioner/1", "PractitionerRole/r-1", "Patient/1", "abc", "a" * 65, {}, [],
                   {"resourceType": "Patient"}, {"resourceType": "Bundle", "entry": {}}, {"resourceType": "Bundle", "entry": None},
                   {"resourceType": "Bundle", "entry": [None, 1, {"resource": "x"}, {"resource": {"resourceType": 5}},
                                                        {"resource": {"resourceType": "ServiceRequest"}}]},
                   {"resourceType": "Patient", "entry": 5}, {"entry": []}, {"resourceType": None}, ...]
_AUTHORIZATIONS = [{}, {"access_token": ""}, {"access_token": None, "token_type": None},
                   {"access_token": "t", "token_type": "bearer"}, {"access_token": "t", "token_type": "MAC", "expires_in": "5"},
                   {"access_token": 1, "token_type": "Bearer", "expires_in": True},
                   {"access_token": "t", "token_type": "Bearer", "expires_in": 5.0, "scope": 1, "subject": None, "patient": []},
                   {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "x", "other": None}]


def _hook_corpus() -> list[tuple[str, object]]:
    cases = [("the fixture", _base())]
    for field in ("hook", "hookInstance", "context", "fhirServer", "fhirAuthorization", "prefetch", "extension"):
        cases += [(f"{field}={value!r}", _with(field, value)) for value in _TOP_VALUES]
    for field in ("userId", "patientId", "encounterId", "draftOrders"):
        cases += [(f"context.{field}={value!r}", _with(f"context.{field}", value)) for value in _CONTEXT_VALUES]
    for value in (None, 1, "x", [], {}, {"resourceType": 1}, {"resourceType": "Bundle", "entry": "x"}, {"x": 1}):
        cases.append((f"prefetch.conditions={value!r}", _with("prefetch.conditions", value)))
    for authorization in _AUTHORIZATIONS:
        for server in (..., "https://ehr.example.org/fhir", "nope"):
            body = _with("fhirServer", server)
            body["fhirAuthorization"] = authorization
            cases.append((f"fhirAuthorization={authorization} fhirServer={server!r}", body))
    cases += [
        ("several at once", {"hook": "order-sign", "context": {"userId": "x"}}),
        ("everything wrong", {"hook": "encounter-sign", "hookInstance": 5, "prefetch": {"a": 1, "b": None},
                              "context": {"userId": None, "patientId": 3,
                                          "draftOrders": {"resourceType": "Bundle", "entry": [1]}}}),
        ("official R4 order-sign context", {"hook": "order-sign", "hookInstance": INSTANCE, "prefetch": {"conditions": None},
                                            "context": load_example("lib1.0.1_order-sign_context_R4.json")["context"]}),
    ]
    return cases


def _item(**members) -> dict:
    out = {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z", **members}
    return {k: v for k, v in out.items() if v is not ...}


_ITEMS = [
    _item(), _item(card=...), _item(card=None), _item(card=""), _item(card="x" * 65), _item(card=5),
    _item(outcome="ignored"), _item(outcome=None), _item(outcome=...), _item(outcome="accepted"),
    _item(outcome="accepted", acceptedSuggestions=None), _item(outcome="accepted", acceptedSuggestions=[]),
    _item(outcome="accepted", acceptedSuggestions=[{"uuid": "x"}]), _item(acceptedSuggestions=[{"id": ""}]),
    _item(acceptedSuggestions=[{"id": "x" * 65}]), _item(acceptedSuggestions=[{"id": "x"}] * 65),
    _item(acceptedSuggestions="x"), _item(acceptedSuggestions=[None]),
    _item(outcomeTimestamp=...), _item(outcomeTimestamp=None), _item(outcomeTimestamp="yesterday"),
    _item(outcomeTimestamp="2026-11-21T10:00:00"), _item(outcomeTimestamp=5), _item(outcomeTimestamp="2026-13-21T10:00:00Z"),
    _item(outcomeTimestamp="2026-11-21T10:00:00.123+05:30"), _item(outcomeTimestamp="2026-11-21t10:00:00z"),
    _item(overrideReason="because"), _item(overrideReason=None), _item(overrideReason={}),
    _item(overrideReason={"reason": None}), _item(overrideReason={"reason": {"system": "x"}}),
    _item(overrideReason={"reason": {"code": 5}}), _item(overrideReason={"reason": {"code": "x", "display": None}}),
    _item(overrideReason={"reason": {"code": "x" * 513}}),
    _item(overrideReason={"reason": {"code": "x", "system": "s" * 600, "display": 5}}),
    _item(overrideReason={"reason": "x"}), _item(overrideReason={"userComment": 5}),
    _item(overrideReason={"userComment": None}), _item(overrideReason={"userComment": "x" * 2001}),
    _item(overrideReason={"other": None}), _item(other=None), _item(other=1),
    _item(overrideReason={"reason": {"code": ""}, "userComment": ""}), "x", None, 5, [], {},
]


def _feedback_corpus() -> list[tuple[str, object]]:
    cases = [(f"item {json.dumps(item)[:100]}", {"feedback": [item, _item()]}) for item in _ITEMS]
    cases += [(f"body {json.dumps(body)[:60]}", body) for body in (
        {}, {"feedback": []}, {"feedback": {}}, [], None, {"feedback": None}, {"feedback": "x"},
        {"feedback": [_item()] * 101}, {"feedback": [{}] * 101}, {"feedback": [_item(card=None)] * 30})]
    return cases


HOOK_CORPUS = _hook_corpus()
FEEDBACK_CORPUS = _feedback_corpus()


# --------------------------------------------------------------------------- the same models
def _document(**settings):
    app = create_app({"database_url": "sqlite://", "log_level": "ERROR", **settings})
    return app.test_client().get("/openapi.json").get_json()


@pytest.fixture(scope="module")
def document():
    return _document()


@pytest.mark.parametrize("cdi_review", [False, True], ids=["default", "cdi-review-on"])
def test_the_openapi_components_are_the_models_json_schema(document, cdi_review):
    """The services a deployment offers (the opt-in CDI review only when enabled), each from its model."""
    document = _document(cdi_review=True) if cdi_review else document
    validate_openapi(document)  # OpenAPI 3.0.3, as openapi-spec-validator reads it
    offered = [s for s in SERVICES.values() if cdi_review or s.enabled_by is None]
    assert {p for p in document["paths"] if p.startswith("/cds-services/")} == {
        f"/cds-services/{s.id}{end}" for s in offered for end in ("", "/feedback")}
    refs, schemas = wire.components(offered)
    assert document["components"]["schemas"] == json.loads(json.dumps(schemas))
    for service in offered:
        call = document["paths"][f"/cds-services/{service.id}"]["post"]
        name = wire.hook_request_model(service).name
        assert call["requestBody"]["content"]["application/json"]["schema"] == refs[name]
        assert call["responses"]["200"]["content"]["application/json"]["schema"] == refs["CardsResponse"]
        feedback = document["paths"][f"/cds-services/{service.id}/feedback"]["post"]
        assert feedback["requestBody"]["content"]["application/json"]["schema"] == refs["FeedbackRequest"]
        assert feedback["responses"]["200"]["content"]["application/json"]["schema"] == refs["FeedbackSummary"]
    # each service's context is its declaration's
    context = schemas["OrderSignContext"]
    assert context["required"] == ["userId", "patientId", "draftOrders"]
    assert context["properties"]["patientId"]["pattern"] == wire.FHIR_ID
    assert schemas["EncounterSignContext"]["required"] == ["userId", "patientId", "encounterId"]
    # the caps and the rules across fields are in the schema, not only in the code
    assert schemas["FeedbackRequest"]["properties"]["feedback"]["maxItems"] == wire.FEEDBACK_MAX_ITEMS
    assert schemas["OverrideReason"]["properties"]["userComment"]["maxLength"] == wire.FEEDBACK_MAX_COMMENT
    assert schemas["FeedbackItem"]["properties"]["acceptedSuggestions"]["maxItems"] == wire.MAX_SUGGESTIONS
    assert {"required": ["acceptedSuggestions"]} in schemas["FeedbackItem"]["anyOf"]
    assert {"required": ["fhirServer"]} in schemas["OrderSignRequest"]["anyOf"]
    assert schemas["Card"]["properties"]["summary"]["maxLength"] == 139


def test_the_document_follows_the_settings(make_app):
    client = make_app(feedback_max_items=5, feedback_max_comment=50).test_client()
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    assert schemas["FeedbackRequest"]["properties"]["feedback"]["maxItems"] == 5
    assert schemas["OverrideReason"]["properties"]["userComment"]["maxLength"] == 50
    # and the check is the same model: one over is refused, with the cap named
    six = {"feedback": [_item(card=str(uuid.uuid4())) for _ in range(6)]}
    assert _schema_errors(schemas, "FeedbackRequest", six)
    response = client.post("/cds-services/spine-coding-order-sign/feedback", json=six)
    assert response.status_code == 413 and "at most 5" in response.get_json()["issue"][0]["diagnostics"]
    long = {"feedback": [_item(overrideReason={"userComment": "x" * 51})]}
    assert _schema_errors(schemas, "FeedbackRequest", long)
    response = client.post("/cds-services/spine-coding-order-sign/feedback", json=long)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["feedback[0].overrideReason.userComment"]


def test_a_context_field_declared_for_a_service_is_in_its_schema_and_its_check():
    """The models come from the service declarations: a new required context field shows in the
    schema and is required by the check, with the same wording as the others."""
    service = dataclasses.replace(ORDER_SIGN, id="test-wire-order-sign",
                                  context=ORDER_SIGN.context + (ContextField("appointmentId", "id"),))
    model = wire.hook_request_model(service)
    _, schemas = wire.components([service])
    context = schemas[f"{model.name[:-len('Request')]}Context"]
    assert "appointmentId" in context["required"] and context["properties"]["appointmentId"]["pattern"] == wire.FHIR_ID
    body = _base()
    assert _schema_errors(schemas, model.name, body)
    with pytest.raises(Problem) as refused:
        parse_hook_request(body, service)
    assert [(i.code, i.diagnostics, i.expression) for i in refused.value.issues] == [
        ("required", "appointmentId is required by the order-sign hook", "context.appointmentId")]
    body["context"]["appointmentId"] = "../1"
    assert _schema_errors(schemas, model.name, body)
    with pytest.raises(Problem, match="appointmentId must be a FHIR id"):
        parse_hook_request(body, service)
    body["context"]["appointmentId"] = "a-1"
    assert _schema_errors(schemas, model.name, body) == []
    assert parse_hook_request(body, service).context["appointmentId"] == "a-1"


@pytest.mark.parametrize("name,body", HOOK_CORPUS, ids=[n for n, _ in HOOK_CORPUS])
def test_the_schema_and_the_request_check_agree(document, name, body):
    schemas = document["components"]["schemas"]
    refused_by_schema = bool(_schema_errors(schemas, "OrderSignRequest", body))
    assert refused_by_schema == (_outcome(parse_hook_request, body, ORDER_SIGN) is not None), name


@pytest.mark.parametrize("name,body", FEEDBACK_CORPUS, ids=[n for n, _ in FEEDBACK_CORPUS])
def test_the_schema_and_the_feedback_check_agree(document, name, body):
    schemas = document["components"]["schemas"]
    refused_by_schema = bool(_schema_errors(schemas, "FeedbackRequest", body))
    assert refused_by_schema == (_outcome(parse_feedback, body) is not None), name


# ----------------------------------------------------------------- the same answers as before
def _same_answer(new, old) -> None:
    """Same status, the same fields named, and every issue one the former check gave word for word
    (it gave a second, redundant one for a null: "x must not be null" and "x must be a string")."""
    if old is None or new is None:
        assert new == old
        return
    assert new[0] == old[0]
    assert {e for _, _, e in new[1]} == {e for _, _, e in old[1]}
    assert set(new[1]) <= set(old[1]), (new, old)


@pytest.mark.parametrize("name,body", HOOK_CORPUS, ids=[n for n, _ in HOOK_CORPUS])
def test_hook_request_answers_are_the_former_ones(name, body):
    _same_answer(_outcome(parse_hook_request, body, ORDER_SIGN), _outcome(legacy.parse_hook_request, body, ORDER_SIGN))


@pytest.mark.parametrize("name,body", FEEDBACK_CORPUS[:-1], ids=[n for n, _ in FEEDBACK_CORPUS[:-1]])
def test_feedback_answers_are_the_former_ones(name, body):
    _same_answer(_outcome(parse_feedback, body), _outcome(legacy.parse_feedback, body))


def test_a_null_is_one_issue():
    """The former check said of a null card both "must not be null" and "must be the card's uuid"."""
    new = _outcome(parse_feedback, {"feedback": [_item(card=None)]})
    old = _outcome(legacy.parse_feedback, {"feedback": [_item(card=None)]})
    assert new == (400, [("invalid", "card must not be null: omit it when it has no value", "feedback[0].card")])
    assert len(old[1]) == 2 and new[1][0] in old[1]


def test_fhir_server_that_urlsplit_cannot_read_is_a_400():
    """Found by the differential test: an unclosed IPv6 bracket made the former check raise (a 500)."""
    body = _with("fhirServer", "http://[::1")
    assert _outcome(legacy.parse_hook_request, body, ORDER_SIGN)[0] == 500
    assert _outcome(parse_hook_request, body, ORDER_SIGN) == (
        400, [("invalid", "fhirServer must be an absolute http(s) URL", "fhirServer")])


@pytest.mark.parametrize("path,value", [
    # Python's `$` matched before a final newline; the schema's (ECMA-262, as OpenAPI says, and pydantic's)
    # does not. (The Python validator of these tests reads patterns with `re`, so it is not asked.)
    ("context.patientId", "p-1\n"),
    ("hookInstance", "d1577c69dfbe-44ad-ba6d-3e05e953b2ea"),  # hyphens out of place (uuid.UUID dropped them all)
    ("fhirServer", " https://ehr.example.org/fhir"),  # urlsplit stripped the space; the base URL would keep it
])
def test_what_the_schema_refuses_is_now_refused_too(document, path, value):
    body = _with(path, value)
    assert _outcome(legacy.parse_hook_request, body, ORDER_SIGN) is None
    if not value.endswith("\n"):
        assert _schema_errors(document["components"]["schemas"], "OrderSignRequest", body)
    status, issues = _outcome(parse_hook_request, body, ORDER_SIGN)
    assert status == 400 and [e for _, _, e in issues] == [path]


@pytest.mark.parametrize("stamp", ["20261121T100000Z", "2026-11-21T10:00Z", "2026-11-21T10:00:00+0000",
                                   "2026-11-21 10:00:00Z"])
def test_outcome_timestamps_are_rfc_3339_as_the_message_always_said(document, stamp):
    body = {"feedback": [_item(outcomeTimestamp=stamp)]}
    assert _outcome(legacy.parse_feedback, body) is None  # datetime.fromisoformat took ISO 8601's other forms
    assert _schema_errors(document["components"]["schemas"], "FeedbackRequest", body)
    assert _outcome(parse_feedback, body)[1][0][2] == "feedback[0].outcomeTimestamp"


def test_hostile_requests_cost_bounded_time_and_a_bounded_answer():
    """20,000 malformed draft orders and 20,000 malformed prefetch values: the former check answered
    40,000 issues; this one at most MAX_ISSUES and one saying so."""
    body = _base()
    body["context"]["draftOrders"]["entry"] = [{}] * 20_000
    body["prefetch"] = {f"k{n}": n for n in range(20_000)}
    started = time.perf_counter()
    status, issues = _outcome(parse_hook_request, body, ORDER_SIGN)
    elapsed = time.perf_counter() - started
    assert status == 400 and len(issues) == wire.MAX_ISSUES + 1
    assert issues[-1] == ("too-costly", f"more problems not listed (at most {wire.MAX_ISSUES})", "$")
    assert issues[0] == ("invalid", "each entry needs a resource with a resourceType", "context.draftOrders.entry[0]")
    assert elapsed < 2.0, elapsed
    assert len(_outcome(legacy.parse_hook_request, body, ORDER_SIGN)[1]) == 40_000


def test_hook_mismatch_quotes_the_hook_as_data():
    body = _with("hook", "{name}{parent}")
    assert _outcome(parse_hook_request, body, ORDER_SIGN) == (400, [(
        "not-supported", "service spine-coding-order-sign answers the hook 'order-sign', not '{name}{parent}'", "hook")])


# ---------------------------------------------------------------------------------- the cards
@pytest.fixture(scope="module")
def every_answer(tmp_path_factory):
    app = create_app({"database_url": f"sqlite:///{tmp_path_factory.mktemp('wire') / 'spine.sqlite3'}",
                      "public_base_url": "https://cds.test", "log_level": "ERROR"})
    client = app.test_client()
    answers = []
    for path in sorted((FIXTURES / "vignettes").glob("*.json")) + sorted(FIXTURES.glob("*.json")):
        body = json.loads(path.read_text())
        service = next(s for s in SERVICES.values() if s.hook == body["hook"])
        response = client.post(f"/cds-services/{service.id}", json=body)
        assert response.status_code == 200, (path.name, response.get_json())
        answers.append((path.name, response.get_json()))
    return answers


def test_every_card_of_every_vignette_validates_against_the_card_model(every_answer, document):
    schemas = document["components"]["schemas"]
    cards = 0
    for name, answer in every_answer:
        wire.CardsResponse.model_validate(answer)
        assert _schema_errors(schemas, "CardsResponse", answer) == [], name
        for card in answer["cards"]:
            assert wire.card_problems(card) == [], (name, card["summary"])
            cards += 1
    assert len(every_answer) >= 100 and cards >= 40


@pytest.mark.parametrize("break_it,expected", [
    (lambda c: c["suggestions"][0]["actions"][0].pop("resource"), "needs the whole resource"),
    (lambda c: c.pop("selectionBehavior"), "selectionBehavior required with suggestions"),
    (lambda c: c.update(summary="x" * 140), "summary"),
    (lambda c: c["suggestions"][0].update(isRecommended="yes"), "suggestions[0].isRecommended"),
    (lambda c: c.update(links=[{"label": "x", "url": "/relative", "type": "absolute"}]), "links[0].url"),
    (lambda c: c["extension"]["spine-coding-cds"]["evidence"][0].update(assertion="maybe"), "assertion"),
])
def test_a_card_the_model_refuses_the_schema_refuses(every_answer, document, break_it, expected):
    card = copy.deepcopy(next(c for _, a in every_answer for c in a["cards"]
                              if any(s.get("actions") for s in c.get("suggestions", []))))
    break_it(card)
    assert any(expected in p for p in wire.card_problems(card)), wire.card_problems(card)
    assert _schema_errors(document["components"]["schemas"], "CardsResponse", {"cards": [card]})
