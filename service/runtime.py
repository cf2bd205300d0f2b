"""What the pipeline runs with, built from settings alone: no Flask, no request, no HTTP.

The service (`create_app`), the CLI and the audit build a `Runtime` here and pass it, with the
call's own inputs (`pipeline.Call`), to `pipeline.answer_hook`. Loading is the costly part (the
tabular: about 2 s and 175 MB) and is done once per process: `terminology_for` keeps one
Terminology per release, which processes forked after it was loaded (gunicorn workers, the
audit's executors) share page for page.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from .cards import CardCatalogue
from .config import ConfigError, Settings
from .fhir_server import FhirServerPolicy
from .nlp.reader import TextReader
from .rules import check_templates, load_rules
from .terminology import ReleaseError, Terminology
from .valuesets import ValueSets

_TERMINOLOGY = Terminology()  # the packaged release, one per process, shared after fork
# Releases given by path (SPINE_CDS_TABULAR_XML, SPINE_CDS_CODE_LIST), by their files as they are on
# disk: loaded once per process while a runtime uses them (a test's modified release goes with it).
_RELEASES: "weakref.WeakValueDictionary[tuple, Terminology]" = weakref.WeakValueDictionary()
_RELEASES_LOCK = threading.Lock()


def terminology_for(release) -> Terminology:
    """The tabular of `release` (the packaged one is `_TERMINOLOGY`), not yet loaded."""
    if release.packaged:
        return _TERMINOLOGY
    with _RELEASES_LOCK:
        key = release.cache_key()
        found = _RELEASES.get(key)
        if found is None:
            found = _RELEASES[key] = Terminology(release)
        return found


@dataclass
class Runtime:
    """Everything a hook call needs besides its body, built once."""

    settings: Settings
    store: object | None  # service.store.Store; None: nothing is recorded nor suppressed (the audit)
    terminology: Terminology
    catalogue: CardCatalogue
    fhir: FhirServerPolicy
    verifier: object | None
    reader: TextReader
    value_sets: ValueSets
    # The ICD-10-CM release loaded, with the validity period these settings give it (stated or derived):
    # a hook call dated outside it says so and withholds the suggestions that set a code (pipeline.py).
    release: object = None

    def is_silent(self, rule_id: str) -> bool:
        """Silent mode: the rule runs and what it would say is recorded, but no card is shown."""
        return "*" in self.settings.silent_rules or rule_id in self.settings.silent_rules


def build_runtime(settings: Settings, store=None, verifier_for=None, load_terminology: bool = True) -> Runtime:
    """The runtime of `settings`: the release loaded (ConfigError when it does not parse), the card
    templates and the silent rules checked. `store` (None: records nothing) and `verifier_for(store)`
    (the JWT verifier, for the HTTP service) are the caller's."""
    try:
        release = settings.release()  # checked when the settings were read: files, header, period
        terminology = terminology_for(release)
        if load_terminology:
            terminology.load()  # before the fork under `serve`; a release that does not parse: ConfigError
    except ReleaseError as exc:
        raise ConfigError(exc.problems) from None
    runtime = Runtime(
        settings=settings,
        store=store,
        terminology=terminology,
        catalogue=CardCatalogue(),
        fhir=FhirServerPolicy(settings.fhir_allowlist, settings.fhir_connect_timeout,
                              settings.fhir_read_timeout, settings.fhir_max_pages, settings.fhir_max_bytes),
        verifier=verifier_for(store) if verifier_for else None,
        reader=TextReader(),
        value_sets=ValueSets(),
        release=release,
    )
    problems = check_templates(runtime.catalogue.templates)
    if problems:
        raise ConfigError(problems)
    unknown = sorted(set(settings.silent_rules) - set(load_rules()) - {"*"})
    if unknown:
        raise ConfigError([f"SPINE_CDS_SILENT_RULES: no rule {', '.join(unknown)} (the rules are listed at /rules)"])
    return runtime
