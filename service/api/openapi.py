"""GET /openapi.json: the service's endpoints as OpenAPI 3.0, derived from the service declarations.

It documents what the service accepts and answers (including every error, as an
OperationOutcome), so integrators can read it and fuzzers (schemathesis) can test against it.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..services import SERVICES, CdsService
from .common import runtime

blueprint = Blueprint("openapi", __name__)

JSON = "application/json"

OPERATION_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["severity", "code", "diagnostics"],
            "properties": {"severity": {"type": "string"}, "code": {"type": "string"},
                           "diagnostics": {"type": "string"},
                           "expression": {"type": "array", "items": {"type": "string"}}}}},
    },
}

CODING = {"type": "object", "required": ["system", "code"],
          "properties": {"system": {"type": "string"}, "code": {"type": "string"}, "display": {"type": "string"}}}

CARD = {
    "type": "object",
    "required": ["uuid", "summary", "indicator", "source", "extension"],
    "properties": {
        "uuid": {"type": "string", "format": "uuid"},
        "summary": {"type": "string", "maxLength": 139},
        "detail": {"type": "string"},
        "indicator": {"type": "string", "enum": ["info", "warning", "critical"]},
        "source": {"type": "object", "required": ["label"], "properties": {
            "label": {"type": "string"}, "url": {"type": "string"}, "topic": CODING}},
        "suggestions": {"type": "array", "items": {"type": "object", "required": ["label", "uuid"], "properties": {
            "label": {"type": "string"}, "uuid": {"type": "string"}, "isRecommended": {"type": "boolean"},
            "actions": {"type": "array", "items": {"type": "object", "required": ["type", "description"]}}}}},
        "selectionBehavior": {"type": "string", "enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "items": CODING},
        "extension": {"type": "object"},
    },
}

CARDS_RESPONSE = {"type": "object", "required": ["cards"],
                  "properties": {"cards": {"type": "array", "items": CARD}, "extension": {"type": "object"}}}

FEEDBACK_REQUEST = {
    "type": "object", "required": ["feedback"],
    "properties": {"feedback": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
        "type": "object", "required": ["card", "outcome", "outcomeTimestamp"],
        "properties": {
            "card": {"type": "string", "minLength": 1, "maxLength": 64},
            "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
            "outcomeTimestamp": {"type": "string", "format": "date-time"},
            "acceptedSuggestions": {"type": "array", "items": {
                "type": "object", "required": ["id"], "properties": {"id": {"type": "string", "minLength": 1,
                                                                             "maxLength": 64}}}},
            "overrideReason": {"type": "object", "properties": {
                "reason": {"type": "object", "required": ["code"], "properties": {
                    "code": {"type": "string"}, "system": {"type": "string"}, "display": {"type": "string"}}},
                "userComment": {"type": "string"}}},
        }}}},
}

FEEDBACK_SUMMARY = {"type": "object", "required": ["received", "stored", "duplicates", "unknownCards"],
                    "properties": {"received": {"type": "integer"}, "stored": {"type": "integer"},
                                   "duplicates": {"type": "integer"},
                                   "unknownCards": {"type": "array", "items": {"type": "string"}}}}

_FHIR_ID = "^[A-Za-z0-9\\-.]{1,64}$"
_USER = "^(Practitioner|PractitionerRole)/[A-Za-z0-9\\-.]{1,64}$"


def _context_schema(service: CdsService) -> dict:
    properties, required = {}, []
    for field in service.context:
        if field.kind == "id":
            properties[field.name] = {"type": "string", "pattern": _FHIR_ID}
        elif field.kind == "user":
            properties[field.name] = {"type": "string", "pattern": _USER}
        else:
            properties[field.name] = {"type": "object", "required": ["resourceType"], "properties": {
                "resourceType": {"type": "string", "enum": ["Bundle"]},
                "entry": {"type": "array", "items": {"type": "object", "required": ["resource"], "properties": {
                    "resource": {"type": "object", "required": ["resourceType"],
                                 "properties": {"resourceType": {"type": "string"}}}}}}}}
        if field.required:
            required.append(field.name)
    return {"type": "object", "required": required, "properties": properties}


def _hook_request(service: CdsService) -> dict:
    return {
        "type": "object",
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"type": "string", "enum": [service.hook]},
            "hookInstance": {"type": "string", "format": "uuid"},
            "fhirServer": {"type": "string", "format": "uri"},
            "fhirAuthorization": {"type": "object", "required": ["access_token", "token_type"], "properties": {
                "access_token": {"type": "string", "minLength": 1},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"}, "scope": {"type": "string"}, "subject": {"type": "string"},
                "patient": {"type": "string"}}},
            "context": _context_schema(service),
            "prefetch": {"type": "object", "additionalProperties": {
                "type": "object", "nullable": True, "required": ["resourceType"],
                "properties": {"resourceType": {"type": "string"}}}},
            "extension": {"type": "object"},
        },
    }


def _errors(*statuses: int) -> dict:
    text = {400: "a field is missing or malformed (named in issue.expression)", 401: "JWT refused",
            404: "no such service or rule", 412: "required FHIR data could not be obtained",
            413: "body too large", 415: "body is not JSON"}
    return {str(s): {"description": text[s], "content": {JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
            for s in statuses}


def document() -> dict:
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
                           "responses": {"200": {"description": "counts", "content": {JSON: {"schema": {
                               "type": "object", "required": ["cardsIssued", "hookTimeouts"]}}}}, **_errors(401)}}},
        "/rules/{rule_id}": {"get": {
            "summary": "the page of a rule (the cards' source.url)", "operationId": "rulePage",
            "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                          **_errors(404)}}},
    }
    for service in SERVICES.values():
        paths[f"/cds-services/{service.id}"] = {"post": {
            "summary": f"{service.title} ({service.hook})", "operationId": f"call-{service.id}",
            "description": service.description,
            "requestBody": {"required": True, "content": {JSON: {"schema": _hook_request(service)}}},
            "responses": {"200": {"description": "cards (an empty array when nothing is to be said)",
                                  "content": {JSON: {"schema": {"$ref": "#/components/schemas/CardsResponse"}}}},
                          **_errors(400, 401, 412, 413, 415)}}}
        paths[f"/cds-services/{service.id}/feedback"] = {"post": {
            "summary": f"feedback on cards of {service.id}", "operationId": f"feedback-{service.id}",
            "requestBody": {"required": True, "content": {JSON: {"schema": FEEDBACK_REQUEST}}},
            "responses": {"200": {"description": "stored (duplicates once)",
                                  "content": {JSON: {"schema": FEEDBACK_SUMMARY}}},
                          **_errors(400, 401, 413, 415)}}}
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "Spine Coding CDS", "version": "0.1.0",
                 "description": "CDS Hooks 2.0 service for spine diagnosis coding (M43.1-, M54.1-). "
                                "Every error is a FHIR OperationOutcome."},
        "paths": paths,
        "components": {"schemas": {"OperationOutcome": OPERATION_OUTCOME, "CardsResponse": CARDS_RESPONSE}},
    }
    if runtime().settings.auth_enabled:
        doc["components"]["securitySchemes"] = {"cdsHooksJwt": {"type": "http", "scheme": "bearer",
                                                                "bearerFormat": "JWT"}}
        for path, operations in paths.items():
            if path.startswith("/cds-services") or path == "/stats":
                for operation in operations.values():
                    operation["security"] = [{"cdsHooksJwt": []}]
    return doc


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(document())
