"""The environment, read once at start-up into one frozen :class:`Settings` (docs/configuration.md).

Why one frozen Struct: every component reads the same immutable value, so a setting cannot
change under a running actor, and tests build settings without touching ``os.environ``.

Conventions the rest of the code relies on:

* Durations are held in **milliseconds** (fields ending ``_ms``) whatever unit the variable is
  written in (seconds, minutes, days), so no caller ever converts.
* Preferred variable first, legacy fallback after: when both are set the preferred one wins and
  the legacy one is ignored entirely (not even validated: it has no effect).
* An empty (or blank) value means unset; values are stripped of surrounding whitespace.
* Every variable is validated and **all** problems are reported together in one
  :class:`ConfigError` (one clause per variable, naming it, its value and what is allowed),
  so an operator fixes a broken env file in one pass instead of one restart per mistake.
* Secrets (tokens, the service-account JSON) never appear in an error message, in
  :meth:`Settings.describe` or in ``repr``; only whether they are set.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

__all__ = ["EMULATOR_DEFAULT_PROJECT", "ConfigError", "LogLevel", "Settings", "StoreBackend",
           "describe_sources", "load_settings", "parse_host_port"]

StoreBackend = Literal["firestore", "sqlite"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LOG_LEVELS: Final[tuple[LogLevel, ...]] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

EMULATOR_DEFAULT_PROJECT: Final = "wadaemon-local"
"""Project id used when only ``FIRESTORE_EMULATOR_HOST`` is set: the emulator needs *some* id."""

_MS_PER_UNIT: Final[Mapping[str, int]] = {
    "milliseconds": 1,
    "seconds": 1_000,
    "minutes": 60_000,
    "days": 86_400_000,
}
_INT64_MAX: Final = 2**63 - 1  # what the store can hold (Firestore integers are int64)
_SECRET_FIELDS: Final = frozenset({"admin_token", "api_token", "firebase_service_account_json", "session_db"})
_SESSION_DB_SCHEMES: Final = ("postgres://", "postgresql://")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_BOOL_ALLOWED: Final = "one of true/false, 1/0, yes/no, on/off (any case)"
_DIGITS: Final = re.compile(r"[0-9]+")
_SHOW_MAX: Final = 60
_UINT32_MAX: Final = 2**32 - 1  # the history-sync limits are uint32 protobuf fields


class ConfigError(ValueError):
    """The environment holds at least one invalid value; start-up must stop.

    ``problems`` has one entry per offending variable, e.g.
    ``RECENT_SYNC_INTERVAL_MS='abc' is not valid: expected a whole number of milliseconds >= 1``;
    the message is that entry alone, or all of them joined by ``"; "`` (one log line).
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} invalid settings: " + "; ".join(self.problems)
        super().__init__(message)


