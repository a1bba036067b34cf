"""``pin_version``: setting an Instance's ``spec.version`` in its file on disk changes the
version and nothing else — comments, key order, quoting, indentation, flow style, line endings
and the other documents of the file stay byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.errors import ReconcilerError
from reconciler.gitops.version_pin import pin_version

HEAD = "apiVersion: reconciler/v1\nkind: Instance\nmetadata:\n  name: edge\n"

CASES = [
    pytest.param(
        "# pinned by hand\n" + HEAD + "spec:\n  solution: agent  # the agent\n"
        "  targets:\n    names: [a]  # one\n",
        "# pinned by hand\n" + HEAD + "spec:\n  solution: agent  # the agent\n"
        "  version: 1.0.0\n  targets:\n    names: [a]  # one\n",
        id="block-insert-after-solution"),
    pytest.param(
        HEAD + "spec:\n  solution: agent\n  version: 1.1.0   # pinned for the audit\n"
        "  targets: {names: [a]}\n",
        HEAD + "spec:\n  solution: agent\n  version: 1.0.0   # pinned for the audit\n"
        "  targets: {names: [a]}\n",
        id="block-replace-keeps-comment"),
    pytest.param(
        HEAD + "spec:\n  solution: agent\n  version: '1.1.0'\n",
        HEAD + "spec:\n  solution: agent\n  version: '1.0.0'\n",
        id="single-quotes-kept"),
    pytest.param(
        HEAD + 'spec:\n  solution: agent\n  version: "1.1.0"\n',
        HEAD + 'spec:\n  solution: agent\n  version: "1.0.0"\n',
        id="double-quotes-kept"),
    pytest.param(
        HEAD + "spec:\n  solution: agent\n  version:\n    1.1.0\n  params: {a: 1}\n",
        HEAD + "spec:\n  solution: agent\n  version:\n    1.0.0\n  params: {a: 1}\n",
        id="value-on-its-own-line"),
    pytest.param(
        HEAD + "spec:\n    targets:\n        names: [a]\n    solution: agent\n"
        "    params:\n        x: 1\n",
        HEAD + "spec:\n    targets:\n        names: [a]\n    solution: agent\n"
        "    version: 1.0.0\n    params:\n        x: 1\n",
        id="four-spaces-solution-not-first"),
    pytest.param(
        HEAD + "spec: {solution: agent, targets: {names: [a]}}\n",
        HEAD + "spec: {solution: agent, version: 1.0.0, targets: {names: [a]}}\n",
        id="flow-insert"),
    pytest.param(
        HEAD + "spec: {solution: agent,\n  version: 1.1.0, targets: {names: [a]}}\n",
        HEAD + "spec: {solution: agent,\n  version: 1.0.0, targets: {names: [a]}}\n",
        id="flow-replace"),
    pytest.param(
        (HEAD + "spec:\n  solution: agent\n  targets:\n    names: [a]\n").replace("\n", "\r\n"),
        (HEAD + "spec:\n  solution: agent\n  version: 1.0.0\n  targets:\n    names: [a]\n"
         ).replace("\n", "\r\n"),
        id="crlf-insert"),
    pytest.param(
        "---\napiVersion: reconciler/v1\nkind: Solution\nmetadata:\n  name: edge\n"
        "spec:\n  version: 9.9.9  # not an instance\n  components: []\n"
        "...\n---\n# the instance\n" + HEAD + "spec:\n  solution: agent\n"
        "---\napiVersion: reconciler/v1\nkind: Instance\nmetadata:\n  name: other\n"
        "spec:\n  solution: agent\n  version: 1.1.0\n",
        "---\napiVersion: reconciler/v1\nkind: Solution\nmetadata:\n  name: edge\n"
        "spec:\n  version: 9.9.9  # not an instance\n  components: []\n"
        "...\n---\n# the instance\n" + HEAD + "spec:\n  solution: agent\n  version: 1.0.0\n"
        "---\napiVersion: reconciler/v1\nkind: Instance\nmetadata:\n  name: other\n"
        "spec:\n  solution: agent\n  version: 1.1.0\n",
        id="multi-document-only-the-instance"),
    pytest.param(
        HEAD + "spec:\n  solution: agent\n  version: 1.1.0",
        HEAD + "spec:\n  solution: agent\n  version: 1.0.0",
        id="no-final-newline"),
    pytest.param(
        HEAD + "spec:\n  solution: agent",
        HEAD + "spec:\n  solution: agent\n  version: 1.0.0\n",
        id="insert-at-end-without-newline"),
]


@pytest.mark.parametrize(("before", "after"), CASES)
def test_pin_version_changes_only_the_version(tmp_path: Path, before: str, after: str) -> None:
    path = tmp_path / "instances.yaml"
    path.write_bytes(before.encode())
    path.chmod(0o640)

    pin_version(path, "edge", "1.0.0")

    assert path.read_bytes() == after.encode()
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(("text", "message"), [
    pytest.param(HEAD.replace("edge", "other") + "spec:\n  solution: agent\n",
                 "no Instance/edge in", id="no-such-instance"),
    pytest.param(HEAD + "spec: &spec\n  solution: agent\nx-copy: *spec\n",
                 "shared by an anchor", id="spec-shared-by-an-anchor"),
    pytest.param(HEAD + "spec:\n  solution: agent\n  version: &v 1.1.0\nx-copy: *v\n",
                 "shared by an anchor", id="version-shared-by-an-anchor"),
    pytest.param(HEAD + "spec:\n  params: {}\n", "no spec.solution", id="no-solution"),
])
def test_pin_version_refuses_what_it_cannot_edit_alone(tmp_path: Path, text: str,
                                                      message: str) -> None:
    path = tmp_path / "instances.yaml"
    path.write_text(text)

    with pytest.raises(ReconcilerError, match=message):
        pin_version(path, "edge", "1.0.0")

    assert path.read_text() == text
