"""The wire format, described once: pydantic models of the CDS Hooks 2.0 hook request, the feedback
request and the card, from which everything that reads or writes it is derived:

- the request checks (`hook_request.parse_hook_request`) and the feedback checks
  (`api.feedback.parse_feedback`): `validate()` runs the model, and turns a failure into the
  service's OperationOutcome issues: a FHIR issue code, a sentence naming the field (`Says`,
  attached to the field in the model) and a FHIRPath-like `expression` (`context.draftOrders.entry[1]`);
- the OpenAPI document (`api.openapi`): `components()` is the models' JSON Schema, in the
  OpenAPI 3.0 dialect (`OpenApiSchema`), every model under `components/schemas`;
- the card contract check (`cards.contract_problems`): `card_problems()` checks the structure of
  a card as the service issues it; the contract's vocabulary and wording rules stay in cards.py.

Only the envelope is validated. A prefetch value or a draft order is checked for being a FHIR
resource (an object with a `resourceType`), no more: the resources themselves are parsed once,
later, with fhir.resources (record.py), one at a time so that an invalid one is skipped, not fatal.
Validation is strict (no coercion: `"5"` is not an integer, `1` is not a string) and keeps nothing:
callers go on with the request's own dicts once it has passed.

The requests are TypedDicts, not BaseModels: pydantic validates them without building an object
per part, which is what makes the model-derived check faster than the hand-written one it
replaced (bench/wire.py). The card, validated only by tests, is a BaseModel.

Rules that tie two fields together (fhirAuthorization needs fhirServer; an accepted outcome needs
acceptedSuggestions; a create or update action carries its resource; suggestions need a
selectionBehavior) are validators of their model, and appear in its schema as an `anyOf`.
"""
import copy
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import UnionType
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema,
                      WrapValidator, model_validator, with_config)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict, is_typeddict

from .errors import Issue

MAX_ISSUES = 50          # issues in one OperationOutcome; past it one "more problems not listed"
FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
USER_REFERENCE = r"^(Practitioner|PractitionerRole)/[A-Za-z0-9\-.]{1,64}$"
HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"

# defaults of SPINE_CDS_FEEDBACK_MAX_ITEMS and SPINE_CDS_FEEDBACK_MAX_COMMENT (the served model
# takes the settings: `feedback_model`)
FEEDBACK_MAX_ITEMS = 100
FEEDBACK_MAX_COMMENT = 2000
MAX_CODING_CHARS = 512   # overrideReason.reason system, code, display
MAX_SUGGESTIONS = 64     # acceptedSuggestions per item

# FHIR IssueType codes our own validators raise (PydanticCustomError's type): passed on as they are
ISSUE_CODES = frozenset({"invalid", "required", "structure", "not-supported", "code-invalid", "too-long", "too-costly"})
_TOO_LONG = frozenset({"too_long", "string_too_long"})
_TOO_SHORT = frozenset({"too_short", "string_too_short"})
_MISMATCH = frozenset({"literal_error", "enum"})


# ------------------------------------------------------------------ how a field is named when wrong
@dataclass(frozen=True)
class Says:
    """What the service answers when this field is wrong: attached to the field in the model
    (`Annotated[str, Says(...)]`), read by `issues()`. Placeholders: {name} (the field), {parent}
    (the field holding it), {length} (the value's length), {max_length}, {value} (the value, repr)."""

    invalid: str                       # the value is malformed
    code: str = "invalid"
    missing: str | None = None         # the field is absent (default "{name} is required")
    missing_code: str = "required"
    too_long: str | None = None        # the value itself is over its max_length
    too_long_code: str = "too-long"
    too_short: str | None = None
    too_short_code: str = "required"
    mismatch: str | None = None        # a non-empty string, but not the one expected
    mismatch_code: str = "invalid"
    item: str | None = None            # a problem inside an element of this array/object: reported at the element
    collapse: bool = False             # a problem inside the value: reported at the field, as `invalid`
    at_parent: bool = False            # reported at the object holding the field (it is what is wrong)


NULL_OMIT = "{name} must not be null: omit it when it has no value"


