"""One patient's audit: their resources, split by encounter, through the same pipeline as a hook call.

`audit_patient(resources)` is a pure function of one patient's resources (the rows of the CSV), the
same on every engine. It runs with the process's runtime (`load_runtime`): the tabular, lexicons
and templates, loaded once per process. The local engine and Dask's local cluster load it in the
parent before they fork their workers, which then share it page for page; a worker of a remote
Dask cluster loads it once when it joins (distributed.RuntimePlugin).
"""
from __future__ import annotations

import uuid
from collections import defaultdict

_RUNTIME = None
RULES_URL = "http://localhost:8080/"  # where the cards' links point in the CSV (SPINE_CDS_PUBLIC_BASE_URL if set)
NAMESPACE = uuid.UUID("5b1f0f3e-6f44-4c8e-9c59-0a2f2a6d8e11")  # hookInstances of the audit: derived, not random


def audit_settings():
    """The settings the audit runs with: the environment's, logging errors only."""
    from ..config import Settings

    return Settings.from_env(overrides={"log_level": "ERROR"})


def load_runtime(settings=None, reuse: bool = False):
    """The process's runtime, built from `settings` (default: the environment's) with no store:
    nothing is recorded. `reuse`: keep the one already loaded (a forked worker's, inherited)."""
    global _RUNTIME
    if reuse and _RUNTIME is not None and (settings is None or _RUNTIME.settings == settings):
        return _RUNTIME
    from ..logs import configure
    from ..runtime import build_runtime

    settings = settings or audit_settings()
    configure(settings.log_level)
    _RUNTIME = build_runtime(settings, store=None)  # the tabular: loaded once per process (runtime.py)
    return _RUNTIME


def init_worker() -> None:
    """The runtime of this process, loaded unless it is already (kept for callers of the old API)."""
    load_runtime(reuse=True)


def patient_of(resource: dict) -> str | None:
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for key in ("subject", "patient"):
        reference = (resource.get(key) or {}).get("reference", "") if isinstance(resource.get(key), dict) else ""
        if "Patient/" in reference:
            return reference.rsplit("Patient/", 1)[1]
    return None


def _encounter_of(resource: dict) -> str | None:
    candidates = [resource.get("encounter")] + [
        e for e in ((resource.get("context") or {}).get("encounter") or []) if isinstance(e, dict)]
    for ref in candidates:
        reference = (ref or {}).get("reference", "") if isinstance(ref, dict) else ""
        if "Encounter/" in reference:
            return reference.rsplit("Encounter/", 1)[1]
    return None


def audit_patient(resources: list[dict]) -> list[dict]:
    """The cards the rules give for each encounter of one patient (rows of the CSV)."""
    from ..bundles import hook_request_from_bundle
    from ..errors import Problem
    from ..pipeline import Call, answer_hook
    from ..services import ENCOUNTER_SIGN

    runtime = _RUNTIME if _RUNTIME is not None else load_runtime()
    call = Call(runtime.settings.public_base_url or RULES_URL, origin=None, screen=False)
    patient = next((patient_of(r) for r in resources if patient_of(r)), "(no patient)")
    encounters = {r["id"]: r for r in resources if r.get("resourceType") == "Encounter" and r.get("id")}
    groups: dict[str | None, list[dict]] = defaultdict(list)
    shared = []
    for resource in resources:
        if resource.get("resourceType") == "Encounter":
            continue
        encounter = _encounter_of(resource)
        (groups[encounter] if encounter else shared).append(resource)
    keys = list(groups) or [None]
    rows = []
    for encounter in keys:
        record = groups.get(encounter, []) + shared + ([encounters[encounter]] if encounter in encounters else [])
        bundle = {"resourceType": "Bundle", "entry": [{"resource": r} for r in record]}
        body = hook_request_from_bundle(bundle, "encounter-sign")
        body["context"].setdefault("encounterId", encounter or "unknown")
        if encounter not in encounters:
            body["prefetch"]["encounter"] = None
        body["hookInstance"] = str(uuid.uuid5(NAMESPACE, f"{patient}/{encounter}"))  # the same on every run
        try:
            answer = answer_hook(runtime, ENCOUNTER_SIGN, body, call).response
        except Problem as problem:
            rows.append({"patient": patient, "encounter": encounter or "", "rule": "(not evaluated)",
                         "summary": "; ".join(i.diagnostics for i in problem.issues)})
            continue
        for card in answer["cards"]:
            payload = card["extension"]["spine-coding-cds"]
            rows.append({
                "patient": patient, "encounter": encounter or "", "rule": payload["rule"],
                "kind": card["source"]["topic"]["code"], "indicator": card["indicator"], "summary": card["summary"],
                "current_codes": " ".join(payload["currentCodes"]), "proposed_codes": " ".join(payload["proposedCodes"]),
                "missing_documentation": " ".join(payload.get("missingDocumentation", [])),
                "evidence": " | ".join(f'{e["reference"]}: {e["text"]}' for e in payload["evidence"]),
            })
    return rows


def unread(patient: str, stage: str, error: str) -> dict:
    """A patient (or `file:line`) that could not be read: the error's type only (a message may quote the chart)."""
    return {"patient": patient, "stage": stage, "error": error}


def evaluate(patient: str, load) -> list[dict] | dict:
    """The patient's rows (`load()` gives their resources), or `unread(...)` when reading or evaluating
    them raised: one patient's data must not stop the audit. The engines all call this."""
    stage = "reading"
    try:
        resources = load()
        stage = "evaluating"
        return audit_patient(resources)  # looked up here, at each call: a test may replace it
    except Exception as exc:  # noqa: BLE001 - one patient's data must not stop the audit
        return unread(patient, stage, type(exc).__name__)
