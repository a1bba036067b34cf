"""Site-local secrets: reading them from the secrets directory, and keeping their values out
of every text the daemon writes (``redact``, ``redact_value`` and the structlog processor).

The registry of known secret values is process-wide and only grows, so every test uses
values of its own (``fresh``) and never depends on what another test registered.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from reconciler.core.errors import ConfigError
from reconciler.core.secrets import (
    MASK,
    SecretReader,
    is_secret_ref,
    log_processor,
    redact,
    redact_value,
    register,
    secret_file,
)
from reconciler.daemon.logs import configure_logging


def fresh(prefix: str = "pw") -> str:
    """A secret value no other test has registered."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def ref(name: object) -> dict[str, object]:
    return {"secretFrom": {"file": name}}


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    return directory


# ---------------------------------------------------------------- recognising a reference

def test_a_secret_reference_is_exactly_one_secretfrom_mapping() -> None:
    assert is_secret_ref(ref("db-password"))
    assert not is_secret_ref({"secretFrom": "db-password"})  # not a mapping inside
    assert not is_secret_ref({"secretFrom": {"file": "x"}, "default": "y"})
    assert not is_secret_ref("secretFrom")
    assert secret_file(ref("db-password")) == "db-password"


@pytest.mark.parametrize("value", [
    {"secretFrom": {}},
    {"secretFrom": {"env": "DB_PASSWORD"}},
    {"secretFrom": {"file": "a", "env": "B"}},
    {"secretFrom": {"file": ""}},
    {"secretFrom": {"file": 42}},
])
def test_a_malformed_reference_is_a_config_error(value: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="secretFrom needs exactly one key, file: NAME"):
        secret_file(value)


# ---------------------------------------------------------------- SecretReader

def test_reader_returns_the_file_content_without_its_trailing_newline(
        secrets_dir: Path) -> None:
    value = fresh()
    (secrets_dir / "db-password").write_text(value + "\n")
    (secrets_dir / "no-newline").write_text(value + "-raw")
    (secrets_dir / "two-lines").write_text(f"{value}-a\n{value}-b\n\n")
    read = SecretReader(secrets_dir)

    assert read(ref("db-password")) == value
    assert read(ref("no-newline")) == value + "-raw"
    # only the one newline an editor adds is dropped; the rest is the value
    assert read(ref("two-lines")) == f"{value}-a\n{value}-b\n"


def test_reader_registers_what_it_read_for_redaction(secrets_dir: Path) -> None:
    value = fresh()
    (secrets_dir / "token").write_text(value + "\n")
    assert redact(f"token={value}") == f"token={value}"  # unknown until read

    SecretReader(secrets_dir)(ref("token"))

    assert redact(f"token={value}") == f"token={MASK}"


def test_reader_reads_files_in_subdirectories_of_the_secrets_dir(secrets_dir: Path) -> None:
    value = fresh()
    (secrets_dir / "db").mkdir()
    (secrets_dir / "db" / "password").write_text(value)
    assert SecretReader(secrets_dir)(ref("db/password")) == value


@pytest.mark.parametrize("name", ["../outside", "db/../../outside", "/etc/hostname"])
def test_reader_refuses_names_that_leave_the_directory(secrets_dir: Path, name: str) -> None:
    (secrets_dir.parent / "outside").write_text("not a secret of this site\n")
    with pytest.raises(ConfigError) as caught:
        SecretReader(secrets_dir)(ref(name))
    assert caught.value.message == (f"secret '{name}': must be a file name inside the "
                                    "secrets directory")


def test_reader_refuses_a_symlink_out_of_the_directory(secrets_dir: Path) -> None:
    outside = secrets_dir.parent / "ssh_host_key"
    outside.write_text(fresh("hostkey") + "\n")
    (secrets_dir / "innocent").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"^secret 'innocent': leaves the secrets directory$"):
        SecretReader(secrets_dir)(ref("innocent"))


def test_reader_follows_a_symlink_that_stays_inside(secrets_dir: Path) -> None:
    value = fresh()
    (secrets_dir / "current").write_text(value)
    (secrets_dir / "db-password").symlink_to(secrets_dir / "current")
    assert SecretReader(secrets_dir)(ref("db-password")) == value


