"""Typed configuration: ``[tool.datafn]`` in pyproject.toml, ``DATAFN_*`` variables, keywords.

Precedence, highest first:

1. keyword arguments (``load_config(sync={"push_batch_size": 50})``, ``Client(remote=…)``);
2. environment variables: ``DATAFN_<KEY>``, nested with ``__``
   (``DATAFN_SYNC__PUSH_BATCH_SIZE=50``), plugin sections alike (``DATAFN_HTTP__TOKEN``); list
   settings take commas (``DATAFN_PLUGINS=a,b``);
3. the ``[tool.datafn]`` table of the nearest ``pyproject.toml`` that has one (searched upward
   from the working directory; ``DATAFN_CONFIG`` names a file explicitly; a file that is not
   valid TOML is an error naming its line and column);
4. the defaults below.

Relative paths (:data:`PathSetting`, the file of an SQLite :data:`StoreUrlSetting`, the
``schema`` file) are made absolute when the configuration loads: against the pyproject.toml's
folder for values written there and for defaults, against the working directory for values
from the environment or keyword arguments.

Keys are kebab-case in TOML and snake_case in Python and environment variables; durations are
seconds. A bad value raises :class:`~datafn.errors.ConfigError` naming the full key path as the
user wrote it and what was expected::

    tool.datafn.sync.push-batch-size: expected an integer ≥ 1 and ≤ 500, got "ten"

Plugins declare their own sections with ``datafn_add_settings``; their tables
(``[tool.datafn.guard]``) are validated the same way.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datafn.errors import ConfigError
from datafn.registry import backend_name

__all__ = [
    "Config",
    "DatafnSettings",
    "LimitsSettings",
    "PathSetting",
    "RetentionSettings",
    "Section",
    "ServerSettings",
    "SettingsRegistry",
    "StoreUrlSetting",
    "SyncSettings",
    "WatchdogSettings",
    "WsReconnectSettings",
    "check_remote_url",
    "find_pyproject",
    "load_config",
    "mask_url",
    "store_location",
]

log = logging.getLogger("datafn.config")

ENV_PREFIX = "DATAFN_"
TOML_PREFIX = "tool.datafn"
M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class _Location:
    """Marks a string setting that names a place on disk (see PathSetting, StoreUrlSetting)."""

    kind: typing.Literal["path", "url"]


#: A setting that is a file path. A relative value is made absolute when configuration
#: loads: next to the pyproject.toml it was written in (defaults too), or against the working
#: directory when it came from the environment or a keyword argument. Plugins use it for their
#: own settings: ``path: PathSetting = "audit.jsonl"``.
PathSetting = Annotated[str, _Location("path")]

#: A store URL setting: the file of a relative SQLite URL (``sqlite:///app.db``) is made
#: absolute like a :data:`PathSetting`; other URLs are kept as they are.
StoreUrlSetting = Annotated[str, _Location("url")]


class WsReconnectSettings(Section):
    """``[tool.datafn.sync.ws-reconnect]``: WebSocket reconnection with backoff and jitter."""

    enabled: bool = True
    base_delay: float = Field(1.0, gt=0, description="first delay, seconds")
    multiplier: float = Field(2.0, ge=1, description="growth factor per attempt")
    max_delay: float = Field(60.0, gt=0, description="cap on the delay, seconds")
    jitter: float = Field(0.5, ge=0, description="random extra delay, up to this many seconds")


class WatchdogSettings(Section):
    """``[tool.datafn.sync.watchdog]``: when the sync watchdog calls a sync stuck (docs/client.md,
    "When sync is stuck"). Durations are seconds of the engine's clock."""

    enabled: bool = True
    check_interval: float = Field(
        5.0, gt=0, le=3600, description="seconds between checks while something is watched"
    )
    push_after: float = Field(
        120.0, gt=0, description="writes queued and every push failing for this long: stuck"
    )
    pull_after: float = Field(
        120.0,
        gt=0,
        description="every pull failing, or the server saying there is more while the cursors "
        "stay put, for this long: stuck",
    )
    announce_after: float = Field(
        60.0,
        gt=0,
        description="a cursor announced by the real-time channel and not caught up with by a "
        "finished pull for this long: stuck",
    )
    queue_after: float = Field(
        300.0,
        gt=0,
        description="the oldest queued write unchanged for this long while pushes run: stuck",
    )
    max_recoveries: int = Field(
        3, ge=0, le=100, description="recovery attempts per stuck episode (then it only reports)"
    )


