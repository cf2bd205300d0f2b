"""One arbitration over every rule's candidate cards (work in progress: passes them through)."""
from __future__ import annotations


def resolve(candidates, findings, context):
    return list(candidates)