def wire_object(cls=None, *, null: str | None = None, wrong_type: Says | None = None, schema: dict | None = None,
                extra: str = "ignore"):
    """A request object of the wire format (a TypedDict): strict, unknown members ignored (CDS Hooks)
    unless `extra`; `null`: how a null member is refused (CDS Hooks: elements "SHALL NOT be null");
    `wrong_type`: what is said when the object is not an object; `schema`: added to its JSON Schema."""
    def apply(cls):
        cls = with_config(ConfigDict(strict=True, extra=extra, json_schema_extra=schema))(cls)
        cls.null_message, cls.wrong_type = null, wrong_type
        return cls
    return apply(cls) if cls is not None else apply


def _not_null(value):
    if value is None:
        raise ValueError("null")
    return value


# any JSON value but null (OpenAPI 3.0 has no "null" type: each type is not nullable by default)
_ANY_BUT_NULL = {"anyOf": [{"type": t} for t in ("string", "number", "boolean", "object", "array")]}
NotNull = Annotated[Any, AfterValidator(_not_null), WithJsonSchema(_ANY_BUT_NULL)]


def _absolute_http_url(value: str) -> str:
    parts = urlsplit(value)  # ValueError for a malformed one (an unclosed IPv6 bracket)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an absolute http(s) URL")
    return value


def parse_timestamp(value) -> datetime | None:
    """An RFC 3339 date-time with a time zone, or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else None


def _timestamp(value: str) -> str:
    if parse_timestamp(value) is None:
        raise ValueError("not an RFC 3339 date-time with a time zone")
    return value


def cross_check(rule):
    """A validator for a rule across fields: `rule(data)` gives [(loc, issue code, message)]; its
    errors join those of the fields, so that every problem is reported at once (an `after`
    validator would not run once a field failed)."""
    def validate(data, handler):
        extra = rule(data) if isinstance(data, dict) else []
        if not extra:
            return handler(data)
        try:
            handler(data)
            errors = []
        except ValidationError as exc:
            errors = [_line_error(e) for e in exc.errors()]
        raise ValidationError.from_exception_data(
            "wire", errors + [{"type": PydanticCustomError(code, message), "loc": loc, "input": data.get(loc[0])}
                              for loc, code, message in extra])
    return WrapValidator(validate)


def _line_error(error: dict) -> dict:
    kind = error["type"]
    out = {"loc": error["loc"], "input": error.get("input")}
    if kind in ISSUE_CODES:
        out["type"] = PydanticCustomError(kind, error["msg"])
    else:
        out["type"] = kind
        if "ctx" in error:
            out["ctx"] = error["ctx"]
    return out


# ---------------------------------------------------------------------------------- hook request
@wire_object
class FhirResource(TypedDict):
    """A FHIR resource, as far as the envelope is concerned: an object with a resourceType. Its
    content is parsed later (fhir.resources, one resource at a time: an invalid one is skipped)."""

    resourceType: str


@wire_object
class BundleEntry(TypedDict):
    resource: FhirResource


_BUNDLE = "{parent} must be a FHIR Bundle"


@wire_object
class DraftOrders(TypedDict):
    """A FHIR Bundle of the orders being signed (any request type). Bundle.type is often missing in
    the wild (cds-hooks/docs#517): not required."""

    resourceType: Annotated[Literal["Bundle"], Says(_BUNDLE, missing=_BUNDLE, missing_code="invalid", at_parent=True)]
    entry: NotRequired[Annotated[list[BundleEntry], Says("Bundle.entry must be an array",
                                                         item="each entry needs a resource with a resourceType")]]


_TOKEN = "access_token must be a non-empty string"


@wire_object
class FhirAuthorization(TypedDict):
    """The bearer token for the FHIR server (never logged or stored)."""

    access_token: Annotated[str, Field(min_length=1), Says(_TOKEN, code="required", missing=_TOKEN)]
    token_type: Annotated[str, Field(pattern="^[Bb][Ee][Aa][Rr][Ee][Rr]$", description="Bearer (in any case)"),
                          Says("token_type must be 'Bearer'", missing="token_type must be 'Bearer'",
                               missing_code="invalid")]
    expires_in: NotRequired[Annotated[int, Says("expires_in must be an integer number of seconds")]]
    scope: NotRequired[Annotated[str, Says("scope must be a string")]]
    subject: NotRequired[Annotated[str, Says("subject must be a string")]]
    patient: NotRequired[Annotated[str, Says("patient must be a string")]]


FhirId = Annotated[str, Field(pattern=FHIR_ID, description="a FHIR id")]
UserReference = Annotated[str, Field(pattern=USER_REFERENCE, description="Practitioner/<id> or PractitionerRole/<id>")]

RESOURCE_REFERENCE = r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$"
ResourceReference = Annotated[str, Field(pattern=RESOURCE_REFERENCE, description="<resourceType>/<id>")]
_REFERENCE = re.compile(RESOURCE_REFERENCE)

_CONTEXT_KINDS = {
    "id": (FhirId, "{name} must be a FHIR id (letters, digits, '-', '.'; at most 64)"),
    "user": (UserReference, "{name} must be Practitioner/<id> or PractitionerRole/<id>"),
    "bundle": (DraftOrders, "{name} must be a FHIR Bundle"),
    # order-select's `selections`: each names an entry of the bundle the field refers to (checked
    # across fields: `_references_name_entries`)
    "references": (list[ResourceReference], "{name} must be an array of references such as ServiceRequest/123",
                   {"item": "each of {name} must be a reference such as ServiceRequest/123"}),
}

PREFETCH_VALUE = "a prefetch value must be a FHIR resource, a Bundle, an OperationOutcome or null"


def _camel(hook: str) -> str:
    return "".join(part.capitalize() for part in hook.split("-"))


def _fhir_server_with_authorization(data: dict) -> list:
    if isinstance(data.get("fhirAuthorization"), dict) and "fhirServer" not in data:
        return [(("fhirServer",), "required", "fhirServer is required when fhirAuthorization is given")]
    return []


_SERVER_WITH_AUTHORIZATION = {"anyOf": [{"not": {"required": ["fhirAuthorization"]}}, {"required": ["fhirServer"]}]}
_REQUESTS: dict[str, tuple] = {}


def hook_request_model(service):
    """The request model of one CDS service (services.CdsService): a TypedDict, its context from
    the service's declaration."""
    known = _REQUESTS.get(service.id)
    if known is None or known[0] is not service:
        known = _REQUESTS[service.id] = (service, _build_request_model(service))
    return known[1]


def _references_name_entries(fields: tuple):
    """The rule across context fields of a service whose references (order-select's `selections`)
    must each name an entry (`Type/id`) of a bundle of the same context (`draftOrders`)."""
    def rule(context: dict) -> list:
        out = []
        for name, bundle_name in fields:
            references, bundle = context.get(name), context.get(bundle_name)
            if not isinstance(references, list) or not isinstance(bundle, dict) or not isinstance(bundle.get("entry"), list):
                continue  # malformed: the fields' own checks say so
            entries = {f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}" for e in bundle["entry"]
                       if isinstance(e, dict) and isinstance(e.get("resource"), dict)}
            for n, reference in enumerate(references):
                if isinstance(reference, str) and _REFERENCE.fullmatch(reference) and reference not in entries:
                    out.append(((name, n), "invalid", f"{name}[{n}] {reference!r} is not an entry of {bundle_name}: "
                                                      f"each selection must name a resource of {bundle_name} by Type/id"))
        return out
    return rule