class SyncSettings(Section):
    """``[tool.datafn.sync]``: how the client syncs."""

    remote: str | None = Field(None, description="base URL, e.g. http://127.0.0.1:8787/datafn")
    transport: str = Field("http", description="transport plugin name")
    push_interval: float | None = Field(
        None, gt=0, description="push every N seconds; unset: push right after local writes"
    )
    pull_interval: float | None = Field(
        None,
        gt=0,
        description="pull every N seconds (a mirror without a real-time channel); unset: "
        "pull on triggers only",
    )
    push_debounce: float = Field(
        0.0,
        ge=0,
        le=60,
        description="delay before an after-write push; 0: at once when idle, and what is "
        "written while a push runs goes in the next one",
    )
    push_batch_size: int = Field(100, ge=1, le=500)
    push_max_retries: int = Field(3, ge=0, le=100)
    retry_base_delay: float = Field(0.5, gt=0, description="first retry delay, seconds")
    retry_max_delay: float = Field(30.0, gt=0)
    pull_batch_size: int = Field(200, ge=10, le=10_000)
    max_pull_iterations: int = Field(50, ge=1, le=100_000)
    clone_page_size: int = Field(1000, ge=1, le=1000)
    clone_buffer_pages: int = Field(
        4, ge=1, le=64, description="clone pages fetched ahead while the store writes"
    )
    request_timeout: float = Field(30.0, gt=0)
    ws: bool = False
    realtime_channel: str = Field("websockets", description="real-time channel plugin name")
    ws_reconnect: WsReconnectSettings = WsReconnectSettings()
    watchdog: WatchdogSettings = WatchdogSettings()
    triggers: list[str] | None = Field(None, description="trigger names; unset: all installed")
    seed_file: PathSetting | None = Field(
        None, description="JSON file of records per resource, seeded when the engine starts"
    )
    reconcile_on_start: bool = Field(True, description="reconcile counts when the engine starts")


class LimitsSettings(Section):
    """``[tool.datafn.server.limits]``: bounds on every input the server accepts."""

    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(500, ge=1)
    max_pull_limit: int = Field(1000, ge=1)
    max_clone_page: int = Field(1000, ge=1)
    max_clone_records: int = Field(
        1_000_000,
        ge=1,
        description="most records a clone without `page` answers at once (all of them, or "
        "LIMIT_EXCEEDED: never a truncated table)",
    )
    max_id_length: int = Field(255, ge=1, le=4096)
    max_ws_connections: int = Field(10_000, ge=1)
    max_ws_per_namespace: int = Field(100, ge=1)
    max_ws_message_bytes: int = Field(64 * 1024, ge=256)
    rate_limit_per_second: float | None = Field(None, gt=0, description="per client address")
    max_body_nodes: int = Field(
        250_000, ge=100, description="JSON values (objects, arrays, scalars) in one request body"
    )
    max_seed_records: int = Field(10_000, ge=1, description="records in one seed request")
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request line and headers of one request (datafn serve)"
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="open HTTP connections and requests in flight before new requests get 503 "
        "(datafn serve); unset: the open-file limit less 100",
    )


class RetentionSettings(Section):
    """``[tool.datafn.server.retention]``: what the server deletes, and when (docs/server.md,
    "Retention"). Durations are seconds."""

    idempotency_window: float = Field(
        7 * 86400.0,
        gt=0,
        description="idempotency records older than this are deleted: a push replayed later "
        "is applied again as a new write",
    )
    change_log_horizon: float = Field(
        86400.0,
        ge=0,
        description="past this age only the latest change of each record is kept",
    )
    tombstone_ttl: float = Field(
        30 * 86400.0,
        ge=0,
        description="deletes are kept this long (and at least change-log-horizon); a client "
        "whose cursor is older gets CURSOR_EXPIRED and clones again",
    )
    interval: float = Field(
        3600.0, ge=0, description="seconds between background retention runs; 0: never"
    )
    batch_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="rows one retention batch reads (each batch: one short transaction)",
    )


