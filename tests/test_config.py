"""Configuration (SPEC §2): defaults, fallbacks, unit conversion, validation, redaction.

Every test passes an explicit dict environment; expected values are written out from the spec
(never read back from ``Settings`` defaults), so a wrong default fails a test.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from wadaemon.config import ConfigError, Settings, load_settings

EXAMPLE_FILE = Path(__file__).resolve().parent.parent / "env.auto-backfill.example"

# Every variable SPEC §2 (plus the project id extras) defines.
ALL_VARS = (
    "WHATSAPP_SYNC_FULL_HISTORY",
    "WHATSAPP_HISTORY_SYNC_DRY_RUN",
    "WHATSAPP_HISTORY_SYNC_DAYS",
    "WHATSAPP_HISTORY_SYNC_SIZE_MB",
    "WHATSAPP_HISTORY_SYNC_QUOTA_MB",
    "WHATSAPP_BACKFILL_COUNT",
    "WHATSAPP_BACKFILL_THREADS",
    "WHATSAPP_BACKFILL_MESSAGES_PER_THREAD",
    "WHATSAPP_BACKFILL_MAX_DAYS",
    "WHATSAPP_AUTO_BACKFILL_ENABLED",
    "AUTO_BACKFILL_ENABLED",
    "WHATSAPP_BACKFILL_INTERVAL_SECONDS",
    "AUTO_BACKFILL_INTERVAL_MS",
    "WHATSAPP_BACKFILL_CONCURRENCY",
    "AUTO_BACKFILL_MAX_CONCURRENCY",
    "WHATSAPP_BACKFILL_COOLDOWN_MINUTES",
    "AUTO_BACKFILL_COOLDOWN_SUCCESS_MS",
    "AUTO_BACKFILL_ATTEMPT_BACKOFF_MS",
    "AUTO_BACKFILL_LEASE_MS",
    "AUTO_BACKFILL_MAX_ACCOUNTS_PER_TICK",
    "WHATSAPP_BACKFILL_EXHAUSTED_RETRY_DAYS",
    "WHATSAPP_HISTORY_REQUEST_TIMEOUT_MS",
    "WHATSAPP_HISTORY_REQUEST_PACE_MS",
    "RECENT_SYNC_ENABLED",
    "RECENT_SYNC_INTERVAL_MS",
    "RECENT_SYNC_LOOKBACK_MS",
    "RECENT_SYNC_MAX_THREADS",
    "RECENT_SYNC_MAX_MESSAGES_PER_THREAD",
    "RECENT_SYNC_MAX_CONCURRENCY",
    "RECENT_SYNC_LEASE_MS",
    "AUTO_REPAIR_THREADS_ENABLED",
    "AUTO_REPAIR_THREADS_LIMIT_PER_RUN",
    "AUTO_REPAIR_COOLDOWN_MINUTES",
    "INSTANCE_ID",
    "PORT",
    "HOST",
    "ADMIN_TOKEN",
    "API_TOKEN",
    "FIREBASE_SERVICE_ACCOUNT_JSON",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "FIRESTORE_EMULATOR_HOST",
    "FIRESTORE_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "WADAEMON_DATA_DIR",
    "WADAEMON_ACCOUNTS",
    "WADAEMON_CAPTURE_DIR",
    "WADAEMON_SESSION_DB",
    "WADAEMON_ACCOUNT_LEASE_MS",
    "WADAEMON_ACCOUNT_RENEW_DEADLINE_MS",
    "WADAEMON_ACCOUNT_RETRY_PERIOD_MS",
    "WADAEMON_SIMSERVER",
    "WADAEMON_LOG_LEVEL",
)

BOOL_VARS = (
    "WHATSAPP_SYNC_FULL_HISTORY",
    "WHATSAPP_HISTORY_SYNC_DRY_RUN",
    "WHATSAPP_AUTO_BACKFILL_ENABLED",
    "AUTO_BACKFILL_ENABLED",
    "RECENT_SYNC_ENABLED",
    "AUTO_REPAIR_THREADS_ENABLED",
)
BOOL_FIELD = {
    "WHATSAPP_SYNC_FULL_HISTORY": "sync_full_history",
    "WHATSAPP_HISTORY_SYNC_DRY_RUN": "history_sync_dry_run",
    "WHATSAPP_AUTO_BACKFILL_ENABLED": "auto_backfill_enabled",
    "AUTO_BACKFILL_ENABLED": "auto_backfill_enabled",
    "RECENT_SYNC_ENABLED": "recent_sync_enabled",
    "AUTO_REPAIR_THREADS_ENABLED": "auto_repair_threads_enabled",
}

# Whole-number variables: (variable, field, smallest allowed, unit in the message, ms per unit).
# ms per unit None: a plain count stored as is.
NUMBER_VARS: tuple[tuple[str, str, int, str | None, int | None], ...] = (
    ("WHATSAPP_BACKFILL_COUNT", "backfill_count", 1, None, None),
    ("WHATSAPP_BACKFILL_THREADS", "backfill_threads", 1, None, None),
    ("WHATSAPP_BACKFILL_MESSAGES_PER_THREAD", "backfill_messages_per_thread", 1, None, None),
    ("WHATSAPP_BACKFILL_MAX_DAYS", "backfill_max_idle_ms", 1, "days", 86_400_000),
    ("WHATSAPP_BACKFILL_INTERVAL_SECONDS", "auto_backfill_interval_ms", 1, "seconds", 1_000),
    ("AUTO_BACKFILL_INTERVAL_MS", "auto_backfill_interval_ms", 1, "milliseconds", 1),
    ("WHATSAPP_BACKFILL_CONCURRENCY", "backfill_max_concurrency", 1, None, None),
    ("AUTO_BACKFILL_MAX_CONCURRENCY", "backfill_max_concurrency", 1, None, None),
    ("WHATSAPP_BACKFILL_COOLDOWN_MINUTES", "auto_backfill_cooldown_ms", 0, "minutes", 60_000),
    ("AUTO_BACKFILL_COOLDOWN_SUCCESS_MS", "auto_backfill_cooldown_ms", 0, "milliseconds", 1),
    ("AUTO_BACKFILL_ATTEMPT_BACKOFF_MS", "auto_backfill_attempt_backoff_ms", 0, "milliseconds", 1),
    ("AUTO_BACKFILL_LEASE_MS", "auto_backfill_lease_ms", 1, "milliseconds", 1),
    ("AUTO_BACKFILL_MAX_ACCOUNTS_PER_TICK", "auto_backfill_max_accounts_per_tick", 1, None, None),
    ("RECENT_SYNC_INTERVAL_MS", "recent_sync_interval_ms", 1, "milliseconds", 1),
    ("RECENT_SYNC_LOOKBACK_MS", "recent_sync_lookback_ms", 1, "milliseconds", 1),
    ("RECENT_SYNC_MAX_THREADS", "recent_sync_max_threads", 1, None, None),
    ("RECENT_SYNC_MAX_MESSAGES_PER_THREAD", "recent_sync_max_messages_per_thread", 1, None, None),
    ("RECENT_SYNC_MAX_CONCURRENCY", "recent_sync_max_concurrency", 1, None, None),
    ("RECENT_SYNC_LEASE_MS", "recent_sync_lease_ms", 1, "milliseconds", 1),
    ("AUTO_REPAIR_THREADS_LIMIT_PER_RUN", "auto_repair_threads_limit_per_run", 1, None, None),
    ("AUTO_REPAIR_COOLDOWN_MINUTES", "auto_repair_cooldown_ms", 0, "minutes", 60_000),
)
NUMBER_IDS = [row[0] for row in NUMBER_VARS]

SECRET = "s3cr3t-value-that-must-not-leak"


def rejection(env: Mapping[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value


# --- defaults ---------------------------------------------------------------------------------

SPEC_DEFAULTS: dict[str, Any] = {
    "sync_full_history": True,
    "history_sync_dry_run": False,
    "history_sync_days": 3650,
    "history_sync_size_mb": 102_400,
    "history_sync_quota_mb": 102_400,
    "backfill_count": 100,
    "backfill_threads": 50,
    "backfill_messages_per_thread": 20,
    "backfill_max_idle_ms": None,
    "backfill_max_concurrency": 2,
    "auto_backfill_enabled": True,
    "auto_backfill_interval_ms": 720 * 1000,
    "auto_backfill_cooldown_ms": 60 * 60_000,
    "auto_backfill_attempt_backoff_ms": 600_000,
    "auto_backfill_lease_ms": 900_000,
    "auto_backfill_max_accounts_per_tick": 4,
    "recent_sync_enabled": True,
    "recent_sync_interval_ms": 120_000,
    "recent_sync_lookback_ms": 21_600_000,
    "recent_sync_max_threads": 30,
    "recent_sync_max_messages_per_thread": 20,
    "recent_sync_max_concurrency": 1,
    "recent_sync_lease_ms": 300_000,
    "backfill_exhausted_retry_ms": 7 * 86_400_000,
    "history_request_timeout_ms": 60_000,
    "history_request_pace_ms": 2_000,
    "auto_repair_threads_enabled": True,
    "auto_repair_threads_limit_per_run": 200,
    "auto_repair_cooldown_ms": 60 * 60_000,
    "host": "127.0.0.1",
    "port": 8080,
    "admin_token": None,
    "api_token": None,
    "data_dir": Path("./data"),
    "accounts": (),
    "capture_dir": None,
    "account_lease_ms": 30_000,
    "account_renew_deadline_ms": 20_000,
    "account_retry_period_ms": 5_000,
    "session_db": None,
    "simserver": None,
    "log_level": "INFO",
    "firebase_service_account_json": None,
    "google_application_credentials": None,
    "firestore_emulator_host": None,
    "firestore_project": None,
}


@pytest.mark.parametrize(("field", "expected"), SPEC_DEFAULTS.items(), ids=list(SPEC_DEFAULTS))
def test_empty_environment_gives_spec_default(field: str, expected: Any) -> None:
    assert getattr(load_settings({}), field) == expected


def test_spec_defaults_cover_every_field_but_instance_id() -> None:
    assert set(Settings.__struct_fields__) == set(SPEC_DEFAULTS) | {"instance_id"}


def test_struct_defaults_equal_loaded_defaults() -> None:
    """``Settings()`` (used by other modules' tests) must mean the same as an empty env."""
    loaded = load_settings({})
    assert Settings(instance_id=loaded.instance_id) == loaded


def test_instance_id_defaults_to_hostname_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "box7")
    assert load_settings({}).instance_id == f"box7-{os.getpid()}"
    assert Settings().instance_id == f"box7-{os.getpid()}"