def _default_instance_id() -> str:
    """``hostname-pid``: unique per running process, readable in logs and lease documents."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Effective configuration. Field defaults are the docs/configuration.md defaults, so ``Settings()`` (with
    keyword overrides) is a valid configuration for tests; only :func:`load_settings` validates.
    """

    # History sync on pairing.
    sync_full_history: bool = True
    history_sync_dry_run: bool = False
    # How deep that full history goes (sent with requireFullSync at link time; whatsmeow's own
    # defaults: ten years, 100 GB).
    history_sync_days: int = 3650
    history_sync_size_mb: int = 102_400
    history_sync_quota_mb: int = 102_400

    # Backfill (on-demand and automatic).
    backfill_count: int = 100
    backfill_threads: int = 50
    backfill_messages_per_thread: int = 20
    backfill_max_idle_ms: int | None = None  # WHATSAPP_BACKFILL_MAX_DAYS; None: no limit
    backfill_max_concurrency: int = 2
    auto_backfill_enabled: bool = True
    auto_backfill_interval_ms: int = 720_000
    auto_backfill_cooldown_ms: int = 3_600_000  # after a success
    auto_backfill_attempt_backoff_ms: int = 600_000  # after a failure
    auto_backfill_lease_ms: int = 900_000
    auto_backfill_max_accounts_per_tick: int = 4
    # On-demand history requests (backfill and recent-sync; beyond docs/configuration.md).
    backfill_exhausted_retry_ms: int = 7 * 86_400_000  # a thread with no older history
    history_request_timeout_ms: int = 60_000  # an answer later than this is still stored
    history_request_pace_ms: int = 2_000  # min time between two requests to one phone

    # Recent-sync (gap filler).
    recent_sync_enabled: bool = True
    recent_sync_interval_ms: int = 120_000
    recent_sync_lookback_ms: int = 21_600_000
    recent_sync_max_threads: int = 30
    recent_sync_max_messages_per_thread: int = 20
    recent_sync_max_concurrency: int = 1
    recent_sync_lease_ms: int = 300_000

    # Thread repair after backfill.
    auto_repair_threads_enabled: bool = True
    auto_repair_threads_limit_per_run: int = 200
    auto_repair_cooldown_ms: int = 3_600_000

    # Process, HTTP, accounts, files.
    instance_id: str = msgspec.field(default_factory=_default_instance_id)
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None
    api_token: str | None = None
    data_dir: Path = Path("data")
    accounts: tuple[str, ...] = ()  # empty: every paired session in the data dir
    capture_dir: Path | None = None
    simserver: tuple[str, int] | None = None  # WADAEMON_SIMSERVER: (host, port) of the simulated service
    log_level: LogLevel = "INFO"

    # Several instances (wadaemon.cluster): account ownership leases, Kubernetes-style timing.
    # lease > renew deadline > retry period; the defaults keep their ratios when only the
    # lease is set (deadline 2/3 of it, retry period 1/6).
    account_lease_ms: int = 30_000
    account_renew_deadline_ms: int = 20_000
    account_retry_period_ms: int = 5_000
    #: WhatsApp sessions in PostgreSQL (``postgres://…``) instead of files in the data dir.
    session_db: str | None = None

    # Store selection: any of the first three selects Firestore.
    firebase_service_account_json: str | None = None
    google_application_credentials: str | None = None
    firestore_emulator_host: str | None = None
    firestore_project: str | None = None  # None: the credentials decide

    @property
    def store_backend(self) -> StoreBackend:
        """``"firestore"`` when any Firestore setting is present (docs/configuration.md), else ``"sqlite"``."""
        if (
            self.firebase_service_account_json
            or self.google_application_credentials
            or self.firestore_emulator_host
        ):
            return "firestore"
        return "sqlite"

    def describe(self) -> str:
        """Every effective setting as one ``key=value`` line for the start-up log.

        Secrets are rendered ``<redacted>`` (or ``unset``): the line goes to journald and log
        shippers, where a bearer token or a private key must never land.
        """
        parts = [f"store_backend={self.store_backend}"]
        for name in self.__struct_fields__:
            value: object = getattr(self, name)
            shown = "<redacted>" if name in _SECRET_FIELDS and value is not None else _render(value)
            parts.append(f"{name}={shown}")
        return " ".join(parts)

    def __repr__(self) -> str:
        """Redacted like :meth:`describe`: the default Struct repr would print the secrets."""
        return f"Settings({self.describe()})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """Keeps pretty-printers that prefer ``__rich_repr__`` from listing raw secrets."""
        return [
            (
                name,
                "<redacted>"
                if name in _SECRET_FIELDS and getattr(self, name) is not None
                else getattr(self, name),
            )
            for name in self.__struct_fields__
        ]


def _render(value: object) -> str:
    """One token of :meth:`Settings.describe`; quoted when it would otherwise be ambiguous."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[1], int):  # an address
            return f"{value[0]}:{value[1]}"
        return ",".join(str(v) for v in value) if value else "unset"
    text = str(value)
    if not text or any(c.isspace() for c in text) or '"' in text:
        return msgspec.json.encode(text).decode()
    return text


def _show(value: str) -> str:
    """The offending value as quoted in an error, shortened so a pasted blob stays one line."""
    if len(value) > _SHOW_MAX:
        value = value[:_SHOW_MAX] + "…"
    return repr(value)