class ServerSettings(Section):
    """``[tool.datafn.server]``: the DataFn server."""

    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    database: StoreUrlSetting = Field("sqlite:///datafn.db", description="server store URL")
    base_path: str = Field("/datafn", pattern=r"^/[A-Za-z0-9._~/-]*$")
    production: bool = Field(False, description="hide internals in INTERNAL errors")
    notification_bus: str = Field("memory", description="notification bus plugin name")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes of datafn serve on one port (more than 1: PostgreSQL "
        "and a notification bus shared by the processes)",
    )
    tokens: dict[str, str] = Field(
        default_factory=dict, description="bearer token → subject (built-in authentication)"
    )
    namespace_template: str | None = Field(
        None,
        description='namespace of an authenticated subject, e.g. "user:{subject}"; unset: datafn',
    )
    shutdown_timeout: float = Field(10.0, ge=0)
    read_timeout: float = Field(
        30.0, gt=0, description="seconds a client has to send a whole request (headers and body)"
    )
    keep_alive_timeout: float = Field(
        5.0, gt=0, description="seconds an idle keep-alive connection stays open (datafn serve)"
    )
    ping_interval: float = Field(30.0, gt=0)
    ping_timeout: float = Field(10.0, gt=0)
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins of browser apps allowed to call the server from another origin "
        '(e.g. ["https://app.example.com"]); empty: same origin only',
    )
    limits: LimitsSettings = LimitsSettings()
    retention: RetentionSettings = RetentionSettings()
    conflicts: dict[str, typing.Literal["last-writer-wins", "reject"]] = Field(
        default_factory=dict,
        description='conflict policy per resource ("default": the others): "last-writer-wins" '
        '(applied and reported) or "reject" (refused with CONFLICT); docs/concepts.md',
    )


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class DatafnSettings(BaseModel):
    """``[tool.datafn]``: the top level. Unknown tables belong to plugins."""

    model_config = ConfigDict(extra="allow", frozen=True)

    store: StoreUrlSetting = Field("sqlite:///datafn-local.db", description="client store URL")
    client_id: str | None = Field(None, description="unset: generated once, kept in the store")
    plugins: list[str] | None = Field(
        None, description="allow list of third-party plugins; unset: all installed"
    )
    disable_plugins: list[str] = Field(default_factory=list)
    required_plugins: list[str] = Field(default_factory=list)
    disable_plugin_autoload: bool = False
    hook_timeout: float = Field(30.0, gt=0, description="bound on one hook call, seconds")
    sync: SyncSettings = SyncSettings()
    server: ServerSettings = ServerSettings()

    _split = field_validator("plugins", "disable_plugins", "required_plugins", mode="before")(
        _comma_list
    )


_CORE_KEYS = frozenset(DatafnSettings.model_fields) | {"schema"}


class SettingsRegistry:
    """Collects the settings sections plugins declare in ``datafn_add_settings``."""

    def __init__(self) -> None:
        self.sections: dict[str, type[BaseModel]] = {}
        self.owners: dict[str, str | None] = {}
        self.current_plugin: str | None = None

    def add(self, name: str, model: type[BaseModel]) -> None:
        """Declare section ``name`` (``"my-plugin"`` reads ``[tool.datafn.my-plugin]``)."""
        name = name.replace("-", "_")  # TOML keys are snake-cased on reading
        if name in _CORE_KEYS:
            raise ConfigError(f"section name {name!r} is reserved", key=f"{TOML_PREFIX}.{name}")
        if name in self.sections:
            raise ConfigError(
                f"declared by both {self.owners[name]!r} and {self.current_plugin!r}",
                key=f"{TOML_PREFIX}.{name}",
            )
        self.sections[name] = model
        self.owners[name] = self.current_plugin