def test_missing_secret_names_the_secret_and_the_directory(secrets_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        SecretReader(secrets_dir)(ref("api-token"))
    assert caught.value.message == (f"secret 'api-token': no such file in the secrets "
                                    f"directory {secrets_dir}")


def test_site_without_secrets_dir_cannot_resolve_any_secret() -> None:
    with pytest.raises(ConfigError, match=r"^secret 'api-token': this site has no "
                                          r"secretsDir configured$"):
        SecretReader(None)(ref("api-token"))


def test_unreadable_secret_is_reported_without_its_content(secrets_dir: Path) -> None:
    (secrets_dir / "binary").write_bytes(b"\xff\xfe" + fresh().encode())
    (secrets_dir / "a-directory").mkdir()
    read = SecretReader(secrets_dir)
    with pytest.raises(ConfigError, match=r"^secret 'binary': cannot be read "
                                          r"\(UnicodeDecodeError\)$"):
        read(ref("binary"))
    with pytest.raises(ConfigError, match=r"^secret 'a-directory': cannot be read "
                                          r"\(IsADirectoryError\)$"):
        read(ref("a-directory"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_secret_without_read_permission_is_reported(secrets_dir: Path) -> None:
    locked = secrets_dir / "locked"
    locked.write_text(fresh())
    locked.chmod(0)
    with pytest.raises(ConfigError, match=r"^secret 'locked': cannot be read "
                                          r"\(PermissionError\)$"):
        SecretReader(secrets_dir)(ref("locked"))


# ---------------------------------------------------------------- redact

def test_redact_replaces_every_occurrence_of_every_registered_value() -> None:
    one, two = fresh("one"), fresh("two")
    register([one, two])
    assert redact(f"{one} and {two}, again {one}") == f"{MASK} and {MASK}, again {MASK}"
    assert redact("nothing secret here") == "nothing secret here"


def test_redact_replaces_the_longest_value_first() -> None:
    short = fresh("k")
    longer = short + "-extended"
    register([short])
    register([longer])
    # shortest first would leave "***-extended" behind and reveal how the longer one ends
    assert redact(f"a={longer} b={short}") == f"a={MASK} b={MASK}"


def test_redact_leaves_values_shorter_than_four_characters_alone() -> None:
    register(["on", "1", "abc"])
    text = "on 1 abc: the port is 1, logging is on"
    assert redact(text) == text
    assert redact(text, extra=["abc"]) == text


def test_redact_masks_extra_values_without_registering_them() -> None:
    value = fresh("extra")
    assert redact(f"x {value} y", extra=[value]) == f"x {MASK} y"
    assert redact(f"x {value} y") == f"x {value} y"


def test_register_ignores_values_that_are_not_strings() -> None:
    value = fresh()
    register([value, 12345678, None])  # type: ignore[list-item]
    assert redact(f"{value} 12345678") == f"{MASK} 12345678"


def test_redact_value_walks_nested_structures() -> None:
    value = fresh()
    register([value])
    nested = {"env": {"PASSWORD": value, "PORT": 5432},
              "argv": ["connect", f"--password={value}"], "pair": ("user", value),
              "flag": True, "none": None}
    assert redact_value(nested) == {
        "env": {"PASSWORD": MASK, "PORT": 5432},
        "argv": ["connect", f"--password={MASK}"], "pair": ["user", MASK],
        "flag": True, "none": None}


# ---------------------------------------------------------------- the structlog processor

def test_processor_masks_every_field_of_an_event() -> None:
    value = fresh()
    register([value])
    event = {"event": f"connected with {value}", "stdout_tail": f"password={value}\n",
             "params": {"db": value}, "attempt": 2}
    assert log_processor(None, "info", event) == {
        "event": f"connected with {MASK}", "stdout_tail": f"password={MASK}\n",
        "params": {"db": MASK}, "attempt": 2}


def test_processor_masks_bound_context_of_a_wrapped_logger() -> None:
    value = fresh()
    register([value])
    out = io.StringIO()
    logger = structlog.wrap_logger(structlog.PrintLogger(out),
                                   processors=[log_processor, structlog.processors.JSONRenderer()])
    logger.bind(target="db-host", dsn=f"postgres://app:{value}@db/app").info(
        "script_applied", stdout_tail=f"using {value}")
    line = json.loads(out.getvalue())
    assert line == {"target": "db-host", "dsn": f"postgres://app:{MASK}@db/app",
                    "stdout_tail": f"using {MASK}", "event": "script_applied"}


@pytest.fixture
def daemon_log() -> Iterator[io.StringIO]:
    """The project's own logging set-up (JSON lines, debug), writing to a buffer."""
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()


def test_configured_logging_masks_messages_context_and_tracebacks(
        daemon_log: io.StringIO) -> None:
    value = fresh()
    register([value])
    log = structlog.get_logger("tests.secrets").bind(secret_in_context=value)
    log.debug("script_ran", stdout=f"password is {value}")
    try:
        raise ValueError(f"driver refused password {value}")
    except ValueError:
        log.exception("apply_failed")

    text = daemon_log.getvalue()
    assert value not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["event"] for line in lines] == ["script_ran", "apply_failed"]
    assert lines[0]["stdout"] == f"password is {MASK}"
    assert lines[0]["secret_in_context"] == MASK
    assert f"ValueError: driver refused password {MASK}" in lines[1]["exception"]


def test_processor_runs_before_a_log_capture() -> None:
    """structlog's LogCapture placed after the processor sees only masked events."""
    value = fresh()
    register([value])
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(None, processors=[log_processor, capture])
    logger.warning("fetch_failed", error=f"https://ci:{value}@git.example.org: 403",
                   retries=[value, "plain"])
    assert capture.entries == [{"event": "fetch_failed", "log_level": "warning",
                                "error": f"https://ci:{MASK}@git.example.org: 403",
                                "retries": [MASK, "plain"]}]