def test_reads_os_environ_when_no_mapping_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {"PORT": "9123", "INSTANCE_ID": "from-os"})
    settings = load_settings()
    assert (settings.port, settings.instance_id) == (9123, "from-os")


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
@pytest.mark.parametrize("var", ALL_VARS)
def test_blank_value_means_unset(var: str, blank: str) -> None:
    assert load_settings({var: blank, "INSTANCE_ID": "i"}) == load_settings({"INSTANCE_ID": "i"})


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


# --- plain values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "field", "expected"),
    [
        ("WHATSAPP_BACKFILL_COUNT", "7", "backfill_count", 7),
        ("WHATSAPP_HISTORY_SYNC_DAYS", "90", "history_sync_days", 90),
        ("WHATSAPP_HISTORY_SYNC_SIZE_MB", "2048", "history_sync_size_mb", 2048),
        ("WHATSAPP_HISTORY_SYNC_QUOTA_MB", "4294967295", "history_sync_quota_mb", 4_294_967_295),
        ("WHATSAPP_BACKFILL_THREADS", "8", "backfill_threads", 8),
        ("WHATSAPP_BACKFILL_MESSAGES_PER_THREAD", "9", "backfill_messages_per_thread", 9),
        ("WHATSAPP_BACKFILL_MAX_DAYS", "2", "backfill_max_idle_ms", 2 * 86_400_000),
        ("AUTO_BACKFILL_ATTEMPT_BACKOFF_MS", "1500", "auto_backfill_attempt_backoff_ms", 1500),
        ("AUTO_BACKFILL_LEASE_MS", "1600", "auto_backfill_lease_ms", 1600),
        ("AUTO_BACKFILL_MAX_ACCOUNTS_PER_TICK", "11", "auto_backfill_max_accounts_per_tick", 11),
        ("RECENT_SYNC_INTERVAL_MS", "1700", "recent_sync_interval_ms", 1700),
        ("RECENT_SYNC_LOOKBACK_MS", "1800", "recent_sync_lookback_ms", 1800),
        ("RECENT_SYNC_MAX_THREADS", "12", "recent_sync_max_threads", 12),
        ("RECENT_SYNC_MAX_MESSAGES_PER_THREAD", "13", "recent_sync_max_messages_per_thread", 13),
        ("RECENT_SYNC_MAX_CONCURRENCY", "3", "recent_sync_max_concurrency", 3),
        ("RECENT_SYNC_LEASE_MS", "1900", "recent_sync_lease_ms", 1900),
        ("AUTO_REPAIR_THREADS_LIMIT_PER_RUN", "14", "auto_repair_threads_limit_per_run", 14),
        ("AUTO_REPAIR_COOLDOWN_MINUTES", "2", "auto_repair_cooldown_ms", 120_000),
        ("INSTANCE_ID", "node-a", "instance_id", "node-a"),
        ("HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("PORT", "1", "port", 1),
        ("PORT", "65535", "port", 65535),
        ("ADMIN_TOKEN", "adm", "admin_token", "adm"),
        ("API_TOKEN", "api", "api_token", "api"),
        ("WADAEMON_DATA_DIR", "/var/lib/wadaemon/a", "data_dir", Path("/var/lib/wadaemon/a")),
        ("WADAEMON_CAPTURE_DIR", "/tmp/capture", "capture_dir", Path("/tmp/capture")),
        ("WADAEMON_SIMSERVER", "127.0.0.1:18765", "simserver", ("127.0.0.1", 18765)),
        ("WADAEMON_SIMSERVER", " localhost:1 ", "simserver", ("localhost", 1)),
        ("WADAEMON_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("WADAEMON_LOG_LEVEL", "Warning", "log_level", "WARNING"),
        ("FIREBASE_SERVICE_ACCOUNT_JSON", '{"a": 1}', "firebase_service_account_json", '{"a": 1}'),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json", "google_application_credentials", "/k.json"),
        ("FIRESTORE_EMULATOR_HOST", "localhost:8681", "firestore_emulator_host", "localhost:8681"),
        # Whitespace around a value (an easy env-file slip) is not part of it.
        ("RECENT_SYNC_MAX_THREADS", "  42 ", "recent_sync_max_threads", 42),
        ("INSTANCE_ID", " node-b\n", "instance_id", "node-b"),
        # Leading zeros are still a whole number.
        ("RECENT_SYNC_MAX_THREADS", "007", "recent_sync_max_threads", 7),
    ],
)
def test_variable_sets_its_field(var: str, value: str, field: str, expected: Any) -> None:
    assert getattr(load_settings({var: value}), field) == expected


@pytest.mark.parametrize(
    ("var", "field"),
    [
        ("WHATSAPP_BACKFILL_COOLDOWN_MINUTES", "auto_backfill_cooldown_ms"),
        ("AUTO_BACKFILL_COOLDOWN_SUCCESS_MS", "auto_backfill_cooldown_ms"),
        ("AUTO_BACKFILL_ATTEMPT_BACKOFF_MS", "auto_backfill_attempt_backoff_ms"),
        ("AUTO_REPAIR_COOLDOWN_MINUTES", "auto_repair_cooldown_ms"),
    ],
)
def test_zero_is_allowed_for_cooldowns_and_backoff(var: str, field: str) -> None:
    """A zero cooldown/backoff is meaningful (act every tick), unlike a zero interval."""
    assert getattr(load_settings({var: "0"}), field) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("shop-ro", ("shop-ro",)),
        (" shop-ro , shop-de ", ("shop-ro", "shop-de")),
        ("a,,b,", ("a", "b")),
        (",", ()),
        ("a,b,a", ("a", "b")),
    ],
)
def test_accounts_list(value: str, expected: tuple[str, ...]) -> None:
    assert load_settings({"WADAEMON_ACCOUNTS": value}).accounts == expected


