"""A hook call, start to finish: request → FHIR record → findings → rules → cards.

One budget (SPINE_CDS_HOOK_DEADLINE) covers the whole call. FHIR fetches share it: required
data not fetched within it is a 412. When reading the text or running the rules would go past
it, the answer is {"cards": []}: a late card is worse than none inside a clinician's click. The
timeout is logged with the hookInstance and counted in the database.

Everything besides the body is passed in: the `Runtime` (service/runtime.py: tabular, lexicons,
templates, the store or none) and the `Call` (where the cards link to, what the answer is recorded
as, whether feedback screens it). Nothing here reads an HTTP request or module-level state, so the
service, the CLI and the audit run the same pipeline.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

from .deadline import Deadline, DeadlineExceeded
from .findings import gather_findings
from .hook_request import parse_hook_request
from .record import build_record
from . import cdi_review, code_set, suppression
from .rules import RuleContext, describe_rule_limits, evaluate
from .rules.resolve import MADE_HERE
from .services import CdsService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """How one hook call is answered, besides its body: given by the caller.

    - `rules_url`: the base URL the cards' links point to (`{rules_url}/rules/{rule}`).
    - `origin`: what the issued cards and a timeout are recorded as ('ehr', 'playground'); None
      records nothing (the rule pages' worked examples, the warm-up, the audit).
    - `screen`: feedback suppresses cards (False: the playground and the rule pages, whose
      vignettes share one demo patient: one accept there must not hide the card everywhere).
    - `as_of`: the day the code set is checked for instead of the encounter's (the rule pages'
      worked examples, evaluated within the loaded release's period; service/code_set.py).
    - `defer(fn)`: runs fn after the answer is sent (the HTTP layer): the record of issued cards
      is written then, off the clinician's wait. None: at once.
    """

    rules_url: str
    origin: str | None = "ehr"
    screen: bool = True
    as_of: date | None = None
    defer: Callable | None = None


@dataclass
class Answer:
    """The hook's answer (`response`, the JSON sent), and what became of the rules' cards: counts
    by (rule, kind) of the cards shown, silent (silent mode) and suppressed (feedback), and whether
    the deadline cut the call short (then `response` is {"cards": []})."""

    response: dict
    timed_out: bool = False
    shown: Counter = field(default_factory=Counter)
    silent: Counter = field(default_factory=Counter)
    suppressed: Counter = field(default_factory=Counter)
    elapsed_ms: float = 0.0

    @property
    def cards(self) -> list[dict]:
        return self.response["cards"]


def answer_hook(runtime, service: CdsService, body, call: Call) -> Answer:
    """The hook's answer to `body` (a parsed CDS Hooks request) for `service`; a Problem (4xx)
    when the request or the record it needs is not usable."""
    request = parse_hook_request(body, service)
    store = runtime.store if call.origin is not None else None  # where the call is recorded, if anywhere
    screen = call.screen and runtime.store is not None
    deadline = Deadline(runtime.settings.hook_deadline)
    reader = runtime.fhir.reader(request.fhir, deadline)
    if request.fhir.server and reader is None:
        log.warning("hookInstance=%s fhirServer is not on the allowlist: not contacted", request.hook_instance)
    try:
        try:
            record = build_record(request, reader, deadline)
        except DeadlineExceeded:
            raise
        except Exception:
            log.info("hookInstance=%s service=%s record unavailable after %.1f ms",
                     request.hook_instance, service.id, deadline.elapsed_ms())
            raise
        view = service.view  # a service that shows part of the cards (the CDI review; cdi_review.py)
        if view is not None:
            cdi_review.current_encounter(record, view)
        findings = gather_findings(record, runtime.reader, runtime.value_sets, runtime.terminology, deadline)
        context = RuleContext(runtime.terminology, runtime.value_sets, service.hook, runtime.settings.max_cards,
                              shows=cdi_review.shows(view, runtime.catalogue) if view is not None else None)
        screened: list = []  # the rules' candidates suppressed by feedback, before the arbitration

        def before_arbitration(candidates):
            # Only the codes of the loaded release take part (service/code_set.py), then feedback.
            candidates = code_set.of_the_release(candidates, runtime.terminology, record)
            if not screen:
                return candidates
            kept, gone = suppression.split(runtime, record, candidates)
            screened.extend(gone)
            return kept

        issued = evaluate(findings, context, deadline, screen=before_arbitration)  # one decision per subject
        # Dated outside the loaded release's period: no suggestion sets a code, and every card says why.
        dated = code_set.date_call(runtime.release, record, call.as_of)
        issued, withheld = code_set.vouch(issued, record, runtime.terminology, dated)
        cards = [card.to_json(runtime.catalogue, call.rules_url) for card in issued]
        if view is not None:
            cdi_review.reindicate(cards, view)
            screened[:] = [card for card in screened if context.shows(card)]  # never shown by this view
        if not dated.covered:
            _say_why(runtime, cards, dated, withheld)
    except DeadlineExceeded:
        log.warning("hookInstance=%s service=%s deadline of %.0f ms exceeded (%.1f ms): answered no cards",
                    request.hook_instance, service.id, deadline.budget_ms, deadline.elapsed_ms())
        if store is not None:
            store.record_timeout(service.id, request.hook_instance, deadline.elapsed_ms(), origin=call.origin)
        return Answer({"cards": []}, timed_out=True, elapsed_ms=deadline.elapsed_ms())
    key = runtime.catalogue.contract["extension_key"]
    silent = [c for c in cards if runtime.is_silent(c["extension"][key]["rule"])]
    live = [(card, c) for card, c in zip(issued, cards) if not runtime.is_silent(c["extension"][key]["rule"])]
    # Suppression (service/suppression.py): cards already accepted or overridden with a reason for this
    # patient, subject and rule within the window are recorded as suppressed, not shown.
    keys = suppression.card_keys(runtime, record, issued + screened) if store is not None or screen else {}
    made_here = [(c, j) for c, j in live if c.rule in MADE_HERE]  # the rules' cards were screened before
    if screen and made_here:
        shown_made, suppressed = suppression.screen(runtime, record, made_here, keys)
        shown = [j for c, j in live if c.rule not in MADE_HERE or j in shown_made]
    else:
        shown, suppressed = [c for _, c in live], []
    suppressed += [card.to_json(runtime.catalogue, call.rules_url) for card in screened]
    if service.view is not None:
        cdi_review.reindicate(suppressed, service.view)
    # After the answer: the issued cards are written within the hook-path database timeout, else kept
    # in the store's bounded queue and retried (service/store.py); never raised, never waited on. Then
    # the scheduled purge, at most once a day (Store.maintain: a flag for the writer thread).
    to_record = bool(cards or suppressed)  # now: `cards` is rebound to the shown ones below

    def write_issued() -> None:
        args = (service.id, service.hook, request.hook_instance)
        if to_record:
            store.record_issued(*args, shown, key, keys=keys, origin=call.origin)
            store.record_issued(*args, silent, key, silent=True, keys=keys, origin=call.origin)
            store.record_issued(*args, suppressed, key, suppressed=True, keys=keys, origin=call.origin)
        store.maintain()
    if store is not None:
        (call.defer or (lambda fn: fn()))(write_issued)
    if suppressed:
        log.info("hookInstance=%s service=%s suppressed=%d (feedback already given within the window)",
                 request.hook_instance, service.id, len(suppressed))
    cards = shown
    response: dict = {"cards": cards}
    degraded = _degraded(record)
    if findings.limits:
        degraded["limits"] = runtime.reader.describe_limits(findings.limits) + describe_rule_limits(findings.limits)
    if not dated.covered:
        degraded["codeSet"] = dated.to_json(withheld.suggestions, _note(runtime, dated, []))
    if degraded:
        response["extension"] = {runtime.catalogue.contract["extension_key"]: degraded}
    log.info(
        "hookInstance=%s service=%s cards=%d conditions=%d reports=%d notes=%d orders=%d "
        "texts=%d fetched=%s skipped=%d unavailable=%s ms=%.1f",
        request.hook_instance, service.id, len(cards), len(record.conditions),
        len(record.diagnostic_reports), len(record.document_references), len(record.draft_orders),
        len(record.texts), ",".join(record.fetched) or "-", len(record.skipped),
        ",".join(record.unavailable) or "-", deadline.elapsed_ms(),
    )
    for problem in record.skipped:
        log.info("hookInstance=%s skipped %s: %s", request.hook_instance, problem.reference, problem.logged)
    answer = Answer(response, elapsed_ms=deadline.elapsed_ms())
    for bucket, shown_as in ((cards, answer.shown), (silent, answer.silent), (suppressed, answer.suppressed)):
        for card in bucket:
            shown_as[(card["extension"][key]["rule"], card["source"]["topic"]["code"])] += 1
    return answer


def _note(runtime, dated, codes) -> str:
    """Why the answer sets no code (cards/_code_set.md), for a card (its codes) or the answer."""
    release = runtime.release
    values = {"release": release.title, "period": release.period is not None, "date": dated.written,
              "source": dated.source, "codes": list(codes)}
    if release.period is not None:
        values.update(start=release.period.start.isoformat(), end=release.period.end.isoformat())
    return " ".join(runtime.catalogue.env.get_template("_code_set.md").render(values).split())


def _say_why(runtime, cards: list[dict], dated, withheld) -> None:
    """Each card of an answer dated outside the period: the note after its detail, `codeSet` in its extension."""
    key = runtime.catalogue.contract["extension_key"]
    for card in cards:
        codes = withheld.cards.get(card["uuid"])
        if codes is None:
            continue  # the summary card (RESOLVE-MORE)
        note = _note(runtime, dated, codes)
        card["detail"] = f"{card['detail']}\n\n{note}" if card.get("detail") else note
        card["extension"][key]["codeSet"] = {"covered": False, "date": dated.written}


def _degraded(record) -> dict:
    """What the answer could not take into account, so an integrator can see it (no content)."""
    out = {}
    if record.unavailable:
        out["unavailable"] = [{"prefetch": key, "reason": reason} for key, reason in record.unavailable.items()]
    if record.skipped:
        out["skipped"] = [{"reference": p.reference, "problem": p.problem} for p in record.skipped]
    return out