class _Env:
    """Reads variables from one mapping and collects problems instead of raising at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        """The stripped value, or None when unset or blank."""
        value = self._environ.get(name)
        if value is None:
            return None
        return value.strip() or None

    def first(self, names: Sequence[str]) -> tuple[str, str] | None:
        """(name, value) of the first set variable: the preferred name wins over the legacy."""
        for name in names:
            value = self.raw(name)
            if value is not None:
                return name, value
        return None

    def reject(self, name: str, value: str, allowed: str) -> None:
        self.problems.append(f"{name}={_show(value)} is not valid: expected {allowed}")

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        word = value.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        self.reject(name, value, _BOOL_ALLOWED)
        return default

    def _whole(
        self, name: str, value: str, *, unit: str | None, minimum: int, maximum: int | None
    ) -> int | None:
        """A whole number in ``[minimum, maximum]``; None (problem recorded) otherwise.

        Only plain digits are accepted: ``1e3``, ``1.5``, ``+5``, ``1_000`` are all typos here.
        Without an explicit maximum the bound is what still fits int64 once converted to ms.
        """
        noun = f"a whole number of {unit}" if unit else "a whole number"
        scale = _MS_PER_UNIT[unit] if unit else 1
        ceiling = maximum if maximum is not None else _INT64_MAX // scale
        in_range = f"{noun} from {minimum} to {ceiling}"
        allowed = in_range if maximum is not None else f"{noun} >= {minimum}"
        if not _DIGITS.fullmatch(value):
            self.reject(name, value, allowed)
            return None
        digits = value.lstrip("0") or "0"
        if len(digits) > len(str(ceiling)):  # also keeps int() away from its digit limit
            self.reject(name, value, in_range)
            return None
        number = int(digits)
        if number < minimum:
            self.reject(name, value, allowed)
            return None
        if number > ceiling:
            self.reject(name, value, in_range)
            return None
        return number

    def count(
        self, names: Sequence[str], default: int, *, minimum: int = 1, maximum: int | None = None
    ) -> int:
        """A plain whole number (limits, concurrency, port) from the first set of ``names``."""
        picked = self.first(names)
        if picked is None:
            return default
        number = self._whole(*picked, unit=None, minimum=minimum, maximum=maximum)
        return default if number is None else number

    def millis(self, sources: Sequence[tuple[str, str]], *, minimum: int) -> int | None:
        """A duration in ms from the first set of ``(name, unit)``; None when none is set.

        ``minimum`` is in the variable's own unit (it is only ever 0 or 1).
        """
        picked = self.first([name for name, _ in sources])
        if picked is None:
            return None
        name, value = picked
        unit = dict(sources)[name]
        number = self._whole(name, value, unit=unit, minimum=minimum, maximum=None)
        return None if number is None else number * _MS_PER_UNIT[unit]

    def log_level(self, name: str, default: LogLevel) -> LogLevel:
        value = self.raw(name)
        if value is None:
            return default
        for level in _LOG_LEVELS:
            if value.upper() == level:
                return level
        self.reject(name, value, "one of " + ", ".join(_LOG_LEVELS) + " (any case)")
        return default

    def accounts(self, name: str) -> tuple[str, ...]:
        """Comma list of account ids: trimmed, empties dropped, duplicates dropped (order kept).

        An id names files under the data dir (``sessions/{id}.db``), so path separators and
        dot-names are refused; inner whitespace almost always means a missing comma.
        """
        value = self.raw(name)
        if value is None:
            return ()
        ids: list[str] = []
        for item in (part.strip() for part in value.split(",")):
            if not item or item in ids:
                continue
            if (
                "/" in item
                or "\\" in item
                or item.startswith(".")
                or any(c.isspace() for c in item)
            ):
                self.reject(
                    name,
                    value,
                    "comma-separated account ids without '/', '\\', whitespace or a leading '.'"
                    f" (offending id: {item!r})",
                )
                return ()
            ids.append(item)
        return tuple(ids)


def parse_host_port(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError saying what is allowed. ``allow_zero``: port 0
    (any free port) is accepted, for listeners."""
    host, sep, port = text.strip().rpartition(":")
    lowest = 0 if allow_zero else 1
    if (not sep or not host or any(c.isspace() for c in host) or not _DIGITS.fullmatch(port)
            or len(port) > 5 or not lowest <= int(port) <= 65_535):
        raise ValueError(f"host:port with a port from {lowest} to 65535")
    return host.strip("[]"), int(port)


