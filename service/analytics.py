"""What the cards did: issued (shown), silent, suppressed, accepted, overridden, unanswered, per rule,
kind, service and day, with the override reasons and the suggestions chosen. A suppressed card is one
the rules gave again after feedback on it within the window (service/suppression.py): recorded, not
shown, so not counted among the shown cards. Computed in the database (GROUP BY),
so it stays cheap as the tables grow; no clinical text is involved anywhere.

Playground traffic (cards issued by runs at `/`, origin 'playground', and the feedback on them) is
left out unless asked: `?include=playground` on /analytics, /analytics.csv and /stats."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import String, and_, cast, func, select

from .errors import Problem
from .escaping import csv_row
from .store import PLAYGROUND, Store, feedback, issued_cards

INCLUDABLE = (PLAYGROUND,)  # what ?include= may name


def include_playground(args) -> bool:
    """`?include=playground`: playground traffic counted too. Any other value (an empty one too) is a
    400 OperationOutcome naming it, as the OpenAPI document's enum says."""
    named = args.getlist("include")
    unknown = [v for v in named if v not in INCLUDABLE]
    if unknown:
        raise Problem.of(400, "invalid", f"include may name {', '.join(INCLUDABLE)}, not {unknown[0]!r}", "include")
    return PLAYGROUND in named


@dataclass(frozen=True)
class Filters:
    start: date | None = None
    end: date | None = None
    service: str | None = None
    include_playground: bool = False

    def where(self):
        clauses = [] if self.include_playground else [issued_cards.c.origin != PLAYGROUND]
        if self.start:
            clauses.append(issued_cards.c.issued_at >= datetime.combine(self.start, time.min, timezone.utc))
        if self.end:
            clauses.append(issued_cards.c.issued_at < datetime.combine(self.end + timedelta(days=1), time.min,
                                                                        timezone.utc))
        if self.service:
            clauses.append(issued_cards.c.service_id == self.service)
        return and_(True, *clauses)


@dataclass
class RuleFigures:
    rule: str
    kind: str
    issued: int = 0  # shown
    silent: int = 0
    suppressed: int = 0
    accepted: int = 0
    overridden: int = 0
    answered: int = 0  # cards with any feedback

    @property
    def unanswered(self) -> int:
        return max(0, self.issued - self.answered)

    def rate(self, n: int) -> float | None:
        return round(n / self.issued, 3) if self.issued else None


@dataclass
class Report:
    filters: Filters
    rules: list[RuleFigures] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    by_service: dict[str, int] = field(default_factory=dict)
    by_day: list[tuple[str, int, int, int]] = field(default_factory=list)  # (day, live, silent, suppressed)
    override_reasons: list[tuple[str, int]] = field(default_factory=list)
    suggestions_chosen: list[tuple[str, int, int]] = field(default_factory=list)  # (rule, position, count)
    playground_cards: int = 0  # cards of the playground in the period, left out (0 when included)

    @property
    def totals(self) -> RuleFigures:
        total = RuleFigures("all", "")
        for r in self.rules:
            for name in ("issued", "silent", "suppressed", "accepted", "overridden", "answered"):
                setattr(total, name, getattr(total, name) + getattr(r, name))
        return total

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["rule", "kind", "issued", "silent", "suppressed", "accepted", "overridden", "unanswered",
                         "acceptance_rate", "override_rate"])
        for r in self.rules:
            writer.writerow(csv_row([r.rule, r.kind, r.issued, r.silent, r.suppressed, r.accepted, r.overridden,
                                     r.unanswered, r.rate(r.accepted), r.rate(r.overridden)]))  # no formulas
        return out.getvalue()


def build(store: Store, filters: Filters) -> Report:
    """The report, read in one connection; the database failing is a 503 (DatabaseUnavailable)."""
    return store.read("card analytics", lambda conn: _build(conn, filters))