# --- booleans ---------------------------------------------------------------------------------

TRUE_WORDS = ["true", "TRUE", "True", "1", "yes", "YES", "on", "On"]
FALSE_WORDS = ["false", "FALSE", "False", "0", "no", "No", "off", "OFF"]


@pytest.mark.parametrize("word", TRUE_WORDS)
@pytest.mark.parametrize("var", BOOL_VARS)
def test_true_words(var: str, word: str) -> None:
    assert getattr(load_settings({var: word}), BOOL_FIELD[var]) is True


@pytest.mark.parametrize("word", FALSE_WORDS)
@pytest.mark.parametrize("var", BOOL_VARS)
def test_false_words(var: str, word: str) -> None:
    assert getattr(load_settings({var: word}), BOOL_FIELD[var]) is False


def test_dry_run_true_is_observable() -> None:
    """Dry run defaults to false, so this is the one flag where "true" changes the outcome."""
    assert load_settings({"WHATSAPP_HISTORY_SYNC_DRY_RUN": "yes"}).history_sync_dry_run is True


@pytest.mark.parametrize("var", BOOL_VARS)
@pytest.mark.parametrize("word", ["maybe", "2", "enabled", "t", "y", "-1", "truee"])
def test_unknown_boolean_word_is_rejected(var: str, word: str) -> None:
    error = rejection({var: word})
    assert str(error) == (
        f"{var}={word!r} is not valid: expected one of true/false, 1/0, yes/no, on/off (any case)"
    )


