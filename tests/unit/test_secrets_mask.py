"""reconciler.core.secrets.mask: the one way a secret is hidden in a value, and its three users
(the log/status redaction, ``explain`` and the offline plan) hiding the same things."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.core.explain import explain_data
from reconciler.core.secrets import MASK, PLACEHOLDER, mask, redact_value, register
from reconciler.core.validation import validate_repository
from reconciler.engine.review import review_revisions
from tests.unit.checkkit import commit_all, write


@pytest.mark.parametrize(
    ("value", "secrets", "placeholder", "expected"),
    [
        pytest.param("user=app password=hunter22", ["hunter22"], MASK,
                     "user=app password=***", id="string"),
        pytest.param({"a": {"b": ["x hunter22", 3]}, "n": None}, ["hunter22"], MASK,
                     {"a": {"b": ["x ***", 3]}, "n": None}, id="nested-dict-and-list"),
        pytest.param(("hunter22", 1), ["hunter22"], PLACEHOLDER, [PLACEHOLDER, 1],
                     id="tuple-becomes-list"),
        pytest.param("abcdef and abcd", ["abcd", "abcdef"], MASK, "*** and ***",
                     id="longest-first"),
        pytest.param("keep me", ["", "absent"], MASK, "keep me", id="empty-and-absent"),
        pytest.param({"hunter22": 1}, ["hunter22"], MASK, {"hunter22": 1},
                     id="keys-are-not-values"),
        pytest.param(42, ["42"], MASK, 42, id="numbers-stay"),
        pytest.param("ab", ["ab"], PLACEHOLDER, PLACEHOLDER, id="short-secret-of-a-placement"),
    ],
)
def test_mask(value: Any, secrets: list[str], placeholder: str, expected: Any) -> None:
    assert mask(value, secrets, placeholder) == expected


def test_redact_value_masks_registered_values_like_mask() -> None:
    register(["reg-secret-0451"])
    nested = {"env": ("reg-secret-0451", "x"), "argv": ["--p=reg-secret-0451"], "n": 5}
    assert redact_value(nested) == mask(nested, ["reg-secret-0451"]) == {
        "env": [MASK, "x"], "argv": [f"--p={MASK}"], "n": 5}


SECRET = "hunter2-tuple-secret"
SECRET_SOLUTION = ("solutions/app/solution.yaml", "    tz: {type: string, default: UTC}\n",
                   "    tz: {type: string, default: UTC}\n"
                   "    password: {type: string, secret: true}\n")
SECRET_PARAM = ("instances.yaml", "  solution: app\n",
                f"  solution: app\n  params: {{password: {SECRET}}}\n")
# a whole-value expression keeps its type: this property renders to a tuple
AS_TUPLE = ("solutions/app/solution.yaml", 'content: "${{ params.tz }}:${{ params.port }}"',
            "content: \"${{ ('user', params.password) }}\"")


def test_explain_masks_a_secret_inside_a_tuple(tmp_path: Path) -> None:
    repo = write(tmp_path / "repo", [SECRET_SOLUTION, SECRET_PARAM, AS_TUPLE])
    data = explain_data(validate_repository(repo), "t1")
    comps = {c["name"]: c for c in data["instances"][0]["components"]}
    assert comps["extra"]["properties"]["content"] == ["user", PLACEHOLDER]
    assert SECRET not in repr(data)


def test_plan_masks_a_secret_inside_a_tuple(tmp_path: Path) -> None:
    repo = write(tmp_path / "repo", [SECRET_SOLUTION, SECRET_PARAM])
    base = commit_all(repo, "base")
    write(repo, [SECRET_SOLUTION, SECRET_PARAM, AS_TUPLE])
    head = commit_all(repo, "head")
    review = review_revisions(repo / ".git", base, head)
    diffs = [c.diff for t in review.targets for c in t.changes]
    assert diffs and all(SECRET not in d for d in diffs), diffs
    assert any("- '***'" in d for d in diffs), diffs