@dataclass
class Config:
    """The effective configuration and where every value came from."""

    settings: DatafnSettings
    #: the ``schema`` value (file path or table) if one was given, and its source
    schema_source: Any = None
    pyproject: Path | None = None
    #: dotted snake_case key → "default" | "pyproject.toml" | "env DATAFN_…" | "argument"
    provenance: dict[str, str] = field(default_factory=dict)
    #: plugin tables by source, lowest precedence first: ``(label, {section: table})``; the
    #: environment's part is read when the plugins have declared their sections
    _section_layers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _use_env: bool = False
    _sections: dict[str, BaseModel] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths of ``[tool.datafn]`` (and defaults) resolve against: the
        pyproject.toml's, else the working directory."""
        return self.pyproject.parent if self.pyproject is not None else Path.cwd()

    @property
    def sync(self) -> SyncSettings:
        return self.settings.sync

    @property
    def server(self) -> ServerSettings:
        return self.settings.server

    def section(self, name: str) -> Any:
        """A plugin's validated settings section (declared with ``datafn_add_settings``)."""
        try:
            return self._sections[name.replace("-", "_")]
        except KeyError:
            raise ConfigError(
                "no installed plugin declares this settings section", key=f"{TOML_PREFIX}.{name}"
            ) from None

    def source_of(self, dotted: str) -> str:
        """Where the value of ``dotted`` (snake_case, e.g. ``sync.push_batch_size``) came from."""
        parts = dotted.split(".")
        while parts:
            found = self.provenance.get(".".join(parts))
            if found:
                return found
            parts.pop()
        return "default"

    def apply_sections(self, registry: SettingsRegistry) -> None:
        """Validate the plugin sections against the models plugins declared.

        A section is read like the built-in ones: its pyproject.toml table, then
        ``DATAFN_<SECTION>__<KEY>`` variables, then keyword arguments.
        """
        for name, model in registry.sections.items():
            raw: dict[str, Any] = {}
            layers = [(label, tables.get(name)) for label, tables in self._section_layers]
            if self._use_env:  # between the file and the arguments
                env = _env_values(model, (name,), os.environ)
                layers.insert(min(1, len(layers)), ("env", env or None))
            for label, table in layers:
                if table is None:
                    continue
                if label == "env":
                    for dotted in _dotted_keys(table, name + "."):
                        self.provenance[dotted] = _env_label(dotted)
                else:
                    _record(self.provenance, {name: table}, label)
                if not isinstance(table, Mapping):
                    raise ConfigError(
                        f"expected a table, got {_show(table)}", key=self._user_key((name,))
                    )
                raw = _merge(raw, table)
            section = _validate(model, raw, self, prefix=(name,))
            self._sections[name] = _resolve_locations(section, (name,), self)
        for _label, tables in self._section_layers:
            for name in tables:
                if name not in registry.sections:
                    log.warning(
                        "%s.%s: no installed plugin reads this table", TOML_PREFIX, _kebab(name)
                    )
        if self._use_env:
            for variable in _unclaimed_env(registry, os.environ):
                log.warning("%s: no installed plugin reads this variable", variable)

    def effective(self) -> Iterator[tuple[str, Any, str]]:
        """``(key, value, source)`` for every setting, key kebab-cased as in TOML."""
        yield ("schema", _shown_schema(self.schema_source), self.source_of("schema"))
        yield from _walk(self.settings.model_dump(), (), self)
        for name, model in self._sections.items():
            yield from _walk(model.model_dump(), (name,), self)

    def _base_for(self, loc: tuple[str, ...]) -> Path:
        """What a relative path at ``loc`` is relative to: the working directory for values
        from the environment or keyword arguments, else the pyproject.toml's folder."""
        source = self.source_of(".".join(loc))
        if source.startswith("env") or source == "argument":
            return Path.cwd()
        return self.base_dir

    def _user_key(self, loc: tuple[str | int, ...]) -> str:
        source = self.source_of(".".join(str(p) for p in loc))
        if source.startswith("env"):
            return ENV_PREFIX + "__".join(str(p).upper() for p in loc)
        if source == "argument":
            return ".".join(str(p) for p in loc)
        return ".".join([TOML_PREFIX, *(_kebab(str(p)) for p in loc)])


def _walk(
    data: Mapping[str, Any], prefix: tuple[str, ...], config: Config
) -> Iterator[tuple[str, Any, str]]:
    for key, value in data.items():
        loc = (*prefix, key)
        if isinstance(value, Mapping) and value and key not in ("tokens", "headers"):
            yield from _walk(value, loc, config)
        else:
            yield (
                ".".join(_kebab(p) for p in loc),
                _shown(key, value),
                config.source_of(".".join(loc)),
            )