# --- auto backfill: off when EITHER switch is false -------------------------------------------


@pytest.mark.parametrize(
    ("preferred", "legacy", "expected"),
    [
        (None, None, True),
        ("true", None, True),
        (None, "true", True),
        ("true", "true", True),
        ("false", None, False),
        (None, "false", False),
        ("false", "true", False),
        ("true", "false", False),
        ("false", "false", False),
        ("1", "off", False),
    ],
)
def test_auto_backfill_off_if_either_switch_is_false(
    preferred: str | None, legacy: str | None, expected: bool
) -> None:
    env = {}
    if preferred is not None:
        env["WHATSAPP_AUTO_BACKFILL_ENABLED"] = preferred
    if legacy is not None:
        env["AUTO_BACKFILL_ENABLED"] = legacy
    assert load_settings(env).auto_backfill_enabled is expected


def test_both_auto_backfill_switches_are_validated() -> None:
    """Unlike a shadowed legacy value, the legacy switch always matters, so it is always checked."""
    error = rejection({"WHATSAPP_AUTO_BACKFILL_ENABLED": "false", "AUTO_BACKFILL_ENABLED": "nah"})
    assert error.problems == (
        "AUTO_BACKFILL_ENABLED='nah' is not valid: "
        "expected one of true/false, 1/0, yes/no, on/off (any case)",
    )


# --- preferred / legacy fallback chains -------------------------------------------------------