def _build(conn, filters: Filters) -> Report:
    report = Report(filters)
    where = filters.where()
    figures: dict[str, RuleFigures] = {}
    rows = conn.execute(select(issued_cards.c.rule, issued_cards.c.kind, issued_cards.c.silent,
                               issued_cards.c.suppressed, func.count().label("n")).where(where)
                        .group_by(issued_cards.c.rule, issued_cards.c.kind, issued_cards.c.silent,
                                  issued_cards.c.suppressed))
    for row in rows:
        f = figures.setdefault(row.rule, RuleFigures(row.rule, row.kind))
        if row.silent:
            f.silent += row.n
        elif row.suppressed:
            f.suppressed += row.n
        else:
            f.issued += row.n
            report.by_kind[row.kind] = report.by_kind.get(row.kind, 0) + row.n
    live = and_(where, issued_cards.c.silent.is_(False), issued_cards.c.suppressed.is_(False))
    joined = feedback.join(issued_cards, feedback.c.card_uuid == issued_cards.c.card_uuid)
    for row in conn.execute(select(issued_cards.c.rule, feedback.c.outcome,
                                   func.count(func.distinct(feedback.c.card_uuid)).label("n"))
                            .select_from(joined).where(live)
                            .group_by(issued_cards.c.rule, feedback.c.outcome)):
        f = figures[row.rule]
        setattr(f, row.outcome, getattr(f, row.outcome) + row.n)
    for row in conn.execute(select(issued_cards.c.rule, func.count(func.distinct(feedback.c.card_uuid))
                                   .label("n")).select_from(joined).where(live).group_by(issued_cards.c.rule)):
        figures[row.rule].answered = row.n
    for row in conn.execute(select(issued_cards.c.service_id, func.count().label("n")).where(live)
                            .group_by(issued_cards.c.service_id)):
        report.by_service[row.service_id] = row.n
    day = func.substr(cast(issued_cards.c.issued_at, String), 1, 10)
    days: dict[str, list[int]] = {}
    for row in conn.execute(select(day.label("day"), issued_cards.c.silent, issued_cards.c.suppressed,
                                   func.count().label("n"))
                            .where(where).group_by(day, issued_cards.c.silent, issued_cards.c.suppressed)):
        days.setdefault(row.day, [0, 0, 0])[1 if row.silent else 2 if row.suppressed else 0] += row.n
    report.by_day = [(d, v[0], v[1], v[2]) for d, v in sorted(days.items())]
    reasons: dict[str, int] = {}
    for row in conn.execute(select(feedback.c.override_code, func.count().label("n")).select_from(joined)
                            .where(and_(live, feedback.c.outcome == "overridden"))
                            .group_by(feedback.c.override_code)):
        key = row.override_code or "(no reason given)"
        reasons[key] = reasons.get(key, 0) + row.n
    report.override_reasons = sorted(reasons.items(), key=lambda kv: -kv[1])
    chosen: dict[tuple[str, int], int] = {}
    for row in conn.execute(select(issued_cards.c.rule, issued_cards.c.suggestion_uuids,
                                   feedback.c.accepted_suggestions).select_from(joined)
                            .where(and_(live, feedback.c.outcome == "accepted"))):
        offered = json.loads(row.suggestion_uuids)
        for uuid in json.loads(row.accepted_suggestions):
            position = offered.index(uuid) + 1 if uuid in offered else 0
            chosen[(row.rule, position)] = chosen.get((row.rule, position), 0) + 1
    report.suggestions_chosen = sorted(((r, p, n) for (r, p), n in chosen.items()), key=lambda x: (x[0], x[1]))
    report.rules = sorted(figures.values(), key=lambda f: (-f.issued, f.rule))
    if not filters.include_playground:
        report.playground_cards = conn.execute(
            select(func.count()).select_from(issued_cards)
            .where(dataclasses.replace(filters, include_playground=True).where(),
                   issued_cards.c.origin == PLAYGROUND)).scalar_one()
    return report