#: Legacy variable -> the preferred one it stands in for (the preferred one wins when both are set).
_LEGACY_OF: Final[Mapping[str, str]] = {
    "AUTO_BACKFILL_INTERVAL_MS": "WHATSAPP_BACKFILL_INTERVAL_SECONDS",
    "AUTO_BACKFILL_MAX_CONCURRENCY": "WHATSAPP_BACKFILL_CONCURRENCY",
    "AUTO_BACKFILL_COOLDOWN_SUCCESS_MS": "WHATSAPP_BACKFILL_COOLDOWN_MINUTES",
    "GOOGLE_CLOUD_PROJECT": "FIRESTORE_PROJECT",
}


class _Recording(Mapping[str, str]):
    """``environ`` as the loader sees it, remembering which variables it looked up."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.asked: list[str] = []

    def __getitem__(self, key: str) -> str:
        if key not in self.asked:
            self.asked.append(key)
        return self._environ[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self.asked:
            self.asked.append(key)
        return self._environ.get(key, default)

    def __iter__(self) -> Any:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def describe_sources(environ: Mapping[str, str] | None = None) -> str:
    """Where the effective settings come from, for the start-up log next to
    :meth:`Settings.describe`: the variables set in ``environ`` (names only, never values), each
    legacy one marked as such (or as ignored when its preferred name is set too); every setting
    not listed has its default."""
    env = os.environ if environ is None else environ
    recording = _Recording(env)
    load_settings(recording)  # called once the same environment loaded: it does not raise
    def is_set(name: str) -> bool:
        return bool((env.get(name) or "").strip())

    parts = [name if name not in _LEGACY_OF else f"{name} (legacy name of {_LEGACY_OF[name]})"
             for name in recording.asked if is_set(name)]
    # A legacy name shadowed by its preferred one is not even read by the loader: say so.
    parts += [f"{legacy} (legacy, ignored: {preferred} is set)" for legacy, preferred in _LEGACY_OF.items()
              if legacy not in recording.asked and is_set(legacy) and is_set(preferred)]
    return ("set in the environment: " + ", ".join(parts) if parts else "nothing set in the environment") \
        + "; everything else is the default"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``), per docs/configuration.md.

    Raises :class:`ConfigError` naming every invalid variable; never returns a partial result.
    """
    env = _Env(os.environ if environ is None else environ)
    defaults = Settings(instance_id="")

    def millis(sources: Sequence[tuple[str, str]], default: int, *, minimum: int = 1) -> int:
        value = env.millis(sources, minimum=minimum)
        return default if value is None else value

    # Both switches are read (and validated) before combining: off when EITHER says false.
    auto_backfill_new = env.flag("WHATSAPP_AUTO_BACKFILL_ENABLED", True)
    auto_backfill_legacy = env.flag("AUTO_BACKFILL_ENABLED", True)

    service_account_json = env.raw("FIREBASE_SERVICE_ACCOUNT_JSON")
    credentials = env.raw("GOOGLE_APPLICATION_CREDENTIALS")
    emulator = env.raw("FIRESTORE_EMULATOR_HOST")
    project = env.raw("FIRESTORE_PROJECT") or env.raw("GOOGLE_CLOUD_PROJECT")
    if project is None and emulator and not (service_account_json or credentials):
        project = EMULATOR_DEFAULT_PROJECT
    capture_dir = env.raw("WADAEMON_CAPTURE_DIR")
    lease_ms, renew_deadline_ms, retry_period_ms = _lease_timing(env, defaults)
    session_db = env.raw("WADAEMON_SESSION_DB")
    if session_db is not None and not session_db.startswith(_SESSION_DB_SCHEMES):
        # The value may hold a password: name the variable, never show it.
        env.problems.append("WADAEMON_SESSION_DB is not valid: expected a postgres:// or postgresql:// URL")
        session_db = None
    simserver = env.raw("WADAEMON_SIMSERVER")
    simserver_address: tuple[str, int] | None = None
    if simserver is not None:
        try:
            simserver_address = parse_host_port(simserver)
        except ValueError as exc:
            env.reject("WADAEMON_SIMSERVER", simserver, str(exc))

    settings = Settings(
        sync_full_history=env.flag("WHATSAPP_SYNC_FULL_HISTORY", defaults.sync_full_history),
        history_sync_dry_run=env.flag(
            "WHATSAPP_HISTORY_SYNC_DRY_RUN", defaults.history_sync_dry_run
        ),
        history_sync_days=env.count(["WHATSAPP_HISTORY_SYNC_DAYS"], defaults.history_sync_days,
                                    maximum=_UINT32_MAX),
        history_sync_size_mb=env.count(["WHATSAPP_HISTORY_SYNC_SIZE_MB"], defaults.history_sync_size_mb,
                                       maximum=_UINT32_MAX),
        history_sync_quota_mb=env.count(["WHATSAPP_HISTORY_SYNC_QUOTA_MB"], defaults.history_sync_quota_mb,
                                        maximum=_UINT32_MAX),
        backfill_count=env.count(["WHATSAPP_BACKFILL_COUNT"], defaults.backfill_count),
        backfill_threads=env.count(["WHATSAPP_BACKFILL_THREADS"], defaults.backfill_threads),
        backfill_messages_per_thread=env.count(
            ["WHATSAPP_BACKFILL_MESSAGES_PER_THREAD"], defaults.backfill_messages_per_thread
        ),
        backfill_max_idle_ms=env.millis([("WHATSAPP_BACKFILL_MAX_DAYS", "days")], minimum=1),
        backfill_max_concurrency=env.count(
            ["WHATSAPP_BACKFILL_CONCURRENCY", "AUTO_BACKFILL_MAX_CONCURRENCY"],
            defaults.backfill_max_concurrency,
        ),
        auto_backfill_enabled=auto_backfill_new and auto_backfill_legacy,
        auto_backfill_interval_ms=millis(
            [
                ("WHATSAPP_BACKFILL_INTERVAL_SECONDS", "seconds"),
                ("AUTO_BACKFILL_INTERVAL_MS", "milliseconds"),
            ],
            defaults.auto_backfill_interval_ms,
        ),
        auto_backfill_cooldown_ms=millis(
            [
                ("WHATSAPP_BACKFILL_COOLDOWN_MINUTES", "minutes"),
                ("AUTO_BACKFILL_COOLDOWN_SUCCESS_MS", "milliseconds"),
            ],
            defaults.auto_backfill_cooldown_ms,
            minimum=0,  # 0: no cooldown, back-fill on every tick
        ),
        auto_backfill_attempt_backoff_ms=millis(
            [("AUTO_BACKFILL_ATTEMPT_BACKOFF_MS", "milliseconds")],
            defaults.auto_backfill_attempt_backoff_ms,
            minimum=0,  # 0: retry a failed account on the next tick
        ),
        auto_backfill_lease_ms=millis(
            [("AUTO_BACKFILL_LEASE_MS", "milliseconds")], defaults.auto_backfill_lease_ms
        ),
        auto_backfill_max_accounts_per_tick=env.count(
            ["AUTO_BACKFILL_MAX_ACCOUNTS_PER_TICK"], defaults.auto_backfill_max_accounts_per_tick
        ),
        backfill_exhausted_retry_ms=millis(
            [("WHATSAPP_BACKFILL_EXHAUSTED_RETRY_DAYS", "days")], defaults.backfill_exhausted_retry_ms
        ),
        history_request_timeout_ms=millis(
            [("WHATSAPP_HISTORY_REQUEST_TIMEOUT_MS", "milliseconds")], defaults.history_request_timeout_ms
        ),
        history_request_pace_ms=millis(
            [("WHATSAPP_HISTORY_REQUEST_PACE_MS", "milliseconds")], defaults.history_request_pace_ms,
            minimum=0,
        ),
        recent_sync_enabled=env.flag("RECENT_SYNC_ENABLED", defaults.recent_sync_enabled),
        recent_sync_interval_ms=millis(
            [("RECENT_SYNC_INTERVAL_MS", "milliseconds")], defaults.recent_sync_interval_ms
        ),
        recent_sync_lookback_ms=millis(
            [("RECENT_SYNC_LOOKBACK_MS", "milliseconds")], defaults.recent_sync_lookback_ms
        ),
        recent_sync_max_threads=env.count(
            ["RECENT_SYNC_MAX_THREADS"], defaults.recent_sync_max_threads
        ),
        recent_sync_max_messages_per_thread=env.count(
            ["RECENT_SYNC_MAX_MESSAGES_PER_THREAD"], defaults.recent_sync_max_messages_per_thread
        ),
        recent_sync_max_concurrency=env.count(
            ["RECENT_SYNC_MAX_CONCURRENCY"], defaults.recent_sync_max_concurrency
        ),
        recent_sync_lease_ms=millis(
            [("RECENT_SYNC_LEASE_MS", "milliseconds")], defaults.recent_sync_lease_ms
        ),
        auto_repair_threads_enabled=env.flag(
            "AUTO_REPAIR_THREADS_ENABLED", defaults.auto_repair_threads_enabled
        ),
        auto_repair_threads_limit_per_run=env.count(
            ["AUTO_REPAIR_THREADS_LIMIT_PER_RUN"], defaults.auto_repair_threads_limit_per_run
        ),
        auto_repair_cooldown_ms=millis(
            [("AUTO_REPAIR_COOLDOWN_MINUTES", "minutes")],
            defaults.auto_repair_cooldown_ms,
            minimum=0,  # 0: repair after every backfill
        ),
        instance_id=env.raw("INSTANCE_ID") or _default_instance_id(),
        host=env.raw("HOST") or defaults.host,
        port=env.count(["PORT"], defaults.port, minimum=1, maximum=65_535),
        admin_token=env.raw("ADMIN_TOKEN"),
        api_token=env.raw("API_TOKEN"),
        data_dir=Path(env.raw("WADAEMON_DATA_DIR") or defaults.data_dir),
        accounts=env.accounts("WADAEMON_ACCOUNTS"),
        capture_dir=Path(capture_dir) if capture_dir is not None else None,
        account_lease_ms=lease_ms,
        account_renew_deadline_ms=renew_deadline_ms,
        account_retry_period_ms=retry_period_ms,
        session_db=session_db,
        simserver=simserver_address,
        log_level=env.log_level("WADAEMON_LOG_LEVEL", defaults.log_level),
        firebase_service_account_json=service_account_json,
        google_application_credentials=credentials,
        firestore_emulator_host=emulator,
        firestore_project=project,
    )
    if env.problems:
        raise ConfigError(env.problems)
    return settings