# Settings whose values are credentials, by the last part of their key (``token``,
# ``api-key``, ``db_password``…), and request headers that carry credentials.
_SECRET_KEY_RE = re.compile(
    r"(?:^|[-_])(?:tokens?|passwords?|passwd|secrets?|api[-_]?keys?|private[-_]?keys?|"
    r"credentials?)$",
    re.IGNORECASE,
)
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"}
)


def _secret_fingerprint(secret: Any) -> str:
    """What is shown instead of a secret: ``***`` and the first 8 hex digits of its SHA-256,
    enough to tell two configured secrets apart, never enough to use one."""
    digest = hashlib.sha256(str(secret).encode("utf-8", "surrogatepass")).hexdigest()
    return f"*** (sha256:{digest[:8]})"


def mask_url(value: str) -> str:
    """A URL's password (``scheme://user:password@host``) replaced by ``***``."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return value
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{tail}"


def _shown(key: str, value: Any) -> Any:
    """A setting's value as ``datafn config`` prints it: credentials never in clear."""
    if value is None:
        return None
    if key == "tokens" and isinstance(value, Mapping):  # token → subject: hide the tokens
        return {_secret_fingerprint(token): subject for token, subject in value.items()}
    if key == "headers" and isinstance(value, Mapping):
        return {
            name: (
                _secret_fingerprint(header)
                if str(name).lower() in _SECRET_HEADERS or _SECRET_KEY_RE.search(str(name))
                else header
            )
            for name, header in value.items()
        }
    if _SECRET_KEY_RE.search(key):
        return _secret_fingerprint(value)
    if isinstance(value, str):
        return mask_url(value)
    return value


def _shown_schema(source: Any) -> Any:
    """The ``schema`` setting as ``datafn config`` prints it: the file, or what the table holds."""
    if isinstance(source, Mapping):
        names = [
            str(r.get("name", "?")) for r in source.get("resources", []) if isinstance(r, Mapping)
        ]
        return f"[tool.datafn.schema] table: {', '.join(names) or 'no resources'}"
    return None if source is None else str(source)


def store_location(url: str) -> str:
    """Where a store URL keeps its data, as datafn prints it: the file of an SQLite URL, else
    the URL with its password masked."""
    if backend_name(url) == "sqlite":
        _scheme, sep, rest = url.partition("://")
        path = rest[1:].partition("?")[0] if sep and rest.startswith("/") else ""
        if path and path != ":memory:" and not path.startswith("file:"):
            return f"SQLite file {path}"
        return f"SQLite in memory ({url})"
    return mask_url(url)


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _snake_keys(data: Any, *, depth: int = 0) -> Any:
    """kebab-case keys of a TOML table → snake_case (not inside the schema, the token map or
    the header map: header names keep their dashes)."""
    if depth > 16 or not isinstance(data, Mapping):
        return data
    return {
        (key.replace("-", "_") if isinstance(key, str) else key): (
            value if key in ("schema", "tokens", "headers") else _snake_keys(value, depth=depth + 1)
        )
        for key, value in data.items()
    }


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.datafn]`` table, searching upward.

    A pyproject.toml on the way that is not valid TOML stops the search with a
    :class:`~datafn.errors.ConfigError` naming the file, line and column: it may be the one
    meant, and a parent folder's file must not silently stand in for it.
    """
    explicit = os.environ.get("DATAFN_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"no such file: {explicit}", key="DATAFN_CONFIG")
        return Path(os.path.abspath(path))
    here = Path(os.path.abspath(start or Path.cwd()))
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            data = _load_toml(candidate)
            if isinstance(data.get("tool"), dict) and "datafn" in data["tool"]:
                return candidate
    return None


_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _load_toml(path: Path) -> dict[str, Any]:
    """A TOML file's contents; errors name the file (and the line and column of a syntax
    error: ``/app/pyproject.toml:3:7: invalid TOML: …``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", key=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", key=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc.msg if hasattr(exc, "msg") else exc)
        found = _TOML_POSITION_RE.search(message)
        line = getattr(exc, "lineno", None) or (int(found.group(1)) if found else None)
        column = getattr(exc, "colno", None) or (int(found.group(2)) if found else None)
        if line is None and message.endswith("(at end of document)"):
            line, column = text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1
            message = message.removesuffix("(at end of document)").rstrip()
        message = _TOML_POSITION_RE.sub("", message)
        if line is None:
            raise ConfigError(f"invalid TOML: {message}", key=str(path)) from None
        raise ConfigError(
            f"invalid TOML at line {line}, column {column}: {message}",
            key=f"{path}:{line}:{column}",
        ) from None


