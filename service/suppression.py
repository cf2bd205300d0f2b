"""Suppression from feedback: a card the clinician accepted, or overrode with a reason, is not shown
again for the same patient, resource and rule within a window (SPINE_CDS_SUPPRESSION_WINDOW).

- **Keys.** A card is recognised by its *suppression key*, HMAC-SHA256(patient id, subject, rule),
  where the subject is the FHIR reference the card is about ("Condition/c1") or, for a card about
  the record as a whole, its sorted current codes. Its *window key* is HMAC-SHA256(patient id,
  encounter id), when the hook call names an encounter. Only these keyed hashes are stored (on each
  issued card, and in `suppressions` when feedback makes one): never a patient, encounter or resource
  id. Without the key the hashes cannot be checked against guessed ids.
- **The key.** SPINE_CDS_HASH_KEY; when unset, a random 256-bit key generated once and kept in the
  database (table `service_secrets`), so every worker, and every instance sharing a PostgreSQL,
  hashes alike. Set SPINE_CDS_HASH_KEY (from a secret store) for the database alone to reveal
  nothing; changing it ends the suppressions made before (their keys no longer match). It is never
  logged nor printed.
- **Windows**, applied when a hook call looks its cards up (so a changed setting applies at once):
  `encounter` (default): suppressed for the rest of the same encounter; when the card's feedback or
  the new call has no encounter, for 24 h after the feedback. A duration (`30d`, `12h`, `90m`, `2w`):
  for that long after the feedback. `off`: nothing is hashed, looked up or suppressed.
- **Hook calls.** `screen` takes the cards a call would show and returns (shown, suppressed) with one
  query. Suppressed cards are recorded (`issued_cards.suppressed`) and counted in the analytics, not
  shown. A failing database never fails the hook: the cards are shown and the failure logged.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets

from .config import SuppressionWindow
from .logs import safe_exception

log = logging.getLogger(__name__)

GENERATED_KEY_NAME = "suppression-hash-key"


def hash_key(runtime) -> bytes:
    """SPINE_CDS_HASH_KEY, else the key generated once and kept in the database."""
    configured = runtime.settings.hash_key
    if configured:
        return configured.encode()
    return bytes.fromhex(runtime.store.secret(GENERATED_KEY_NAME, lambda: secrets.token_hex(32)))


def keyed_hash(key: bytes, purpose: str, *parts: str) -> str:
    """HMAC-SHA256 over an unambiguous encoding of the parts (JSON), separated by purpose."""
    message = json.dumps([purpose, *parts], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def subject_of(card) -> str:
    """What a card is about: its FHIR reference, or (record-wide) its sorted current codes."""
    if card.subject:
        return card.subject
    return "codes:" + ",".join(sorted(card.current_codes))


def suppression_key(key: bytes, patient_id: str, card) -> str:
    """The same card: same patient, subject, rule, variant and proposal. A proposal that changes
    (an amended report now places the slip at C1-C2: M43.11, not M43.12) is a new card."""
    return keyed_hash(key, "suppression", patient_id, subject_of(card), card.rule, card.variant or "",
                      ",".join(sorted(card.proposed_codes)))


def window_key(key: bytes, patient_id: str, encounter_id: str | None) -> str | None:
    """The encounter a card was issued in, hashed; None when the call names no encounter."""
    if not encounter_id:
        return None
    return keyed_hash(key, "encounter", patient_id, encounter_id)


def card_keys(runtime, record, cards) -> dict[str, tuple[str, str | None]]:
    """Card uuid → (suppression key, window key) for the Card objects of one call; {} when
    suppression is off or the key cannot be had (the cards then cannot be suppressed later)."""
    if runtime.settings.suppression.mode == "off" or not cards:
        return {}
    try:
        key = hash_key(runtime)
    except Exception as exc:  # noqa: BLE001 - the database may be down: the hook answers regardless
        log.error("suppression: no hash key (database unavailable?), cards not keyed: %s", safe_exception(exc))
        return {}
    window = window_key(key, record.patient_id, record.encounter_id)
    return {card.uuid: (suppression_key(key, record.patient_id, card), window) for card in cards}


def split(runtime, record, cards) -> tuple[list, list]:
    """(kept, suppressed) of a list of Card objects: the rules' candidates, screened *before* the
    arbitration, so a card overridden with a reason leaves room for the cards it made moot (a
    rejected reroute lets the additional-code and documentation cards about the kept code return)."""
    kept, suppressed = screen(runtime, record, [(card, card) for card in cards])
    return kept, suppressed


def screen(runtime, record, pairs, keys: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(shown, suppressed): the card JSONs of `pairs` [(Card, card JSON)] to show, and those not to
    show because feedback already suppressed them within the window. One query per call."""
    cards = [c for _, c in pairs]
    window: SuppressionWindow = runtime.settings.suppression
    if window.mode == "off" or not pairs:
        return cards, []
    keys = card_keys(runtime, record, [card for card, _ in pairs]) if keys is None else keys
    wanted = [keys[card.uuid][0] for card, _ in pairs if card.uuid in keys]
    if not wanted:
        return cards, []
    current_window = next(iter(keys.values()))[1]
    now = runtime.store.clock()
    try:
        if window.mode == "encounter":
            active = runtime.store.active_suppressions(
                wanted, current_window, same_window=True, since=now - SuppressionWindow.ENCOUNTER_FALLBACK,
                since_outside_window=True)
        else:
            active = runtime.store.active_suppressions(wanted, current_window, same_window=False,
                                                       since=now - window.duration)
    except Exception as exc:  # noqa: BLE001 - never fail the hook for the store: show the cards
        log.error("suppression: lookup failed, all cards shown: %s", safe_exception(exc))
        return cards, []
    shown, suppressed = [], []
    for card, body in pairs:
        entry = keys.get(card.uuid)
        (suppressed if entry and entry[0] in active else shown).append(body)
    return shown, suppressed
