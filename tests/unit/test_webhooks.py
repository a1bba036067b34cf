"""Signature checks and payload parsing of git push webhooks, table-driven."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.errors import ConfigError
from reconciler.daemon.webhooks import (
    Delivery,
    Forge,
    Outcome,
    RefFilter,
    inspect_delivery,
    load_secret,
    sign,
)

SECRET = b"s3cr3t-for-tests"
SHA_A = "9049f1265b7d61be4a8904a9a27120d2064dab3b"
SHA_B = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
ZERO = "0" * 40


def github_push(ref: str = "refs/heads/main", after: str = SHA_B,
                deleted: bool = False) -> dict[str, Any]:
    return {
        "ref": ref, "before": SHA_A, "after": after, "created": False, "deleted": deleted,
        "forced": False, "base_ref": None,
        "compare": f"https://github.com/acme/fleet/compare/{SHA_A[:12]}...{after[:12]}",
        "commits": [{"id": after, "message": "Bump line-1", "distinct": True,
                     "timestamp": "2026-01-05T10:00:00+01:00",
                     "author": {"name": "Ann", "email": "ann@example.com", "username": "ann"},
                     "added": [], "removed": [], "modified": ["sites/berlin.yaml"]}],
        "head_commit": {"id": after, "message": "Bump line-1"},
        "repository": {"id": 1296269, "name": "fleet", "full_name": "acme/fleet",
                       "private": True, "default_branch": "main"},
        "pusher": {"name": "ann", "email": "ann@example.com"},
        "sender": {"login": "ann", "id": 1, "type": "User"},
    }


def gitlab_push(ref: str = "refs/heads/main", kind: str = "push",
                after: str = SHA_B) -> dict[str, Any]:
    return {
        "object_kind": kind, "event_name": kind, "before": SHA_A, "after": after, "ref": ref,
        "ref_protected": True, "checkout_sha": after, "message": None, "user_id": 4,
        "user_name": "John Smith", "user_username": "jsmith", "user_email": "",
        "project_id": 15,
        "project": {"id": 15, "name": "fleet", "path_with_namespace": "acme/fleet",
                    "default_branch": "main",
                    "git_ssh_url": "git@example.com:acme/fleet.git"},
        "commits": [{"id": after, "message": "Bump line-1", "title": "Bump line-1",
                     "timestamp": "2026-01-05T10:00:00+01:00",
                     "author": {"name": "John Smith", "email": "john@example.com"},
                     "added": [], "modified": ["sites/berlin.yaml"], "removed": []}],
        "total_commits_count": 1,
        "repository": {"name": "fleet", "url": "git@example.com:acme/fleet.git"},
    }


def gitea_push(ref: str = "refs/heads/main", after: str = SHA_B) -> dict[str, Any]:
    return {
        "ref": ref, "before": SHA_A, "after": after,
        "compare_url": f"http://git.local/acme/fleet/compare/{SHA_A}...{after}",
        "commits": [{"id": after, "message": "Bump line-1\n",
                     "url": f"http://git.local/acme/fleet/commit/{after}",
                     "author": {"name": "Ann", "email": "ann@example.com", "username": "ann"},
                     "committer": {"name": "Ann", "email": "ann@example.com",
                                   "username": "ann"},
                     "timestamp": "2026-01-05T10:00:00+01:00"}],
        "total_commits": 1,
        "repository": {"id": 140, "name": "fleet", "full_name": "acme/fleet",
                       "owner": {"id": 1, "login": "acme"}, "default_branch": "main"},
        "pusher": {"id": 1, "login": "ann"}, "sender": {"id": 1, "login": "ann"},
    }


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def github_headers(body: bytes, event: str = "push", secret: bytes = SECRET) -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-Hub-Signature-256": "sha256=" + sign(secret, body),
            "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/044aadd"}


def gitlab_headers(event: str = "Push Hook", token: bytes = SECRET) -> dict[str, str]:
    return {"X-Gitlab-Event": event, "X-Gitlab-Token": token.decode(),
            "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
            "Content-Type": "application/json"}


def gitea_headers(body: bytes, *, forgejo: bool = False, secret: bytes = SECRET,
                  event: str = "push") -> dict[str, str]:
    product = "Forgejo" if forgejo else "Gitea"
    return {f"X-{product}-Event": event, f"X-{product}-Delivery": "f6266f16-1bf3",
            "X-GitHub-Event": event, "X-Gogs-Event": event,
            f"X-{product}-Signature": sign(secret, body),
            # Newer releases sign GitHub-style too; the native header must win.
            "X-Hub-Signature-256": "sha256=" + sign(secret, body),
            "Content-Type": "application/json"}


def generic_headers(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {"X-Reconciler-Signature": "sha256=" + sign(secret, body)}


GH = body_of(github_push())
GL = body_of(gitlab_push())
GL_TAG = body_of(gitlab_push("refs/tags/v1.4.0", kind="tag_push"))
GT = body_of(gitea_push())
GEN = body_of({"ref": "refs/heads/main", "after": SHA_B})

ACCEPTED: list[tuple[str, dict[str, str], bytes, Forge, str]] = [
    ("github push", github_headers(GH), GH, Forge.GITHUB, "refs/heads/main"),
    ("gitlab push", gitlab_headers(), GL, Forge.GITLAB, "refs/heads/main"),
    ("gitlab tag push", gitlab_headers("Tag Push Hook"), GL_TAG, Forge.GITLAB,
     "refs/tags/v1.4.0"),
    ("gitlab system hook", gitlab_headers("System Hook"), GL, Forge.GITLAB, "refs/heads/main"),
    ("gitea push", gitea_headers(GT), GT, Forge.GITEA, "refs/heads/main"),
    ("forgejo push", gitea_headers(GT, forgejo=True), GT, Forge.GITEA, "refs/heads/main"),
    ("generic push", generic_headers(GEN), GEN, Forge.GENERIC, "refs/heads/main"),
    ("lower-case header names", {k.lower(): v for k, v in github_headers(GH).items()}, GH,
     Forge.GITHUB, "refs/heads/main"),
    ("upper-case hex digest", {**github_headers(GH),
                               "X-Hub-Signature-256": "sha256=" + sign(SECRET, GH).upper()},
     GH, Forge.GITHUB, "refs/heads/main"),
]


@pytest.mark.parametrize(("headers", "body", "forge", "ref"),
                         [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
def test_valid_push_is_verified_and_parsed(headers: dict[str, str], body: bytes, forge: Forge,
                                           ref: str) -> None:
    delivery = inspect_delivery(headers, body, SECRET)
    assert delivery.outcome is Outcome.PUSH, delivery.detail
    assert delivery.forge is forge
    assert delivery.ref == ref
    assert delivery.after == SHA_B
    assert delivery.deleted is False


OTHER = b"another-secret"
REFUSED: list[tuple[str, dict[str, str], bytes, Forge | None]] = [
    ("no signature header", {"X-GitHub-Event": "push"}, GH, None),
    ("github signed with another secret", github_headers(GH, secret=OTHER), GH, Forge.GITHUB),
    ("github digest without sha256= prefix",
     {**github_headers(GH), "X-Hub-Signature-256": sign(SECRET, GH)}, GH, Forge.GITHUB),
    ("github body changed after signing", github_headers(GH), GH + b" ", Forge.GITHUB),
    ("github empty signature", {**github_headers(GH), "X-Hub-Signature-256": ""}, GH,
     Forge.GITHUB),
    ("gitlab wrong token", gitlab_headers(token=OTHER), GL, Forge.GITLAB),
    ("gitlab token prefix only", gitlab_headers(token=SECRET[:-1]), GL, Forge.GITLAB),
    ("gitea signed with another secret", gitea_headers(GT, secret=OTHER), GT, Forge.GITEA),
    ("generic signed with another secret", generic_headers(GEN, secret=OTHER), GEN,
     Forge.GENERIC),
    ("legacy sha1 header only",
     {"X-GitHub-Event": "push", "X-Hub-Signature": "sha1=0123456789abcdef"}, GH, None),
]


@pytest.mark.parametrize(("headers", "body", "forge"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_bad_or_missing_signature_is_unauthorized(headers: dict[str, str], body: bytes,
                                                  forge: Forge | None) -> None:
    delivery = inspect_delivery(headers, body, SECRET)
    assert delivery.outcome is Outcome.UNAUTHORIZED
    assert delivery.forge is forge
    assert delivery.ref is None
    assert SECRET.decode() not in delivery.detail


def test_empty_secret_verifies_nothing() -> None:
    # HMAC with an empty key is computable by anyone, so it must never count as verified.
    delivery = inspect_delivery(github_headers(GH, secret=b""), GH, b"")
    assert delivery.outcome is Outcome.UNAUTHORIZED


PING = body_of({"zen": "Keep it logically awesome.", "hook_id": 42,
                "hook": {"type": "Repository", "events": ["push"], "active": True}})
OTHERS: list[tuple[str, dict[str, str], bytes, Outcome]] = [
    ("github ping", github_headers(PING, event="ping"), PING, Outcome.PING),
    ("generic ping", {**generic_headers(b"{}"), "X-Reconciler-Event": "ping"}, b"{}",
     Outcome.PING),
    ("github pull_request", github_headers(GH, event="pull_request"), GH, Outcome.OTHER_EVENT),
    ("gitlab merge request", gitlab_headers("Merge Request Hook"), GL, Outcome.OTHER_EVENT),
    ("gitlab system hook for a new project",
     gitlab_headers("System Hook"), body_of({"event_name": "project_create"}),
     Outcome.OTHER_EVENT),
    ("gitea issues", gitea_headers(GT, event="issues"), GT, Outcome.OTHER_EVENT),
    ("malformed JSON", generic_headers(b"{not json"), b"{not json", Outcome.MALFORMED),
    ("JSON array", generic_headers(b"[1, 2]"), b"[1, 2]", Outcome.MALFORMED),
    ("not UTF-8", generic_headers(b"\xff\xfe"), b"\xff\xfe", Outcome.MALFORMED),
    ("push without ref", generic_headers(b'{"after": "x"}'), b'{"after": "x"}',
     Outcome.MALFORMED),
    ("push with a numeric ref", generic_headers(b'{"ref": 7}'), b'{"ref": 7}',
     Outcome.MALFORMED),
]


@pytest.mark.parametrize(("headers", "body", "outcome"), [case[1:] for case in OTHERS],
                         ids=[case[0] for case in OTHERS])
def test_verified_non_push_deliveries(headers: dict[str, str], body: bytes,
                                      outcome: Outcome) -> None:
    delivery = inspect_delivery(headers, body, SECRET)
    assert delivery.outcome is outcome, delivery.detail
    assert delivery.ref is None
    if outcome is Outcome.MALFORMED:
        assert delivery.detail.startswith("body:")


def test_form_encoded_github_payload_is_read_from_the_payload_field() -> None:
    body = urllib.parse.urlencode({"payload": json.dumps(github_push("refs/heads/dev"))}).encode()
    headers = {**github_headers(body), "Content-Type": "application/x-www-form-urlencoded"}
    delivery = inspect_delivery(headers, body, SECRET)
    assert (delivery.outcome, delivery.ref) == (Outcome.PUSH, "refs/heads/dev")


def test_json_labelled_as_a_form_is_read_as_json() -> None:
    # `curl -d '{...}'` labels its body application/x-www-form-urlencoded.
    headers = {**generic_headers(GEN), "Content-Type": "application/x-www-form-urlencoded"}
    assert inspect_delivery(headers, GEN, SECRET).ref == "refs/heads/main"


def test_form_without_payload_field_is_malformed() -> None:
    body = b"other=1"
    headers = {**github_headers(body), "Content-Type": "application/x-www-form-urlencoded"}
    delivery = inspect_delivery(headers, body, SECRET)
    assert delivery.outcome is Outcome.MALFORMED
    assert "payload" in delivery.detail


@pytest.mark.parametrize(("headers", "body"), [
    (github_headers(b := body_of(github_push(after=ZERO, deleted=True))), b),
    (gitlab_headers(), body_of(gitlab_push(after=ZERO))),
    (gitea_headers(b := body_of(gitea_push(after=ZERO))), b),
], ids=["github", "gitlab", "gitea"])
def test_branch_deletion_is_reported(headers: dict[str, str], body: bytes) -> None:
    delivery = inspect_delivery(headers, body, SECRET)
    assert delivery.outcome is Outcome.PUSH
    assert delivery.deleted is True


def test_delivery_ids_are_kept_for_logs() -> None:
    assert inspect_delivery(github_headers(GH), GH, SECRET).delivery_id == (
        "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert inspect_delivery(gitlab_headers(), GL, SECRET).delivery_id == (
        "13792a34-cac6-4fda-95a8-c58e00a3954e")


def test_secret_is_not_in_the_delivery_repr() -> None:
    delivery = inspect_delivery(gitlab_headers(token=OTHER), GL, SECRET)
    assert isinstance(delivery, Delivery)
    assert SECRET.decode() not in repr(delivery)
    assert OTHER.decode() not in repr(delivery)


FILTERS: list[tuple[str, RefFilter, str, bool]] = [
    ("branch short name", RefFilter.tracking(branch="main"), "refs/heads/main", True),
    ("branch full name", RefFilter.tracking(branch="refs/heads/main"), "refs/heads/main", True),
    ("other branch", RefFilter.tracking(branch="main"), "refs/heads/dev", False),
    ("branch prefix is not a match", RefFilter.tracking(branch="main"), "refs/heads/main2",
     False),
    ("status branch of a site", RefFilter.tracking(branch="main"),
     "refs/heads/reconciler-status/euberlinline1", False),
    ("shared status branch", RefFilter.tracking(branch="main"),
     "refs/heads/reconciler-fleet-status", False),
    ("tag with branch tracking", RefFilter.tracking(branch="main"), "refs/tags/v1.0.0", False),
    ("tracked tag", RefFilter.tracking(tag="v1.2.0"), "refs/tags/v1.2.0", True),
    ("other tag", RefFilter.tracking(tag="v1.2.0"), "refs/tags/v1.3.0", False),
    ("tag glob", RefFilter.tracking(tag_glob="v*"), "refs/tags/v2.0.0", True),
    ("tag glob anchored at the start", RefFilter.tracking(tag_glob="v*"),
     "refs/tags/line-1/v2.0.0", False),
    ("tag glob does not match branches", RefFilter.tracking(tag_glob="*"), "refs/heads/v1",
     False),
    ("release tag of a solution", RefFilter.tracking(tag_glob="web/v*"),
     "refs/tags/web/v1.4.0", True),
    ("release tag of another solution", RefFilter.tracking(tag_glob="web/v*"),
     "refs/tags/db/v1.4.0", False),
    ("branch and tags", RefFilter.tracking(branch="main", tag_glob="*"), "refs/tags/x", True),
    ("empty filter", RefFilter(), "refs/heads/main", False),
]


@pytest.mark.parametrize(("refs", "ref", "expected"), [case[1:] for case in FILTERS],
                         ids=[case[0] for case in FILTERS])
def test_ref_filter(refs: RefFilter, ref: str, expected: bool) -> None:
    assert refs.matches(ref) is expected


def test_load_secret_strips_the_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"  abc123\n")
    path.chmod(0o600)
    assert load_secret(path) == b"abc123"


@pytest.mark.parametrize(("content", "message"), [(b"", "is empty"), (b"\n \n", "is empty"),
                                                  (None, "cannot read")])
def test_load_secret_refuses_unusable_files(tmp_path: Path, content: bytes | None,
                                            message: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_secret(path)
    assert "webhook.secretFile" in str(info.value)
    assert str(path) in str(info.value)