def _build_request_model(service):
    name = _camel(service.hook)
    fields = {}
    for spec in service.context:
        kind, message, *more = _CONTEXT_KINDS[spec.kind]
        extra = {k: v.replace("{name}", spec.name) for k, v in (more[0] if more else {}).items()}
        annotated = Annotated[kind, Field(description=spec.description or None), Says(
            message.replace("{name}", spec.name), missing=f"{spec.name} is required by the {service.hook} hook",
            **extra)]
        fields[spec.name] = annotated if spec.required else NotRequired[annotated]
    context = TypedDict(f"{name}Context", fields)
    context.__doc__ = f"The context of the {service.hook} hook."
    context = wire_object(context, null=NULL_OMIT)
    referring = tuple((spec.name, spec.refers_to) for spec in service.context if spec.refers_to)
    checks = (cross_check(_references_name_entries(referring)),) if referring else ()
    request = TypedDict(f"{name}Request", {
        "hook": Annotated[Literal[service.hook], Says(
            "hook must be a non-empty string", missing="hook is required", mismatch_code="not-supported",
            mismatch=f"service {service.id} answers the hook {service.hook!r}, not {{value}}")],
        "hookInstance": Annotated[uuid.UUID, Field(strict=False), Says(
            "hookInstance must be a UUID string", missing="hookInstance is required")],
        "fhirServer": NotRequired[Annotated[str, Field(
            pattern=HTTP_URL, json_schema_extra={"format": "uri"},
            description="the FHIR server's base URL; required with fhirAuthorization"),
            AfterValidator(_absolute_http_url), Says("fhirServer must be an absolute http(s) URL")]],
        "fhirAuthorization": NotRequired[Annotated[FhirAuthorization, Says("fhirAuthorization must be an object")]],
        "context": Annotated[context, *checks, Says("context must be an object", missing="context is required")],
        "extension": NotRequired[Annotated[dict[str, Any], Says("extension must be an object")]],
        "prefetch": NotRequired[Annotated[dict[str, FhirResource | None], Says(
            "prefetch must be an object of prefetch keys", item=PREFETCH_VALUE)]],
    })
    request.__doc__ = f"A CDS Hooks 2.0 request of the {service.hook} hook ({service.id})."
    request = wire_object(request, null=NULL_OMIT, schema=_SERVER_WITH_AUTHORIZATION)
    return Model(request, cross_check(_fhir_server_with_authorization))


