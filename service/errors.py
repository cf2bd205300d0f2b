"""Errors as FHIR OperationOutcomes: every error the service answers is JSON naming what is wrong."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    """One problem: FHIR issue type code, a human sentence, and where (a FHIRPath-like expression)."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: str = "error"

    def to_json(self) -> dict:
        out = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out


@dataclass
class Problem(Exception):
    """An error answer: HTTP status plus the issues that explain it."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, code: str, diagnostics: str, expression: str | None = None) -> "Problem":
        return cls(status, [Issue(code, diagnostics, expression)])

    def to_json(self) -> dict:
        return operation_outcome(self.issues)

    def __str__(self) -> str:  # never includes request content, only our own sentences
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


# FHIR IssueType codes used for HTTP statuses the framework raises itself.
HTTP_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    412: "not-found",
    413: "too-long",
    415: "not-supported",
    429: "throttled",
    500: "exception",
    503: "transient",
}