def _read_pyproject(path: Path) -> dict[str, Any]:
    tool = _load_toml(path).get("tool", {})
    table = tool.get("datafn", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError("expected a table", key=TOML_PREFIX)
    return dict(_snake_keys(table))


# -- the environment: DATAFN_<SECTION>__<KEY>, for built-in and plugin sections alike ----------


def _env_values(
    model: type[BaseModel], path: tuple[str, ...], environ: Mapping[str, str]
) -> dict[str, Any]:
    """The values ``DATAFN_*`` variables give the fields of ``model`` (the section at
    ``path``; ``()`` for the top level), nested as in TOML.

    Names are case-insensitive, ``__`` separates levels (``DATAFN_HTTP__TOKEN``); a table may
    also be given whole as JSON (``DATAFN_HTTP='{"token": "…"}'``); a list takes JSON or
    commas (``DATAFN_AUDIT__SIDES=client,server``). Everything else is a string that
    validation converts. At the top level only the built-in settings are read: other
    ``DATAFN_*`` variables belong to plugin sections or to other tools.
    """
    prefix = ENV_PREFIX + "".join(part.upper() + "__" for part in path)
    values: dict[str, Any] = {}
    for name in sorted(environ):
        upper = name.upper()
        if path and upper == prefix[:-2]:  # the whole section as JSON
            _put(values, [], _decoded(model, [], environ[name]))
            continue
        if not upper.startswith(prefix):
            continue
        parts = upper[len(prefix) :].lower().split("__")
        if not all(parts) or (not path and parts[0] not in model.model_fields):
            continue
        _put(values, parts, _decoded(model, parts, environ[name]))
    return values


def _decoded(model: type[BaseModel], parts: list[str], text: str) -> Any:
    """An environment value as the field at ``parts`` expects it: JSON for tables, JSON or
    commas for lists, the text itself otherwise (validation reports what does not fit)."""
    annotation: Any = model
    for part in parts:
        fields = getattr(annotation, "model_fields", None)
        info = fields.get(part) if isinstance(fields, dict) else None
        if info is None:
            return text
        annotation = _strip_optional(info.annotation)
    origin = typing.get_origin(annotation)
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    if origin is list and not text.lstrip().startswith("["):
        return _comma_list(text)
    if origin is list or origin is dict or is_model:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _put(values: dict[str, Any], parts: list[str], value: Any) -> None:
    if not parts:
        if isinstance(value, Mapping):
            values.update(_merge(values, value))
        return
    for part in parts[:-1]:
        inner = values.get(part)
        if not isinstance(inner, dict):
            inner = values[part] = {}
        values = inner
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(values.get(last), Mapping):
        values[last] = _merge(dict(values[last]), value)
    else:
        values[last] = value


def _env_label(dotted: str) -> str:
    return "env " + ENV_PREFIX + dotted.replace(".", "__").upper()


def _dotted_keys(data: Any, prefix: str) -> Iterator[str]:
    if isinstance(data, Mapping) and data:
        for key, value in data.items():
            if isinstance(value, Mapping) and value and key != "tokens":
                yield from _dotted_keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"
    else:
        yield prefix.rstrip(".")


def _unclaimed_env(registry: SettingsRegistry, environ: Mapping[str, str]) -> list[str]:
    """``DATAFN_<NAME>__…`` variables whose first part names no setting and no section."""
    known = {name.upper() for name in (*DatafnSettings.model_fields, *registry.sections)}
    unclaimed = []
    for name in sorted(environ):
        upper = name.upper()
        rest = upper[len(ENV_PREFIX) :]
        if upper.startswith(ENV_PREFIX) and "__" in rest and rest.split("__", 1)[0] not in known:
            unclaimed.append(name)
    return unclaimed


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key != "tokens":
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _record(provenance: dict[str, str], data: Mapping[str, Any], label: str, prefix: str = ""):  # type: ignore[no-untyped-def]
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key != "tokens" and dotted != "schema":
            _record(provenance, value, label, dotted + ".")
        else:
            provenance[dotted] = label


def load_config(
    *,
    pyproject: Path | str | None = None,
    start: Path | None = None,
    use_env: bool = True,
    **overrides: Any,
) -> Config:
    """Load the effective configuration (see the module docstring for precedence).

    :param pyproject: an explicit pyproject.toml (default: the nearest with ``[tool.datafn]``).
    :param use_env: read ``DATAFN_*`` environment variables.
    :param overrides: keyword settings, snake_case, nested as dicts
        (``sync={"remote": "http://…"}``), highest precedence.
    """
    path = Path(os.path.abspath(pyproject)) if pyproject is not None else find_pyproject(start)
    file_label = "pyproject.toml" if path is None or path.name == "pyproject.toml" else str(path)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((file_label, _read_pyproject(path)))
    if use_env:
        env = _env_values(DatafnSettings, (), os.environ)
        if "DATAFN_SCHEMA" in os.environ:
            env["schema"] = os.environ["DATAFN_SCHEMA"]
        layers.append(("env", env))
    layers.append(("argument", {k: v for k, v in overrides.items() if v is not None}))

    merged: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for label, data in layers:
        merged = _merge(merged, data)
        _record(provenance, data, label)
    for dotted, label in list(provenance.items()):
        if label == "env":
            provenance[dotted] = _env_label(dotted)

    schema_source = merged.pop("schema", None)
    config = Config(
        settings=DatafnSettings.model_construct(),
        schema_source=schema_source,
        pyproject=path,
        provenance=provenance,
    )
    unknown = [
        key
        for key in merged
        if key not in DatafnSettings.model_fields and not isinstance(merged[key], Mapping)
    ]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, DatafnSettings.model_fields, n=1)
        hint = f"; did you mean {_kebab(near[0])!r}?" if near else ""
        raise ConfigError(f"unknown setting{hint}", key=config._user_key((key,)))
    # plugin tables are validated once the plugins have declared them (apply_sections)
    config._section_layers = [
        (label, {k: v for k, v in data.items() if k not in _CORE_KEYS})
        for label, data in layers
        if label != "env"
    ]
    config._use_env = use_env
    core = {key: value for key, value in merged.items() if key in DatafnSettings.model_fields}
    config.settings = _resolve_locations(
        _validate(DatafnSettings, core, config, prefix=()), (), config
    )
    config.schema_source = _resolved_schema(schema_source, config._base_for(("schema",)))
    _check_remote(config)
    return config


