"""Typed configuration: ``[tool.datafn]`` in pyproject.toml, ``DATAFN_*`` variables, keywords.

Precedence, highest first:

1. keyword arguments (``load_config(sync={"push_batch_size": 50})``, ``Client(remote=…)``);
2. environment variables: ``DATAFN_<KEY>``, nested with ``__``
   (``DATAFN_SYNC__PUSH_BATCH_SIZE=50``); list settings take commas (``DATAFN_PLUGINS=a,b``);
3. the ``[tool.datafn]`` table of the nearest ``pyproject.toml`` that has one (searched upward
   from the working directory; ``DATAFN_CONFIG`` names a file explicitly);
4. the defaults below.

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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
)

from datafn.errors import ConfigError

__all__ = [
    "Config",
    "DatafnSettings",
    "LimitsSettings",
    "Section",
    "ServerSettings",
    "SettingsRegistry",
    "SyncSettings",
    "WsReconnectSettings",
    "find_pyproject",
    "load_config",
]

log = logging.getLogger("datafn.config")

ENV_PREFIX = "DATAFN_"
TOML_PREFIX = "tool.datafn"
M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class WsReconnectSettings(Section):
    """``[tool.datafn.sync.ws-reconnect]``: WebSocket reconnection with backoff and jitter."""

    enabled: bool = True
    base_delay: float = Field(1.0, gt=0, description="first delay, seconds")
    multiplier: float = Field(2.0, ge=1, description="growth factor per attempt")
    max_delay: float = Field(60.0, gt=0, description="cap on the delay, seconds")
    jitter: float = Field(0.5, ge=0, description="random extra delay, up to this many seconds")


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
    triggers: list[str] | None = Field(None, description="trigger names; unset: all installed")
    seed_file: str | None = Field(
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


class ServerSettings(Section):
    """``[tool.datafn.server]``: the DataFn server."""

    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    database: str = Field("sqlite:///datafn.db", description="server store URL")
    base_path: str = Field("/datafn", pattern=r"^/[A-Za-z0-9._~/-]*$")
    production: bool = Field(False, description="hide internals in INTERNAL errors")
    notification_bus: str = Field("memory", description="notification bus plugin name")
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


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class DatafnSettings(BaseModel):
    """``[tool.datafn]``: the top level. Unknown tables belong to plugins."""

    model_config = ConfigDict(extra="allow", frozen=True)

    store: str = Field("sqlite:///datafn-local.db", description="client store URL")
    client_id: str | None = Field(None, description="unset: generated once, kept in the store")
    plugins: Annotated[list[str] | None, NoDecode] = Field(
        None, description="allow list of third-party plugins; unset: all installed"
    )
    disable_plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    required_plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    disable_plugin_autoload: bool = False
    hook_timeout: float = Field(30.0, gt=0, description="bound on one hook call, seconds")
    sync: SyncSettings = SyncSettings()
    server: ServerSettings = ServerSettings()

    _split = field_validator("plugins", "disable_plugins", "required_plugins", mode="before")(
        _comma_list
    )


class _SourceSettings(BaseSettings):
    """Only tells pydantic-settings' sources where to read; validation uses DatafnSettings."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        pyproject_toml_table_header=("tool", "datafn"),
        extra="allow",
    )


_Sources = create_model(  # the same fields, so the env source knows the nested names
    "_Sources",
    __base__=_SourceSettings,
    **{name: (info.annotation, info) for name, info in DatafnSettings.model_fields.items()},  # type: ignore[call-overload]
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
    _raw_sections: dict[str, Any] = field(default_factory=dict)
    _sections: dict[str, BaseModel] = field(default_factory=dict)

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
        """Validate the plugin sections against the models plugins declared."""
        for name, model in registry.sections.items():
            raw = self._raw_sections.get(name, {})
            if not isinstance(raw, Mapping):
                raise ConfigError(
                    f"expected a table, got {_show(raw)}", key=self._user_key((name,))
                )
            self._sections[name] = _validate(model, dict(raw), self, prefix=(name,))
        for name in self._raw_sections:
            if name not in registry.sections:
                log.warning(
                    "%s.%s: no installed plugin reads this table", TOML_PREFIX, _kebab(name)
                )

    def effective(self) -> Iterator[tuple[str, Any, str]]:
        """``(key, value, source)`` for every setting, key kebab-cased as in TOML."""
        yield from _walk(self.settings.model_dump(), (), self)
        for name, model in self._sections.items():
            yield from _walk(model.model_dump(), (name,), self)

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


def _mask_url(value: str) -> str:
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
        return _mask_url(value)
    return value


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
    """The nearest ``pyproject.toml`` with a ``[tool.datafn]`` table, searching upward."""
    explicit = os.environ.get("DATAFN_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"no such file: {explicit}", key="DATAFN_CONFIG")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data.get("tool"), dict) and "datafn" in data["tool"]:
                return candidate
    return None


def _read_pyproject(path: Path) -> dict[str, Any]:
    try:
        table = PyprojectTomlConfigSettingsSource(_Sources, toml_file=path).toml_data
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid TOML: {exc}", key=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", key=str(path)) from exc
    if not isinstance(table, dict):
        raise ConfigError("expected a table", key=TOML_PREFIX)
    return dict(_snake_keys(table))


def _read_env() -> dict[str, Any]:
    source = EnvSettingsSource(_Sources)
    try:
        return dict(source())
    except Exception as exc:  # pydantic-settings raises SettingsError for undecodable JSON
        raise ConfigError(f"invalid environment value: {exc}", key=ENV_PREFIX + "*") from exc


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
        if isinstance(value, Mapping) and value and key != "tokens":
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
    path = Path(pyproject) if pyproject is not None else find_pyproject(start)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append(
            (
                "pyproject.toml" if path.name == "pyproject.toml" else str(path),
                _read_pyproject(path),
            )
        )
    if use_env:
        env = _read_env()
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
            provenance[dotted] = "env " + ENV_PREFIX + dotted.replace(".", "__").upper()

    schema_source = merged.pop("schema", None)
    config = Config(
        settings=DatafnSettings.model_construct(),
        schema_source=schema_source,
        pyproject=path,
        provenance=provenance,
    )
    plugin_tables = {
        key: merged.pop(key)
        for key in list(merged)
        if key not in DatafnSettings.model_fields and isinstance(merged[key], Mapping)
    }
    unknown = [key for key in merged if key not in DatafnSettings.model_fields]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, DatafnSettings.model_fields, n=1)
        hint = f"; did you mean {_kebab(near[0])!r}?" if near else ""
        raise ConfigError(f"unknown setting{hint}", key=config._user_key((key,)))
    config.settings = _validate(DatafnSettings, merged, config, prefix=())
    config._raw_sections = plugin_tables
    return config


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
