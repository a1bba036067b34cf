"""Site-local secrets: parameter values read from files on the site, never shown anywhere.

A parameter value may be written ``{secretFrom: {file: db-password}}`` at any level (site,
target, instance params). At a site daemon the value is read from ``<secretsDir>/db-password``
(trailing newline stripped); validating a repository without a site leaves it unresolved and
skips its value checks. Resolved secret values are registered here and redacted ("***") from
every log line (a structlog processor), status file, plan output and error message.

:func:`mask` is the one way a secret is hidden in a value: the registered values (logs,
status, errors) with ``***``, or a placement's own secret values (explain shows ``<secret>``,
the offline plan ``***``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from reconciler.core.errors import ConfigError

__all__ = [
    "MASK",
    "PLACEHOLDER",
    "SecretReader",
    "is_secret_ref",
    "mask",
    "redact",
    "redact_value",
    "register",
    "secret_file",
]

MASK = "***"
PLACEHOLDER = "<secret>"  # what explain and validation show instead of a secret
MIN_LENGTH = 4  # shorter values ("1", "on") would mask ordinary text everywhere
_known: set[str] = set()
_lock = threading.Lock()


def is_secret_ref(value: Any) -> bool:
    return (isinstance(value, Mapping) and set(value) == {"secretFrom"}
            and isinstance(value["secretFrom"], Mapping))


def secret_file(value: Mapping[str, Any]) -> str:
    ref = value["secretFrom"]
    name = ref.get("file")
    if set(ref) != {"file"} or not isinstance(name, str) or not name:
        raise ConfigError("secretFrom needs exactly one key, file: NAME")
    return name


class SecretReader:
    """Reads secret files from one directory; names must stay inside it."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def __call__(self, value: Mapping[str, Any]) -> str:
        name = secret_file(value)
        if self.directory is None:
            raise ConfigError(f"secret '{name}': this site has no secretsDir configured")
        path = Path(name)
        if path.is_absolute() or ".." in path.parts:
            raise ConfigError(f"secret '{name}': must be a file name inside the secrets "
                              "directory")
        full = (self.directory / path).resolve()
        if not full.is_relative_to(self.directory.resolve()):
            raise ConfigError(f"secret '{name}': leaves the secrets directory")
        try:
            text = full.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"secret '{name}': no such file in the secrets directory "
                              f"{self.directory}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"secret '{name}': cannot be read ({type(exc).__name__})") from None
        value_text = text[:-1] if text.endswith("\n") else text
        register([value_text])
        return value_text


def register(values: Iterable[str]) -> None:
    with _lock:
        _known.update(v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH)


def _longest_first(values: Iterable[str]) -> list[str]:
    # longest first: a secret that contains a shorter one is masked whole
    return sorted({v for v in values if v}, key=len, reverse=True)


def _registered(extra: Iterable[str] = ()) -> list[str]:
    with _lock:
        return _longest_first(_known.union(v for v in extra if len(v) >= MIN_LENGTH))


def mask(value: Any, secrets: Iterable[str], placeholder: str = MASK) -> Any:
    """``value`` with each of ``secrets`` replaced by ``placeholder`` in every string inside it.

    Walks dict values and list and tuple items (a tuple comes back as a list); other values
    are returned as they are. Empty secrets are ignored.
    """
    return _mask(value, _longest_first(secrets), placeholder)


def _mask_text(text: str, secrets: list[str], placeholder: str) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, placeholder)
    return text


def _mask(value: Any, secrets: list[str], placeholder: str) -> Any:
    if isinstance(value, str):
        return _mask_text(value, secrets, placeholder)
    if isinstance(value, dict):
        return {k: _mask(v, secrets, placeholder) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, secrets, placeholder) for v in value]
    return value


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered (and every ``extra``) secret value replaced."""
    return _mask_text(text, _registered(extra), MASK)


def redact_value(value: Any) -> Any:
    """:func:`redact` applied to every string inside ``value`` (see :func:`mask`)."""
    return _mask(value, _registered(), MASK)


def log_processor(_logger: Any, _name: str, event: MutableMapping[str, Any]
                  ) -> MutableMapping[str, Any]:
    """structlog processor: no registered secret value leaves in a log line."""
    if not _known:
        return event
    secrets = _registered()
    return {k: _mask(v, secrets, MASK) for k, v in event.items()}
