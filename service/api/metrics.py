"""GET /metrics: the Prometheus text format (OpenMetrics when the scraper asks for it).

Protected like /analytics and /stats: with trusted issuers configured, a JWT whose aud is this URL
(`require_jwt`); open when authentication is off. Under `spine-cds serve` any worker answers the
totals of every worker (service/metrics.py). Also here: what the hook endpoints record (the
hooks blueprint's before/after request functions) and what feedback records.
"""
from __future__ import annotations

import hmac
import time

from flask import Blueprint, Response, current_app, g, request

from .. import metrics
from .common import require_jwt, runtime

blueprint = Blueprint("metrics", __name__)


@blueprint.before_request
def scraper_or_jwt() -> None:
    """SPINE_CDS_METRICS_TOKEN, when set, as a bearer token a scraper can send at every scrape;
    otherwise (and for any other credential) the JWT check of /analytics."""
    rt = runtime()
    token = rt.settings.metrics_token
    if rt.verifier is not None and token:
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return
    require_jwt()

HOOK_ENDPOINT = "hooks.call_service"


def app_metrics() -> metrics.Metrics:
    return current_app.extensions[metrics.EXTENSION]


@blueprint.get("/metrics")
def scrape():
    body, content_type = app_metrics().exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------- recording (hooks, feedback)
def hook_started() -> None:
    """Before a hook call's other before-request functions (the JWT check among them)."""
    g.spine_cds_hook_started = time.perf_counter()


def hook_answered(answer) -> None:
    """The pipeline's `Answer` of this call, for `hook_finished`."""
    g.spine_cds_answer = answer


def hook_finished(response):
    """After a POST to a service, whatever its status (401, 404, 4xx from the pipeline, 5xx)."""
    if request.endpoint == HOOK_ENDPOINT and request.method == "POST":
        started = g.get("spine_cds_hook_started")
        seconds = time.perf_counter() - started if started is not None else 0.0
        service_id = (request.view_args or {}).get("service_id")
        answer = g.get("spine_cds_answer")
        metrics.safely("hook", lambda m: m.hook_call(service_id, response.status_code, answer, seconds))
    return response


def feedback_stored(service_id: str, items: list[dict], summary: dict) -> None:
    metrics.safely("feedback", lambda m: m.feedback(service_id, items, summary))