# (preferred var, its value, legacy var, its value, field, from preferred, from legacy)
CHAINS = [
    pytest.param(
        "WHATSAPP_BACKFILL_INTERVAL_SECONDS", "30", "AUTO_BACKFILL_INTERVAL_MS", "45000",
        "auto_backfill_interval_ms", 30_000, 45_000, id="interval-seconds-vs-ms",
    ),
    pytest.param(
        "WHATSAPP_BACKFILL_CONCURRENCY", "5", "AUTO_BACKFILL_MAX_CONCURRENCY", "7",
        "backfill_max_concurrency", 5, 7, id="concurrency",
    ),
    pytest.param(
        "WHATSAPP_BACKFILL_COOLDOWN_MINUTES", "5", "AUTO_BACKFILL_COOLDOWN_SUCCESS_MS", "1234",
        "auto_backfill_cooldown_ms", 300_000, 1234, id="cooldown-minutes-vs-ms",
    ),
    pytest.param(
        "FIRESTORE_PROJECT", "proj-a", "GOOGLE_CLOUD_PROJECT", "proj-b",
        "firestore_project", "proj-a", "proj-b", id="firestore-project",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("preferred", "p_value", "legacy", "l_value", "field", "from_preferred", "from_legacy"), CHAINS
)
class TestFallbackChain:
    def test_preferred_wins_when_both_set(
        self, preferred: str, p_value: str, legacy: str, l_value: str, field: str,
        from_preferred: object, from_legacy: object,
    ) -> None:  # fmt: skip
        env = {preferred: p_value, legacy: l_value}
        assert getattr(load_settings(env), field) == from_preferred

    def test_preferred_alone(
        self, preferred: str, p_value: str, legacy: str, l_value: str, field: str,
        from_preferred: object, from_legacy: object,
    ) -> None:  # fmt: skip
        assert getattr(load_settings({preferred: p_value}), field) == from_preferred

    def test_legacy_alone_is_used(
        self, preferred: str, p_value: str, legacy: str, l_value: str, field: str,
        from_preferred: object, from_legacy: object,
    ) -> None:  # fmt: skip
        assert getattr(load_settings({legacy: l_value}), field) == from_legacy

    def test_blank_preferred_falls_back_to_legacy(
        self, preferred: str, p_value: str, legacy: str, l_value: str, field: str,
        from_preferred: object, from_legacy: object,
    ) -> None:  # fmt: skip
        assert getattr(load_settings({preferred: "", legacy: l_value}), field) == from_legacy


@pytest.mark.parametrize(
    ("preferred", "legacy", "field", "expected"),
    [
        ("WHATSAPP_BACKFILL_INTERVAL_SECONDS", "AUTO_BACKFILL_INTERVAL_MS",
         "auto_backfill_interval_ms", 10_000),
        ("WHATSAPP_BACKFILL_CONCURRENCY", "AUTO_BACKFILL_MAX_CONCURRENCY",
         "backfill_max_concurrency", 10),
        ("WHATSAPP_BACKFILL_COOLDOWN_MINUTES", "AUTO_BACKFILL_COOLDOWN_SUCCESS_MS",
         "auto_backfill_cooldown_ms", 600_000),
    ],
)  # fmt: skip
def test_shadowed_legacy_value_is_ignored_even_if_invalid(
    preferred: str, legacy: str, field: str, expected: int
) -> None:
    assert getattr(load_settings({preferred: "10", legacy: "garbage"}), field) == expected


@pytest.mark.parametrize(
    ("preferred", "legacy"),
    [
        ("WHATSAPP_BACKFILL_INTERVAL_SECONDS", "AUTO_BACKFILL_INTERVAL_MS"),
        ("WHATSAPP_BACKFILL_CONCURRENCY", "AUTO_BACKFILL_MAX_CONCURRENCY"),
        ("WHATSAPP_BACKFILL_COOLDOWN_MINUTES", "AUTO_BACKFILL_COOLDOWN_SUCCESS_MS"),
    ],
)
def test_invalid_preferred_is_rejected_even_with_valid_legacy(preferred: str, legacy: str) -> None:
    error = rejection({preferred: "garbage", legacy: "10"})
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"{preferred}='garbage' is not valid")


# --- whole-number rejections ------------------------------------------------------------------


def expected_allowed(unit: str | None, minimum: int) -> str:
    noun = f"a whole number of {unit}" if unit else "a whole number"
    return f"{noun} >= {minimum}"


@pytest.mark.parametrize(
    "bad", ["abc", "-1", "-0x1", "1.5", "1e3", "+5", "1_000", "1,000", "12abc", "٣", "ten"]
)
@pytest.mark.parametrize(("var", "field", "minimum", "unit", "scale"), NUMBER_VARS, ids=NUMBER_IDS)
def test_non_whole_number_is_rejected(
    var: str, field: str, minimum: int, unit: str | None, scale: int | None, bad: str
) -> None:
    error = rejection({var: bad})
    assert str(error) == f"{var}={bad!r} is not valid: expected {expected_allowed(unit, minimum)}"


@pytest.mark.parametrize(
    ("var", "field", "minimum", "unit", "scale"),
    [row for row in NUMBER_VARS if row[2] == 1],
    ids=[row[0] for row in NUMBER_VARS if row[2] == 1],
)
def test_zero_is_rejected_where_meaningless(
    var: str, field: str, minimum: int, unit: str | None, scale: int | None
) -> None:
    error = rejection({var: "0"})
    assert str(error) == f"{var}='0' is not valid: expected {expected_allowed(unit, 1)}"


@pytest.mark.parametrize(("var", "field", "minimum", "unit", "scale"), NUMBER_VARS, ids=NUMBER_IDS)
def test_smallest_allowed_value_is_accepted_and_converted(
    var: str, field: str, minimum: int, unit: str | None, scale: int | None
) -> None:
    value = minimum + 3
    assert getattr(load_settings({var: str(value)}), field) == value * (scale or 1)
    assert getattr(load_settings({var: str(minimum)}), field) == minimum * (scale or 1)


