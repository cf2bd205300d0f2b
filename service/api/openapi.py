"""GET /openapi.json: the service's endpoints as OpenAPI 3.0, derived from the service declarations.

The request and response schemas are the wire models' own (service/wire.py: the models the
request and feedback checks run and the card contract test checks cards with), under
components/schemas. It documents what the service accepts and answers (including every error, as
an OperationOutcome), so integrators can read it and fuzzers (schemathesis) can test against it.
"""
from __future__ import annotations

import copy
from functools import lru_cache

from flask import Blueprint, jsonify

from .. import wire
from ..services import enabled
from .common import runtime

blueprint = Blueprint("openapi", __name__)

JSON = "application/json"

@lru_cache(maxsize=4)
def _components(service_ids: tuple[str, ...], max_items: int, max_comment: int) -> tuple[dict, dict]:
    from ..services import SERVICES

    return wire.components([SERVICES[i] for i in service_ids], max_items, max_comment)


def _errors(*statuses: int) -> dict:
    text = {400: "a field is missing or malformed (named in issue.expression)", 401: "JWT refused",
            404: "no such service or rule", 412: "required FHIR data could not be obtained",
            413: "body too large", 415: "body is not JSON"}
    return {str(s): {"description": text[s], "content": {JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
            for s in statuses}


def document() -> dict:
    settings = runtime().settings
    services = enabled(settings)  # the services this deployment offers (an opt-in one only when enabled)
    refs, schemas = copy.deepcopy(_components(tuple(services), settings.feedback_max_items,
                                              settings.feedback_max_comment))
    paths = {
        "/cds-services": {"get": {
            "summary": "Discovery: the services and their prefetch templates", "operationId": "discovery",
            "responses": {"200": {"description": "the services", "content": {JSON: {"schema": {
                "type": "object", "required": ["services"], "properties": {"services": {"type": "array", "items": {
                    "type": "object", "required": ["hook", "description", "id"]}}}}}}}, **_errors(401)}}},
        "/healthz": {"get": {"summary": "alive", "operationId": "healthz", "responses": {"200": {
            "description": "alive", "content": {JSON: {"schema": {"type": "object"}}}}}}},
        "/readyz": {"get": {"summary": "ready: database reachable, terminology loaded", "operationId": "readyz",
                            "responses": {"200": {"description": "ready",
                                                  "content": {JSON: {"schema": {"type": "object"}}}},
                                          "503": {"description": "not ready", "content": {JSON: {"schema": {
                                              "$ref": "#/components/schemas/OperationOutcome"}}}}}}},
        "/stats": {"get": {"summary": "counts of cards, feedback and timeouts", "operationId": "stats",
                           "description": "EHR traffic; with include=playground, the playground's runs too",
                           "parameters": [{"name": "include", "in": "query", "required": False,
                                           "description": "playground: count the playground's runs too",
                                           "schema": {"type": "string", "enum": ["playground"]}}],
                           "responses": {"200": {"description": "counts", "content": {JSON: {"schema": {
                               "type": "object", "required": ["cardsIssued", "hookTimeouts", "origins"]}}}},
                               **_errors(400, 401)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format; OpenMetrics when asked)", "operationId": "metrics",
                             "responses": {"200": {"description": "the totals of every worker",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}},
                                           **_errors(401)}}},
        "/rules/{rule_id}": {"get": {
            "summary": "the page of a rule (the cards' source.url)", "operationId": "rulePage",
            "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                          **_errors(404)}}},
    }
    for service in services.values():
        paths[f"/cds-services/{service.id}"] = {"post": {
            "summary": f"{service.title} ({service.hook})", "operationId": f"call-{service.id}",
            "description": service.description,
            "requestBody": {"required": True, "content": {JSON: {"schema": refs[wire.hook_request_model(service).name]}}},
            "responses": {"200": {"description": "cards (an empty array when nothing is to be said)",
                                  "content": {JSON: {"schema": {"$ref": "#/components/schemas/CardsResponse"}}}},
                          **_errors(400, 401, 412, 413, 415)}}}
        paths[f"/cds-services/{service.id}/feedback"] = {"post": {
            "summary": f"feedback on cards of {service.id}", "operationId": f"feedback-{service.id}",
            "requestBody": {"required": True, "content": {JSON: {"schema": refs["FeedbackRequest"]}}},
            "responses": {"200": {"description": "stored (duplicates once)",
                                  "content": {JSON: {"schema": refs["FeedbackSummary"]}}},
                          **_errors(400, 401, 413, 415)}}}
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "Spine Coding CDS", "version": "0.1.0",
                 "description": "CDS Hooks 2.0 service for spine diagnosis coding (M43.1-, M54.1-). "
                                "Every error is a FHIR OperationOutcome."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if settings.auth_enabled:
        doc["components"]["securitySchemes"] = {"cdsHooksJwt": {"type": "http", "scheme": "bearer",
                                                                "bearerFormat": "JWT"}}
        for path, operations in paths.items():
            if path.startswith("/cds-services") or path in ("/stats", "/metrics"):
                for operation in operations.values():
                    operation["security"] = [{"cdsHooksJwt": []}]
    return doc


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(document())
