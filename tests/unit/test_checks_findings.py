"""reconciler.core.checks.findings: each finding kept once, sorted for the report, and the
"did you mean" hint."""

from __future__ import annotations

import pytest

from reconciler.core.checks.findings import Findings, near
from reconciler.core.diagnostics import Diagnostic, Severity


def test_a_finding_is_kept_once_in_the_order_found() -> None:
    loaded = Diagnostic("a.yaml", 3, "Site/x", "spec", "from the loader")
    findings = Findings([loaded])
    findings.add("b.yaml", 1, "Target/t", "spec.site", "unknown", target="t")
    mark = findings.mark()
    findings.add("b.yaml", 1, "Target/t", "spec.site", "unknown", target="t")  # again
    findings.add("a.yaml", 3, "Site/x", "spec", "from the loader")  # as the loader had it
    findings.add("a.yaml", 2, "Site/x", "spec", "w", severity=Severity.WARNING, instance="i")
    assert findings.since(mark) == [
        Diagnostic("a.yaml", 2, "Site/x", "spec", "w", Severity.WARNING, "", "i")]
    assert [(d.path, d.line) for d in findings.sorted()] == [
        ("a.yaml", 2), ("a.yaml", 3), ("b.yaml", 1)]


def test_sorted_orders_by_place_then_message_then_target() -> None:
    findings = Findings()
    for target in ("t2", "t1"):
        findings.add("s.yaml", 4, "Solution/app", "spec.x", "bad", target=target)
    findings.add("s.yaml", 4, "Solution/app", "spec.x", "another")
    assert [(d.message, d.target) for d in findings.sorted()] == [
        ("another", ""), ("bad", "t1"), ("bad", "t2")]


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [
        pytest.param("replica", ["replicas", "mode"], " (did you mean 'replicas'?)",
                     id="close"),
        pytest.param("t2", ["t1"], "", id="too-far"),
        pytest.param("x", [], "", id="no-choices"),
        pytest.param("berlinn", {"berlin": 1, "bern": 2}, " (did you mean 'berlin'?)",
                     id="mapping-keys"),
    ],
)
def test_near(word: str, choices: object, expected: str) -> None:
    assert near(word, choices) == expected  # type: ignore[arg-type]
