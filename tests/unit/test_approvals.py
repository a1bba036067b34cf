"""Approval tag names and how a signature's signer matches an entry of ``approvers``."""

from __future__ import annotations

import pytest

from reconciler.gitops.approvals import (
    approval_refspec,
    approval_tag,
    approver_label,
    matching_approver,
)
from reconciler.gitops.signatures import Signature

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def test_an_approval_tag_names_instance_wave_release_and_who() -> None:
    assert approval_tag("telemetry-eu", "canary", "1.5.0", "alice@example.org") == \
        "reconciler-approval/telemetry-eu/canary/1.5.0/alice@example.org"


@pytest.mark.parametrize(("part", "value"), [
    ("release", "sha256:abc"), ("release", "1.5.0/x"), ("release", ""), ("release", ".hidden"),
    ("release", "v1..2"), ("release", "x.lock"), ("release", "a b"), ("wave", "@"),
    ("instance", "a@{1}"), ("release", "x\x7f"), ("release", "x*"),
])
def test_parts_that_cannot_be_one_component_of_a_tag_name_are_refused(part: str,
                                                                      value: str) -> None:
    parts = {"instance": "telemetry-eu", "wave": "canary", "release": "1.5.0", "who": "alice"}
    parts[part] = value
    with pytest.raises(ValueError, match=f"{part} .* cannot be part of a tag name"):
        approval_tag(**parts)


def test_refspec_fetches_the_approvals_of_one_release_of_one_wave() -> None:
    assert approval_refspec("telemetry-eu", "canary", "1.5.0") == (
        "+refs/tags/reconciler-approval/telemetry-eu/canary/1.5.0/*:"
        "refs/tags/reconciler-approval/telemetry-eu/canary/1.5.0/*")
    assert approval_refspec("i", "w", "r", into="refs/reconciler/approvals").endswith(
        ":refs/reconciler/approvals/reconciler-approval/i/w/r/*")


@pytest.mark.parametrize(("who", "label"), [
    ("alice@example.org", "alice@example.org"),
    ("Alice Smith", "Alice-Smith"),
    ("..weird:name~", "weird-name"),
    ("x.lock", "x-lock"),
    ("@", "approver"),
])
def test_who_becomes_a_label_git_accepts(who: str, label: str) -> None:
    assert approver_label(who) == label


@pytest.mark.parametrize(("signature", "approvers", "expected"), [
    (Signature(True, "ssh", "alice@example.org", "SHA256:abc"), ["alice@example.org"],
     "alice@example.org"),
    (Signature(True, "ssh", "alice@example.org", "SHA256:abc"), ["ALICE@example.org"],
     "ALICE@example.org"),
    (Signature(True, "ssh", "alice@example.org", "SHA256:abc"), ["SHA256:abc"], "SHA256:abc"),
    (Signature(True, "ssh", "alice@example.org", "SHA256:abc"), ["SHA256:ABC"], None),
    (Signature(True, "ssh", "alice@example.org,alice", "SHA256:abc"), ["alice"], "alice"),
    (Signature(True, "ssh", "alice@example.org", "SHA256:abc"), ["alice"], None),
    (Signature(True, "gpg", "Alice <alice@example.org>", FPR), [FPR.lower()], FPR.lower()),
    (Signature(True, "gpg", "Alice <alice@example.org>", FPR), [f"0x{FPR}"], f"0x{FPR}"),
    (Signature(True, "gpg", "Alice <alice@example.org>", FPR), [FPR[-16:]], None),
    (Signature(True, "gpg", "Alice <alice@example.org>", FPR), ["alice@example.org"],
     "alice@example.org"),
    (Signature(True, "gpg", "Alice <alice@example.org>", FPR), ["Alice <alice@example.org>"],
     "Alice <alice@example.org>"),
    (Signature(True, "gpg", "Alice <alice@example.org>", FPR), ["Alice"], None),
    (Signature(False, "gpg", None, FPR, "bad signature"), [FPR], None),
])
def test_matching_approver(signature: Signature, approvers: list[str],
                           expected: str | None) -> None:
    assert matching_approver(signature, approvers) == expected
