"""The engine imports nothing of the daemon or the CLI, directly or through another module.

The engine takes its settings as values (``EngineSettings``) and reports through a protocol
(``RunObserver``) that the daemon's metrics implement, so that the arrows run one way:
cli > daemon > engine > gitops | providers > core. Checked here on the source (every import
statement, also those inside functions) until the import contract of the packaged layout
checks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"

ENGINE = ["pipeline", "reconciling", "revisions", "publishing", "fetching", "cancellation",
          "state_store", "failures", "run_observer", "engine_settings", "executing",
          "inventory", "status", "bindings", "planning", "statefiles", "backoff"]
ABOVE = {"config", "daemon", "httpserver", "wsgi", "webhooks", "metrics", "notify", "logs",
         "cli"}


def imports(module: str) -> set[str]:
    """The reconciler modules ``module`` imports (names without the package)."""
    path = PACKAGE / f"{module}.py"
    if not path.is_file():
        return set()  # a package or a module outside the flat layout: not followed
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "reconciler":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("reconciler."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("reconciler."))
    return found


@pytest.mark.parametrize("module", ENGINE)
def test_the_engine_does_not_reach_above_itself(module: str) -> None:
    seen = {module}
    chains = [[module]]
    while chains:
        chain = chains.pop()
        for name in sorted(imports(chain[-1])):
            assert name not in ABOVE, " -> ".join([*chain, name])
            if name not in seen:
                seen.add(name)
                chains.append([*chain, name])