# -------------------------------------------------------------------------------------- feedback
FEEDBACK_BODY = "the body must be an object with a `feedback` array"
_CODING = "overrideReason.reason must be a Coding with a code"
_CODING_LONG = f"overrideReason.reason system, code and display: at most {MAX_CODING_CHARS} characters each"
_TIMESTAMP = "outcomeTimestamp must be an RFC 3339 date-time with a time zone, e.g. 2026-11-21T10:00:00Z"


@wire_object
class AcceptedSuggestion(TypedDict):
    id: Annotated[str, Field(min_length=1, max_length=64, description="the suggestion's uuid")]


_CodingText = Annotated[str, Field(max_length=MAX_CODING_CHARS),
                        Says(_CODING, missing=_CODING, missing_code="invalid", too_long=_CODING_LONG, at_parent=True)]


@wire_object
class OverrideCoding(TypedDict):
    """The override reason's Coding (display optional inbound: the spec's own example omits it)."""

    code: _CodingText
    system: NotRequired[_CodingText]
    display: NotRequired[_CodingText]


def _accepted_names_its_suggestions(item: dict) -> list:
    if item.get("outcome") == "accepted" and item.get("acceptedSuggestions") is None:
        return [(("acceptedSuggestions",), "required", "acceptedSuggestions is required for accepted outcomes")]
    return []


_ACCEPTED_NAMES_SUGGESTIONS = {"anyOf": [{"properties": {"outcome": {"enum": ["overridden"]}}},
                                         {"required": ["acceptedSuggestions"]}]}


@lru_cache(maxsize=8)
def feedback_model(max_items: int = FEEDBACK_MAX_ITEMS, max_comment: int = FEEDBACK_MAX_COMMENT):
    """The feedback request, with the caps of the settings (SPINE_CDS_FEEDBACK_MAX_ITEMS,
    SPINE_CDS_FEEDBACK_MAX_COMMENT)."""

    @wire_object(null="{name} must not be null", extra="allow")
    class OverrideReason(TypedDict, extra_items=NotNull):
        reason: NotRequired[Annotated[OverrideCoding, Says(_CODING)]]
        userComment: NotRequired[Annotated[str, Field(max_length=max_comment), Says(
            "userComment must be a string",
            too_long="userComment has {length} characters: at most {max_length} (SPINE_CDS_FEEDBACK_MAX_COMMENT)")]]

    @wire_object(null=NULL_OMIT, extra="allow", schema=_ACCEPTED_NAMES_SUGGESTIONS,
                 wrong_type=Says("a feedback item must be an object", code="structure"))
    class FeedbackItem(TypedDict, extra_items=NotNull):
        """Feedback on one card. acceptedSuggestions is required when the outcome is accepted."""

        card: Annotated[str, Field(min_length=1, max_length=64, description="the uuid of the card"), Says(
            "card must be the card's uuid", code="required", missing="card must be the card's uuid")]
        outcome: Annotated[Literal["accepted", "overridden"], Says(
            "outcome must be 'accepted' or 'overridden'", code="code-invalid",
            missing="outcome must be 'accepted' or 'overridden'", missing_code="code-invalid")]
        outcomeTimestamp: Annotated[str, Field(max_length=64, pattern=RFC3339, json_schema_extra={"format": "date-time"}),
                                    AfterValidator(_timestamp),
                                    Says(_TIMESTAMP, missing=_TIMESTAMP, missing_code="invalid")]
        acceptedSuggestions: NotRequired[Annotated[list[AcceptedSuggestion], Field(max_length=MAX_SUGGESTIONS), Says(
            "acceptedSuggestions must be a list of {id: suggestion uuid}", collapse=True,
            too_long=f"at most {MAX_SUGGESTIONS} acceptedSuggestions per item")]]
        overrideReason: NotRequired[Annotated[OverrideReason, Says("overrideReason must be an object")]]

    @wire_object
    class FeedbackRequest(TypedDict):
        """CDS Hooks 2.0 feedback: one item per card."""

        feedback: Annotated[
            list[Annotated[FeedbackItem, cross_check(_accepted_names_its_suggestions)]],
            Field(min_length=1, max_length=max_items),
            Says(FEEDBACK_BODY, code="required", missing=FEEDBACK_BODY,
                 too_short="`feedback` must hold at least one item",
                 too_long="{length} feedback items: at most {max_length} per request (SPINE_CDS_FEEDBACK_MAX_ITEMS); "
                          "send them in several requests")]

    return Model(FeedbackRequest)