def _resolved_schema(source: Any, base: Path) -> Any:
    """The ``schema`` setting with its file paths made absolute; import paths
    (``"myapp.models:Todo,Note"``, also as items of a list) stay as they are: they are imported
    with the project's folder on ``sys.path`` when the schema loads."""
    from datafn.models import is_import_path

    if isinstance(source, str | Path) and str(source) and not is_import_path(source):
        return _resolved_path(source, base)
    if isinstance(source, list):
        return [_resolved_schema(item, base) for item in source]
    return source


def _resolve_locations(section: M, prefix: tuple[str, ...], config: Config) -> M:
    """``section`` with its :data:`PathSetting` and :data:`StoreUrlSetting` values made
    absolute (see :meth:`Config._base_for` for what they are relative to)."""
    updates: dict[str, Any] = {}
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        loc = (*prefix, name)
        kind = _location_kind(info)
        if kind is not None and isinstance(value, str) and value:
            base = config._base_for(loc)
            resolved = _resolved_path(value, base) if kind == "path" else _resolved_url(value, base)
            if resolved != value:
                updates[name] = resolved
        elif isinstance(value, BaseModel):
            inner = _resolve_locations(value, loc, config)
            if inner is not value:
                updates[name] = inner
    return section.model_copy(update=updates) if updates else section