def test_exact_message_from_the_brief() -> None:
    assert str(rejection({"RECENT_SYNC_INTERVAL_MS": "abc"})) == (
        "RECENT_SYNC_INTERVAL_MS='abc' is not valid: expected a whole number of milliseconds >= 1"
    )


@pytest.mark.parametrize(
    ("var", "value", "ceiling"),
    [
        ("RECENT_SYNC_LEASE_MS", "9" * 30, "a whole number of milliseconds from 1 to 9223372036854775807"),
        ("RECENT_SYNC_LEASE_MS", "9223372036854775808", "a whole number of milliseconds from 1 to 9223372036854775807"),
        ("WHATSAPP_BACKFILL_MAX_DAYS", "106751991168", "a whole number of days from 1 to 106751991167"),
        ("RECENT_SYNC_MAX_THREADS", "9" * 5000, "a whole number from 1 to 9223372036854775807"),
    ],
)  # fmt: skip
def test_too_large_is_rejected_without_crashing(var: str, value: str, ceiling: str) -> None:
    """Durations must fit int64 once in ms; a 5000-digit value must not hit int()'s digit limit."""
    message = str(rejection({var: value}))
    assert message.startswith(f"{var}='")
    assert message.endswith(f" is not valid: expected {ceiling}")


def test_largest_storable_duration_is_accepted() -> None:
    ceiling = (2**63 - 1) // 86_400_000
    settings = load_settings({"WHATSAPP_BACKFILL_MAX_DAYS": str(ceiling)})
    assert settings.backfill_max_idle_ms == ceiling * 86_400_000


@pytest.mark.parametrize("bad", ["0", "65536", "100000", "-80", "http", "80.0"])
def test_port_out_of_range_is_rejected(bad: str) -> None:
    assert str(rejection({"PORT": bad})) == (
        f"PORT={bad!r} is not valid: expected a whole number from 1 to 65535"
    )


@pytest.mark.parametrize("bad", ["127.0.0.1", ":18765", "127.0.0.1:0", "127.0.0.1:65536",
                                 "127.0.0.1:port", "127.0.0.1:-5", "a b:1"])
def test_simserver_address_is_validated(bad: str) -> None:
    problem = rejection({"WADAEMON_SIMSERVER": bad}).problems[0]
    assert problem.startswith(f"WADAEMON_SIMSERVER={bad!r} is not valid: expected host:port")


@pytest.mark.parametrize("bad", ["a/b", "ok,../etc", "..", ".hidden", "a\\b", "shop ro,shop-de"])
def test_unsafe_account_id_is_rejected(bad: str) -> None:
    message = str(rejection({"WADAEMON_ACCOUNTS": bad}))
    assert message.startswith(f"WADAEMON_ACCOUNTS={bad!r} is not valid: expected comma-separated")


def test_all_problems_are_reported_together() -> None:
    error = rejection(
        {"PORT": "0", "RECENT_SYNC_INTERVAL_MS": "abc", "RECENT_SYNC_ENABLED": "maybe"}
    )
    assert isinstance(error, ValueError)
    assert len(error.problems) == 3
    assert {p.split("=", 1)[0] for p in error.problems} == {
        "PORT", "RECENT_SYNC_INTERVAL_MS", "RECENT_SYNC_ENABLED",
    }  # fmt: skip
    assert str(error).startswith("3 invalid settings: ")
    assert all(problem in str(error) for problem in error.problems)


def test_long_bad_value_is_shortened_in_the_message() -> None:
    message = str(rejection({"RECENT_SYNC_LEASE_MS": "x" * 500}))
    assert "x" * 60 + "…" in message
    assert "x" * 61 not in message


# --- store selection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({}, "sqlite"),
        ({"FIRESTORE_PROJECT": "p", "GOOGLE_CLOUD_PROJECT": "p"}, "sqlite"),
        ({"FIREBASE_SERVICE_ACCOUNT_JSON": "{}"}, "firestore"),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "/etc/key.json"}, "firestore"),
        ({"FIRESTORE_EMULATOR_HOST": "127.0.0.1:8681"}, "firestore"),
        ({"FIRESTORE_EMULATOR_HOST": ""}, "sqlite"),
    ],
)
def test_store_backend(env: dict[str, str], backend: str) -> None:
    assert load_settings(env).store_backend == backend


@pytest.mark.parametrize(
    ("env", "project"),
    [
        ({"FIRESTORE_EMULATOR_HOST": "h:1"}, "wadaemon-local"),
        ({"FIRESTORE_EMULATOR_HOST": "h:1", "GOOGLE_CLOUD_PROJECT": "g"}, "g"),
        ({"FIRESTORE_EMULATOR_HOST": "h:1", "FIRESTORE_PROJECT": "f"}, "f"),
        ({"FIRESTORE_EMULATOR_HOST": "h:1", "GOOGLE_APPLICATION_CREDENTIALS": "/k"}, None),
        ({"FIRESTORE_EMULATOR_HOST": "h:1", "FIREBASE_SERVICE_ACCOUNT_JSON": "{}"}, None),
        ({"FIREBASE_SERVICE_ACCOUNT_JSON": "{}"}, None),
    ],
)
def test_firestore_project(env: dict[str, str], project: str | None) -> None:
    """Credentials carry their own project; only a bare emulator needs the local default."""
    assert load_settings(env).firestore_project == project