@wire_object
class FeedbackSummary(TypedDict):
    """What became of the feedback: stored once, duplicates counted, cards we never issued named."""

    received: int
    stored: int
    duplicates: int
    unknownCards: list[str]


class Model:
    """A request model ready to check: its TypedDict (`.type`, for the schema and the error
    wording) and its validator."""

    def __init__(self, typed_dict, *validators):
        self.type = typed_dict
        self.name = typed_dict.__name__
        self.adapter = TypeAdapter(Annotated[typed_dict, *validators] if validators else typed_dict)
        self._validate = self.adapter.validator.validate_python

    def validate(self, data, root: str = "$") -> list[Issue]:
        """The issues of `data` ([] when it conforms)."""
        try:
            self._validate(data)
        except ValidationError as exc:
            return issues(self.type, exc, root)
        return []


# ------------------------------------------------------------------------------------------ cards
class WireModel(BaseModel):
    """A part of the card: strict (no coercion), other members ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class CardCoding(WireModel):
    """A Coding as cards carry it (source.topic, overrideReasons): code, system and display."""

    code: Annotated[str, Field(min_length=1)]
    system: Annotated[str, Field(min_length=1)]
    display: Annotated[str, Field(min_length=1)]


Url = Annotated[str, Field(pattern=HTTP_URL, json_schema_extra={"format": "uri"})]
Uuid = Annotated[uuid.UUID, Field(strict=False)]
Text = Annotated[str, Field(min_length=1)]


class CardSource(WireModel):
    label: Text
    url: Url
    icon: Url = None
    topic: CardCoding


class Action(WireModel):
    """A change to the EHR's record: create and update carry the whole resource."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"properties": {"type": {"enum": ["delete"]}}},
                                                           {"required": ["resource"]}]})
    type: Literal["create", "update", "delete"]
    description: Text
    resource: Annotated[dict[str, Any], Field(min_length=1)] = None
    resourceId: Text = None

    @model_validator(mode="after")
    def _whole_resource(self):
        if self.type in ("create", "update") and self.resource is None:
            raise PydanticCustomError("invalid", "a create or update action needs the whole resource")
        return self


class Suggestion(WireModel):
    label: Text
    uuid: Uuid
    isRecommended: bool = None
    actions: Annotated[list[Action], Field(min_length=1)] = None


class Link(WireModel):
    label: Text
    url: Url
    type: Literal["absolute", "smart"]
    appContext: Text = None


class Evidence(WireModel):
    """Where the card's finding was read: resource, element, the quoted sentence, its assertion."""

    reference: Text
    element: Text
    text: Text
    assertion: Literal["affirmed", "negated", "uncertain", "historical"]
    date: Text = None


class CardPayload(WireModel):
    """The `spine-coding-cds` extension of every card (the card contract)."""

    model_config = ConfigDict(extra="allow")
    rule: Text
    currentCodes: list[str]
    proposedCodes: list[str]
    missingDocumentation: Annotated[list[Text], Field(min_length=1)] = None
    evidence: list[Evidence]


class CardExtension(WireModel):
    model_config = ConfigDict(extra="allow")
    spine_coding_cds: CardPayload = Field(alias="spine-coding-cds")


