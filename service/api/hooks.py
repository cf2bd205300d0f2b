"""Discovery and service calls: GET /cds-services, POST /cds-services/{id}."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from .. import collector
from ..errors import Problem
from ..pipeline import Call, answer_hook
from ..config import PREFIX
from ..services import SERVICES, enabled
from .common import json_body, require_jwt, rules_url, runtime
from .metrics import hook_answered, hook_finished, hook_started

blueprint = Blueprint("hooks", __name__)
log = logging.getLogger(__name__)
blueprint.before_request(hook_started)  # metrics: the call's time, the JWT check included
blueprint.before_request(require_jwt)
blueprint.after_request(hook_finished)  # metrics: by service and outcome, cards from the Answer


@blueprint.get("/cds-services")
def discovery():
    return jsonify({"services": [s.discovery_entry() for s in enabled(runtime().settings).values()]})


@blueprint.post("/cds-services/<service_id>")
def call_service(service_id: str):
    service = enabled(runtime().settings).get(service_id)
    if service is None:
        opt_in = SERVICES.get(service_id)
        if opt_in is not None and opt_in.enabled_by:  # an opt-in service this deployment does not offer
            setting = f"{PREFIX}{opt_in.enabled_by.upper()}"
            raise Problem.of(404, "not-found", f"the CDS service {service_id!r} is not enabled here: it is "
                                               f"offered only with {setting}=true; see GET /cds-services")
        raise Problem.of(404, "not-found", f"no CDS service with id {service_id!r}; see GET /cds-services")
    deferred = []
    answer = answer_hook(runtime(), service, json_body(), Call(rules_url(), defer=deferred.append))
    hook_answered(answer)
    response = jsonify(answer.response)
    for work in deferred:
        response.call_on_close(_logged(work))
    response.call_on_close(collector.after_response)
    return response


def _logged(work):
    """After the response: a failure is logged (type only), it cannot change the answer any more."""
    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the client has its cards; keep the worker alive
            log.error("recording issued cards failed after the response: %s", type(exc).__name__)
    return run