# --- redaction --------------------------------------------------------------------------------

SECRET_VARS = ("ADMIN_TOKEN", "API_TOKEN", "FIREBASE_SERVICE_ACCOUNT_JSON")


@pytest.mark.parametrize("var", SECRET_VARS)
def test_secret_is_redacted_everywhere_it_could_be_logged(var: str) -> None:
    settings = load_settings({var: SECRET})
    field = var.lower()
    assert getattr(settings, field) == SECRET  # kept for use...
    for rendering in (settings.describe(), repr(settings), str(settings), f"{settings!r}",
                      repr(settings.__rich_repr__())):  # fmt: skip
        assert SECRET not in rendering  # ...but never shown
    assert f"{field}=<redacted>" in settings.describe()


@pytest.mark.parametrize("var", SECRET_VARS)
def test_unset_secret_shows_unset(var: str) -> None:
    assert f"{var.lower()}=unset" in load_settings({}).describe()


def test_describe_lists_every_field_and_non_secret_values() -> None:
    settings = load_settings(
        {
            "INSTANCE_ID": "node-a",
            "GOOGLE_APPLICATION_CREDENTIALS": "/etc/wadaemon/key.json",
            "WADAEMON_ACCOUNTS": "shop-ro,shop-de",
            "RECENT_SYNC_ENABLED": "off",
            "HOST": "my host",
        }
    )
    line = settings.describe()
    assert "\n" not in line
    tokens: dict[str, str] = {
        match[1]: match[2] for match in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)
    }
    assert set(tokens) == set(Settings.__struct_fields__) | {"store_backend"}
    assert tokens["store_backend"] == "firestore"
    assert tokens["instance_id"] == "node-a"
    assert tokens["google_application_credentials"] == "/etc/wadaemon/key.json"
    assert tokens["accounts"] == "shop-ro,shop-de"
    assert tokens["recent_sync_enabled"] == "false"
    assert tokens["recent_sync_interval_ms"] == "120000"
    assert tokens["backfill_max_idle_ms"] == "unset"
    assert tokens["host"] == '"my host"'


def test_error_message_never_contains_a_secret() -> None:
    error = rejection({"ADMIN_TOKEN": SECRET, "API_TOKEN": SECRET, "PORT": "x"})
    assert SECRET not in str(error)


# --- the example env file ---------------------------------------------------------------------

_EXAMPLE_LINE = re.compile(r"#([A-Z][A-Z0-9_]*)=(.*)")


def example_assignments() -> dict[str, str]:
    assignments: dict[str, str] = {}
    for line in EXAMPLE_FILE.read_text(encoding="utf-8").splitlines():
        match = _EXAMPLE_LINE.fullmatch(line)
        if match:
            assert match.group(1) not in assignments, f"{match.group(1)} listed twice"
            assignments[match.group(1)] = match.group(2)
    return assignments


def test_example_file_lists_exactly_every_variable() -> None:
    """Against what the loader actually reads (not a hand-kept list), so a variable the loader
    gains and the example lacks fails here."""
    env = RecordingEnv()
    load_settings(env)
    assert sorted(example_assignments()) == sorted(env.asked)


def test_only_the_loader_reads_the_environment() -> None:
    """A variable read anywhere else (as WADAEMON_LOG_LEVEL once was, in logs.py) escapes the
    validation, the start-up settings log, the example file and the docs."""
    package = Path(__file__).resolve().parent.parent / "wadaemon"
    reads = re.compile(r"os\.getenv\(|environ\.get\(|environ\[[^\]]+\](?!\s*=[^=])")
    offenders = [f"{path.relative_to(package)}:{number}"
                 for path in sorted(package.rglob("*.py")) if path.name != "config.py"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if reads.search(line)]
    assert offenders == []


@pytest.mark.parametrize("var", ["WHATSAPP_HISTORY_SYNC_DAYS", "WHATSAPP_HISTORY_SYNC_SIZE_MB",
                                 "WHATSAPP_HISTORY_SYNC_QUOTA_MB"])
@pytest.mark.parametrize("bad", ["0", "-1", "4294967296", "1.5", "ten"])
def test_history_sync_depth_is_validated(var: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=f"{var}='{re.escape(bad)}' is not valid: expected a whole number"):
        load_settings({var: bad})


def test_unknown_log_level_is_rejected() -> None:
    with pytest.raises(ConfigError, match="WADAEMON_LOG_LEVEL='loud' is not valid: expected one of DEBUG"):
        load_settings({"WADAEMON_LOG_LEVEL": "loud"})


def test_example_file_values_are_the_defaults() -> None:
    """Uncommenting every line of the example must change nothing."""
    env = {**example_assignments(), "INSTANCE_ID": "i"}
    assert load_settings(env) == load_settings({"INSTANCE_ID": "i"})