class Card(WireModel):
    """A CDS Hooks 2.0 card as this service issues it (the card contract's structure)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"not": {"required": ["suggestions"]}},
                                                           {"required": ["selectionBehavior"]}]})
    uuid: Uuid
    summary: Annotated[str, Field(min_length=1, max_length=139)]
    detail: Text = None
    indicator: Literal["info", "warning", "critical"]
    source: CardSource
    suggestions: Annotated[list[Suggestion], Field(min_length=1)] = None
    selectionBehavior: Literal["at-most-one", "any"] = None
    overrideReasons: Annotated[list[CardCoding], Field(min_length=1)] = None
    links: Annotated[list[Link], Field(min_length=1)] = None
    extension: CardExtension

    @model_validator(mode="after")
    def _selection_with_suggestions(self):
        if self.suggestions and self.selectionBehavior is None:
            raise PydanticCustomError("invalid", "selectionBehavior required with suggestions")
        return self


class CardsResponse(WireModel):
    """The answer to a hook call: the cards (an empty array when there is nothing to say) and, when
    part of the record could not be used, what and why (`spine-coding-cds`: unavailable, skipped)."""

    cards: list[Card]
    extension: Annotated[dict[str, Any], Field(min_length=1)] = None


class OperationOutcomeIssue(WireModel):
    severity: str
    code: str
    diagnostics: str
    expression: list[str] = None


class OperationOutcome(WireModel):
    """Every error the service answers: what is wrong, and where (issue.expression)."""

    resourceType: Literal["OperationOutcome"]
    issue: Annotated[list[OperationOutcomeIssue], Field(min_length=1)]


def card_problems(card) -> list[str]:
    """Every way a card JSON breaks the card model, as "where: what"; empty when it conforms."""
    try:
        Card.model_validate(card)
    except ValidationError as exc:
        return [f"{expression(e['loc']) if e['loc'] else 'card'}: {e['msg']}" for e in exc.errors(include_url=False)]
    return []


# --------------------------------------------------------------------- ValidationError → issues
def expression(loc) -> str:
    """A pydantic location as the service's FHIRPath-like expression: `feedback[0].card`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def _fill(template: str, value=None, **values) -> str:
    for key, text in values.items():
        template = template.replace("{" + key + "}", str(text))
    return template.replace("{value}", repr(value)) if value is not None else template  # the caller's text last


@lru_cache(maxsize=None)
def _fields(typed_dict) -> dict:
    """name → (annotation, Says or None) of a wire object."""
    out = {}
    for name, annotation in get_type_hints(typed_dict, include_extras=True).items():
        while get_origin(annotation) in (NotRequired, Required):
            annotation = get_args(annotation)[0]
        says = None
        if get_origin(annotation) is Annotated:
            says = next((m for m in annotation.__metadata__ if isinstance(m, Says)), None)
        out[name] = (annotation, says)
    return out


def _element(annotation):
    """(the type of the value, how many location parts its containers take) for a field's annotation."""
    steps = 0
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        elif origin is list:
            annotation, steps = get_args(annotation)[0], steps + 1
        elif origin is dict:
            annotation, steps = get_args(annotation)[1], steps + 1
        else:
            return annotation, steps


def _issue(typed_dict, error: dict) -> Issue:
    loc, kind, value = error["loc"], error["type"], error.get("input")
    current, i = typed_dict, 0
    while i < len(loc):
        name = loc[i]
        field = _fields(current).get(name) if isinstance(name, str) else None
        here = loc[:i + 1]
        if field is None:  # a member the object does not declare: only a null one is refused
            if value is None and current.null_message:
                return Issue("invalid", _fill(current.null_message, name=name), expression(here))
            break
        annotation, says = field
        rest = loc[i + 1:]
        if not rest:
            return _field_issue(current, name, says, error, here, loc[:i])
        if says is not None and says.item and kind not in ISSUE_CODES:  # a cross-field rule's own wording stays
            return Issue(says.code, says.item, expression(loc[:i + 2]))
        if says is not None and says.collapse:
            return Issue(says.code, _fill(says.invalid, name=name), expression(here))
        element, steps = _element(annotation)
        if not is_typeddict(element):
            break
        current, i = element, i + 1 + steps
        if i >= len(loc):  # the element itself is wrong (not an object)
            if current.wrong_type is not None:
                return Issue(current.wrong_type.code, current.wrong_type.invalid, expression(loc))
            break
    if kind in ISSUE_CODES:
        return Issue(kind, error["msg"], expression(loc))
    return Issue("invalid", f"{expression(loc)}: {error['msg']}", expression(loc))


