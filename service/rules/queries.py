"""Missing documentation asked as compliant queries (work in progress: passes cards through)."""
from __future__ import annotations


def as_queries(cards, findings, context):
    return list(cards)