def test_example_file_every_variable_has_a_comment_above() -> None:
    lines = EXAMPLE_FILE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if _EXAMPLE_LINE.fullmatch(line):
            above = lines[index - 1]
            assert above.startswith("#"), f"no explanation above {line!r}"


def test_example_file_has_only_comments_and_blank_lines() -> None:
    """A systemd EnvironmentFile must not set anything by default."""
    for line in EXAMPLE_FILE.read_text(encoding="utf-8").splitlines():
        assert line == "" or line.startswith("#"), line


class RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers which variables were looked up."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_loader_reads_exactly_the_documented_variables() -> None:
    env = RecordingEnv()
    load_settings(env)
    assert env.asked == set(ALL_VARS)


# --- account lease timing and the session database ---------------------------------------------


def test_lease_alone_derives_deadline_and_retry_period() -> None:
    settings = load_settings({"WADAEMON_ACCOUNT_LEASE_MS": "3000"})
    assert (settings.account_lease_ms, settings.account_renew_deadline_ms,
            settings.account_retry_period_ms) == (3000, 2000, 500)


def test_lease_timing_set_explicitly() -> None:
    settings = load_settings({"WADAEMON_ACCOUNT_LEASE_MS": "15000", "WADAEMON_ACCOUNT_RENEW_DEADLINE_MS": "10000",
                              "WADAEMON_ACCOUNT_RETRY_PERIOD_MS": "2000"})
    assert (settings.account_lease_ms, settings.account_renew_deadline_ms,
            settings.account_retry_period_ms) == (15000, 10000, 2000)


@pytest.mark.parametrize(("lease", "deadline", "retry"), [("3000", "3000", "500"), ("3000", "2000", "2000"),
                                                          ("30000", "40000", ""), ("", "", "20000")])
def test_lease_timing_out_of_order_is_rejected(lease: str, deadline: str, retry: str) -> None:
    error = rejection({"WADAEMON_ACCOUNT_LEASE_MS": lease, "WADAEMON_ACCOUNT_RENEW_DEADLINE_MS": deadline,
                       "WADAEMON_ACCOUNT_RETRY_PERIOD_MS": retry})
    assert "expected lease > renew deadline > retry period" in str(error)
    assert "WADAEMON_ACCOUNT_RENEW_DEADLINE_MS=" in str(error)


@pytest.mark.parametrize("bad", ["abc", "0", "2", "1.5"])
def test_lease_must_be_a_whole_number_of_at_least_3_ms(bad: str) -> None:
    error = rejection({"WADAEMON_ACCOUNT_LEASE_MS": bad})
    assert f"WADAEMON_ACCOUNT_LEASE_MS={bad!r} is not valid: expected a whole number of milliseconds >= 3" in str(error)


def test_session_db_accepts_postgres_urls() -> None:
    for url in ("postgres://u:p@db/wa", "postgresql://db/wa"):
        assert load_settings({"WADAEMON_SESSION_DB": url}).session_db == url


def test_session_db_rejects_other_schemes_without_showing_the_value() -> None:
    error = rejection({"WADAEMON_SESSION_DB": f"mysql://u:{SECRET}@db/wa"})
    assert str(error) == "WADAEMON_SESSION_DB is not valid: expected a postgres:// or postgresql:// URL"


def test_sources_name_what_is_set_and_mark_legacy_names() -> None:
    from wadaemon.config import describe_sources

    line = describe_sources({"PORT": "9000", "AUTO_BACKFILL_INTERVAL_MS": "5000",
                             "WHATSAPP_BACKFILL_CONCURRENCY": "3", "AUTO_BACKFILL_MAX_CONCURRENCY": "4",
                             "API_TOKEN": SECRET, "UNRELATED": "x"})
    assert line == ("set in the environment: WHATSAPP_BACKFILL_CONCURRENCY, AUTO_BACKFILL_INTERVAL_MS"
                    " (legacy name of WHATSAPP_BACKFILL_INTERVAL_SECONDS), PORT, API_TOKEN,"
                    " AUTO_BACKFILL_MAX_CONCURRENCY (legacy, ignored: WHATSAPP_BACKFILL_CONCURRENCY is set);"
                    " everything else is the default")
    assert SECRET not in line
    assert describe_sources({}) == "nothing set in the environment; everything else is the default"


def test_start_up_logs_the_effective_settings_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from wadaemon.cli import main

    root = logging.getLogger()  # main() configures logging for the process: undone afterwards
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    for name in ("aiohttp.access", "urllib3", "google", "grpc"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    monkeypatch.setenv("API_TOKEN", SECRET)
    monkeypatch.setenv("WADAEMON_DATA_DIR", str(tmp_path))
    assert main(["replay", "acct", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    config_lines = [line for line in err.splitlines() if "[config]" in line]
    assert len(config_lines) == 2
    assert "api_token=<redacted>" in config_lines[0] and "port=8080" in config_lines[0]
    assert "API_TOKEN" in config_lines[1] and "WADAEMON_DATA_DIR" in config_lines[1]
    assert SECRET not in err