_LEASE_VARS: Final = ("WADAEMON_ACCOUNT_LEASE_MS", "WADAEMON_ACCOUNT_RENEW_DEADLINE_MS",
                      "WADAEMON_ACCOUNT_RETRY_PERIOD_MS")


def _lease_timing(env: _Env, defaults: Settings) -> tuple[int, int, int]:
    """Lease duration, renew deadline and retry period (ms). Unset ones are derived from the
    lease (2/3 and 1/6 of it), so setting the lease alone keeps a sound ratio; the three must
    satisfy lease > renew deadline > retry period (``wadaemon.cluster.timing`` says why)."""
    lease_var, deadline_var, retry_var = _LEASE_VARS
    lease = env.millis([(lease_var, "milliseconds")], minimum=3)
    lease_ms = defaults.account_lease_ms if lease is None else lease
    deadline = env.millis([(deadline_var, "milliseconds")], minimum=1)
    retry = env.millis([(retry_var, "milliseconds")], minimum=1)
    deadline_ms = deadline if deadline is not None else lease_ms * 2 // 3
    retry_ms = retry if retry is not None else max(1, lease_ms // 6)
    if not lease_ms > deadline_ms > retry_ms:
        env.problems.append(
            f"{lease_var}={lease_ms}, {deadline_var}={deadline_ms}, {retry_var}={retry_ms} are not valid "
            "together: expected lease > renew deadline > retry period"
        )
    return lease_ms, deadline_ms, retry_ms