def _location_kind(info: Any) -> str | None:
    metadata = list(info.metadata)
    annotation = info.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            metadata += getattr(arg, "__metadata__", ())
    for item in metadata:
        if isinstance(item, _Location):
            return item.kind
    return None


def _resolved_path(value: str | Path, base: Path) -> Any:
    """``value`` made absolute against ``base`` (``~`` expanded); a Path stays a Path."""
    path = Path(value).expanduser()
    absolute = os.path.normpath(path if path.is_absolute() else base / path)
    return Path(absolute) if isinstance(value, Path) else absolute


def _resolved_url(url: str, base: Path) -> str:
    """The file of a relative SQLite URL (``sqlite:///app.db``) made absolute against ``base``
    (``sqlite:////srv/app/app.db``); in-memory and other URLs as they are."""
    if backend_name(url) != "sqlite":
        return url
    scheme, sep, rest = url.partition("://")
    if not sep or not rest.startswith("/"):
        return url
    database, question, query = rest[1:].partition("?")
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    return f"{scheme}:///{_resolved_path(database, base)}{question}{query}"


def _check_remote(config: Config) -> None:
    """``sync.remote`` must be an http(s) URL with a host when the http transport uses it."""
    remote = config.sync.remote
    if not remote or config.sync.transport != "http":
        return
    check_remote_url(remote, key=config._user_key(("sync", "remote")))


def check_remote_url(remote: str, *, key: str | None) -> None:
    """Raise :class:`ConfigError` (at ``key``) unless ``remote`` is an http(s) URL with a
    host and a valid port (parsed with the standard library: no network, no httpx)."""
    from urllib.parse import urlsplit

    problem = None
    try:
        parts = urlsplit(remote)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        problem = str(exc)
    else:
        if any(ch <= " " or ch == "\x7f" for ch in remote):
            problem = "it holds a space or a control character"
        elif parts.scheme not in ("http", "https"):
            problem = "the scheme must be http:// or https://"
        elif not parts.hostname:
            problem = "there is no host"
    if problem is None:
        return
    hint = ""
    if "://" not in remote:
        hint = f'; did you mean "http://{remote}"?'
    raise ConfigError(
        f"expected an http:// or https:// URL with a host, e.g. "
        f'"http://127.0.0.1:8787/datafn", got {_show(mask_url(remote))} ({problem}){hint}',
        key=key,
    )


def _validate(
    model: type[M], data: dict[str, Any], config: Config, *, prefix: tuple[str, ...]
) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(str(p) for p in error["loc"])
        key = config._user_key((*prefix, *loc))
        if error["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            near = difflib.get_close_matches(loc[-1], owner.model_fields if owner else [], n=1)
            hint = f"; did you mean {_kebab(near[0])!r}?" if near else ""
            raise ConfigError(f"unknown setting{hint}", key=key) from None
        expected = _expected(model, loc) or error["msg"].lower()
        raise ConfigError(
            f"expected {expected}, got {_show(error.get('input'))}", key=key
        ) from None


def _model_at(model: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        info = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if info is None:
            return None
        current = _strip_optional(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _expected(model: type[BaseModel], loc: tuple[str, ...]) -> str | None:
    """Describe what a field accepts, from its type and constraints: 'an integer ≥ 1'."""
    owner = _model_at(model, loc[:-1])
    info = owner.model_fields.get(loc[-1]) if owner else None
    if info is None:
        return None
    annotation = info.annotation
    optional = _strip_optional(annotation) is not annotation
    base = _strip_optional(annotation)
    if base is bool:
        text = "true or false"
    elif base is int:
        text = "an integer"
    elif base is float:
        text = "a number"
    elif base is str:
        text = "a string"
    elif typing.get_origin(base) is list:
        text = "a list of strings"
    elif typing.get_origin(base) is dict:
        text = "a table of strings"
    elif isinstance(base, type) and issubclass(base, BaseModel):
        text = "a table"
    else:
        return None
    bounds = []
    for meta in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None and isinstance(meta, (at.Ge, at.Gt, at.Le, at.Lt)):
                bounds.append(f"{sign} {value}")
        if getattr(meta, "pattern", None):
            bounds.append(f"matching {meta.pattern}")
    if bounds:
        text += " " + " and ".join(bounds)
    if optional:
        text += " (or unset)"
    return text


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