def _field_issue(typed_dict, name: str, says: Says | None, error: dict, here: tuple, parent: tuple) -> Issue:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind in ISSUE_CODES:  # raised by the model's own validators, worded there
        return Issue(kind, error["msg"], expression(here))
    if kind != "missing" and value is None and typed_dict.null_message:
        return Issue("invalid", _fill(typed_dict.null_message, name=name), expression(here))
    if says is None:
        return Issue("required" if kind == "missing" else "invalid", f"{expression(here)}: {error['msg']}",
                     expression(here))
    where = expression(parent if says.at_parent else here)
    names = {"name": name, "parent": next((p for p in reversed(parent) if isinstance(p, str)), name)}
    if kind == "missing":
        return Issue(says.missing_code, _fill(says.missing or "{name} is required", **names), where)
    if kind in _TOO_LONG and says.too_long:
        return Issue(says.too_long_code, _fill(says.too_long, length=len(value), max_length=ctx.get("max_length"),
                                               **names), where)
    if kind in _TOO_SHORT and says.too_short:
        return Issue(says.too_short_code, _fill(says.too_short, **names), where)
    if kind in _MISMATCH and says.mismatch and isinstance(value, str) and value:
        return Issue(says.mismatch_code, _fill(says.mismatch, value, **names), where)
    return Issue(says.code, _fill(says.invalid, **names), where)


def issues(typed_dict, exc: ValidationError, root: str = "$") -> list[Issue]:
    """The OperationOutcome issues of a failed validation: one per problem, each naming its field;
    an issue about a value hides the issues inside it (a draftOrders that is no Bundle has no
    entries to speak of), a length yields to another problem of the same value; at most MAX_ISSUES,
    then one saying so (at `root`). Errors are read in order until there are more than MAX_ISSUES:
    20,000 malformed entries cost their validation, not 20,000 sentences."""
    found, seen, where, more = [], set(), set(), False
    for error in exc.errors(include_url=False):
        issue = _issue(typed_dict, error)
        key = (issue.expression, issue.code, issue.diagnostics)
        if key in seen or _inside(issue.expression, where):
            continue
        if len(found) == MAX_ISSUES:
            more = True
            break
        seen.add(key)
        where.add(issue.expression)
        found.append(issue)
    wrong = {i.expression for i in found if i.code != "too-long"}
    kept = [i for i in found if not (i.code == "too-long" and i.expression in wrong)]
    if more:
        kept.append(Issue("too-costly", f"more problems not listed (at most {MAX_ISSUES})", root))
    return kept


def _inside(expr: str, where: set[str]) -> bool:
    """Whether an enclosing value of `expr` (`a.b` of `a.b[2].c`) has an issue of its own."""
    for n, char in enumerate(expr):
        if char in ".[" and n and expr[:n] in where:
            return True
    return False


# ---------------------------------------------------------------------- JSON Schema for OpenAPI
class OpenApiSchema(GenerateJsonSchema):
    """pydantic's JSON Schema in the OpenAPI 3.0 dialect: `enum` for constants, `nullable` for null,
    no null defaults (an optional member is omitted, never null), no per-property titles."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema):
        if schema.get("default", object()) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def literal_schema(self, schema):
        out = super().literal_schema(schema)
        if "const" in out:
            out["enum"] = [out.pop("const")]
        return out

    def nullable_schema(self, schema):
        inner = self.generate_inner(schema["schema"])
        if "$ref" in inner:  # `nullable` beside a $ref (or an allOf of one) does not admit null in OpenAPI 3.0
            inner = copy.deepcopy(self.definitions[self.json_to_defs_refs[inner["$ref"]]])
        return {**inner, "nullable": True}


REF = "#/components/schemas/{model}"


def components(services, max_items: int = FEEDBACK_MAX_ITEMS,
               max_comment: int = FEEDBACK_MAX_COMMENT) -> tuple[dict, dict]:
    """({model name: its $ref}, the schemas for components/schemas) of every model on the wire:
    the services' requests, feedback, and the answers."""
    models = [hook_request_model(s) for s in services] + [feedback_model(max_items, max_comment)]
    adapters = [(m.name, m.adapter) for m in models] + [
        (t.__name__, TypeAdapter(t)) for t in (FeedbackSummary, CardsResponse, OperationOutcome)]
    refs, defs = TypeAdapter.json_schemas([(name, "validation", adapter) for name, adapter in adapters],
                                          ref_template=REF, schema_generator=OpenApiSchema)
    return {name: refs[(name, "validation")] for name, _ in adapters}, defs["$defs"]
