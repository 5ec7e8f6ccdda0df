"""The ASGI application serving the DataFn wire protocol (Starlette).

:func:`create_app` builds it from a :class:`~datafn.runtime.Runtime` (configuration and
plugins), a schema and a server store. Every request goes through the checks of the protocol,
in this order, and every answer is an envelope::

    shutdown (503) → rate limit (429) → body size: Content-Length, then the bytes read (413)
    → body read within read-timeout (408) → JSON parse (400)
    → authentication (401) / namespace / authorize (403)
    → bounds: resource lists, seed records, JSON values (400, datafn.server.bounds)
    → validation against the wire models, the limits and the schema (400)
    → datafn_before_sync (fail-closed) → execution → datafn_after_sync (fail-open)

The application runs standalone (``datafn serve``) or mounted into a Starlette or FastAPI
application; the store is opened by the lifespan, or on the first request when the host does
not run the mounted application's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from datafn.config import ServerSettings, mask_url
from datafn.context import DEFAULT_NAMESPACE, Identity, RequestContext, SyncContext
from datafn.errors import (
    ConfigError,
    Forbidden,
    HookFailed,
    ProtocolError,
    ServiceUnavailable,
    SyncVetoed,
    ValidationFailed,
)
from datafn.registry import backend_name
from datafn.runtime import Runtime
from datafn.schema import Schema
from datafn.server.bounds import check_request_bounds
from datafn.server.bus import NotificationBus
from datafn.server.mutations import ConflictRules
from datafn.server.retention import RetentionReport, run_retention
from datafn.server.service import SyncService, resources_of
from datafn.server.store import RecordTexts, ServerStore

__all__ = [
    "DatafnServer",
    "create_app",
    "current_server",
    "merge_headers",
    "open_bus",
    "open_store",
]

log = logging.getLogger("datafn.server")

_current: ContextVar[DatafnServer | None] = ContextVar("datafn_current_server", default=None)


def current_server() -> DatafnServer | None:
    """The server handling the current request (None outside one).

    Hook implementations use it to read the settings of the server that calls them
    (``current_server().settings.tokens``), which keeps several servers in one process apart.
    """
    return _current.get()


_SYNC_ACTIONS = ("clone", "pull", "push", "reconcile", "seed")

#: Seconds ``GET <base>/health`` waits for the store before answering 503.
_HEALTH_TIMEOUT = 5.0

#: Bodies up to this size are validated on the event loop (a thread hop costs more than
#: their validation); larger ones in a worker thread.
_VALIDATE_ON_LOOP_BYTES = 64 * 1024


def merge_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as one dict for the hooks, for HTTP requests and WebSockets alike.

    A header sent twice is joined with ``", "`` (as RFC 9110 reads repeated fields), never
    resolved to one of its values: two ``Authorization`` headers make one credential that no
    authentication accepts.
    """
    headers: dict[str, str] = {}
    for name, value in items:
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


_STATUS_BY_CODE = {
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "SERVICE_UNAVAILABLE": 503,
    "INTERNAL": 500,
    "MUTATION_FAILED": 500,
}


def _encode(value: Any) -> Any:
    """``orjson`` fallback: pages of record texts go out without a parse (see RecordTexts)."""
    if isinstance(value, RecordTexts):
        return value.to_json()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    content = orjson.dumps(body, default=_encode)
    return Response(content, status, headers, media_type="application/json")


def _error(
    code: str, message: str, *, status: int, path: str = "$", details: dict[str, Any] | None = None
) -> ProtocolError:
    return ProtocolError(message, code=code, path=path, details=details, http_status=status)


def open_store(runtime: Runtime, schema: Schema, url: str | None = None) -> ServerStore:
    """Build the server store the ``database`` URL (or ``url``) selects, by its scheme."""
    url = url or runtime.config.server.database
    factory = runtime.plugins.registry("server store").get(backend_name(url))
    store = factory(url, schema, runtime.config)
    if not isinstance(store, ServerStore):
        raise ConfigError(
            f"the server store factory for {backend_name(url)!r} did not build a ServerStore",
            key="tool.datafn.server.database",
        )
    return store


def open_bus(runtime: Runtime, name: str | None = None) -> NotificationBus:
    """Build the notification bus the ``notification-bus`` setting (or ``name``) selects."""
    name = name or runtime.config.server.notification_bus
    factory = runtime.plugins.registry("notification bus").get(backend_name(name))
    return factory(name, runtime.config)  # type: ignore[no-any-return]


def _load_schema(runtime: Runtime, schema: Any) -> Schema:
    source = schema if schema is not None else runtime.config.schema_source
    if source is None:
        raise ConfigError(
            'no schema: pass schema= or set it ([tool.datafn] schema = "schema.json" or '
            "datafn serve --schema FILE|module:Class)",
            key="tool.datafn.schema",
        )
    if isinstance(source, str | Path) and not Path(source).is_absolute():
        candidate = runtime.base_dir / source
        if candidate.exists():
            source = candidate
    if isinstance(source, Schema):
        return source
    # pydantic / SQLModel classes and import paths ("myapp.models:Todo") load too; an import
    # path is imported with the project's folder on sys.path
    from datafn.models import load_schema_and_models

    return load_schema_and_models(source, base_dir=runtime.base_dir)[0]


class _RateLimiter:
    """A token bucket per client address: ``rate`` requests per second, bursts of ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) > 100_000:  # bounded memory under address churn
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


def conflict_rules(runtime: Runtime, schema: Schema) -> ConflictRules:
    """The conflict rules of ``[tool.datafn.server.conflicts]`` and the
    ``datafn_resolve_conflict`` hook; a key that is neither ``default`` nor a resource of the
    schema is a :class:`~datafn.errors.ConfigError` naming it."""
    settings = dict(runtime.config.server.conflicts)
    default = settings.pop("default", "last-writer-wins")
    known = set(schema.resource_names)
    for name in settings:
        if name not in known:
            raise ConfigError(
                f"unknown resource {name!r}; use default or one of " + ", ".join(sorted(known)),
                key=f"tool.datafn.server.conflicts.{name}",
            )
    impls = runtime.plugins.caller.implementations("datafn_resolve_conflict")
    if not impls:
        return ConflictRules(default, settings)

    def resolve(**kwargs: Any) -> dict[str, Any] | None:
        """The hook, firstresult, fail-closed: a failure names the plugin."""
        for impl, plugin in impls:
            try:
                value = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as exc:
                raise HookFailed("datafn_resolve_conflict", plugin, exc) from exc
            if value is None:
                continue
            if not isinstance(value, dict):
                raise HookFailed(
                    "datafn_resolve_conflict",
                    plugin,
                    f"returned {type(value).__name__}; expected a dict of fields or None",
                )
            return value
        return None

    return ConflictRules(default, settings, resolve)


class DatafnServer:
    """The server behind the ASGI app: configuration, plugins, store, bus and the handlers.

    ``server.app`` is the Starlette application; ``app.state.datafn`` points back here.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        schema: Schema | Mapping[str, Any] | str | Path | None = None,
        store: ServerStore | str | None = None,
        bus: NotificationBus | None = None,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.runtime = runtime
        self.settings: ServerSettings = runtime.config.server
        self.limits = self.settings.limits
        self.schema = _load_schema(runtime, schema)
        self.store = (
            store if isinstance(store, ServerStore) else open_store(runtime, self.schema, store)
        )
        self.store.conflict_rules = conflict_rules(runtime, self.schema)
        self.bus = bus if bus is not None else open_bus(runtime)
        self.service = SyncService(self.schema, self.store, self.limits, self.bus)
        self.production = self.settings.production
        self._caller = runtime.plugins.caller
        self._rate = (
            _RateLimiter(self.limits.rate_limit_per_second)
            if self.limits.rate_limit_per_second
            else None
        )
        self._draining = False
        self._in_flight = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._opened = False
        self._open_lock = anyio.Lock()
        #: Seconds ``GET <base>/health`` waits for the store's readiness check before it
        #: answers 503.
        self.health_timeout = _HEALTH_TIMEOUT
        self._health_check: asyncio.Task[float | None] | None = None
        self._health_check_started = 0.0
        self._healthy = True
        self._shutdown_callbacks: list[Callable[[], Awaitable[None]]] = []
        base = self.settings.base_path.rstrip("/")
        self.base_path = base
        plugin_routes: list[BaseRoute] = []
        runtime.plugins.hook.datafn_add_server_routes(server=self, routes=plugin_routes)
        self.app = Starlette(
            routes=[
                Route(f"{base}/status", self._status, methods=["GET"]),
                Route(f"{base}/health", self._health, methods=["GET"]),
                *(
                    Route(f"{base}/{action}", self._endpoint(action), methods=["POST"])
                    for action in _SYNC_ACTIONS
                ),
                *plugin_routes,
                *routes,
            ],
            exception_handlers={HTTPException: self._http_exception},  # type: ignore[dict-item]
            lifespan=self._lifespan,
            middleware=[
                # browser apps served from another origin (the TypeScript client): the
                # preflight and the answers carry the CORS headers for the listed origins only
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(self.settings.cors_origins),
                    allow_methods=["GET", "POST"],
                    allow_headers=["authorization", "content-type", "x-datafn-route-ticket"],
                    max_age=600,
                )
            ]
            if self.settings.cors_origins
            else [],
        )
        # ``/datafn/pull/`` is a 404 envelope, not a redirect whose Location the Host header
        # (any client's choice) would build.
        self.app.router.redirect_slashes = False
        self.app.state.datafn = self
        # large bodies are validated in worker threads, a few at a time (see _validate)
        self._validation_limiter = anyio.CapacityLimiter(2)

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and the bus (idempotent; the lifespan calls it)."""
        async with self._open_lock:
            if self._opened:
                return
            await self.store.open()
            try:
                await self.bus.open()
            except BaseException:
                await self.store.aclose()
                raise
            self._opened = True
            self._draining = False

    def begin_shutdown(self) -> None:
        """From now on every new request is answered 503 ``SERVICE_UNAVAILABLE``."""
        self._draining = True

    def add_shutdown_callback(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` when shutdown begins (e.g. to close WebSockets with 1001)."""
        self._shutdown_callbacks.append(callback)

    async def run_shutdown_callbacks(self) -> None:
        """Run the shutdown callbacks once (later calls do nothing); failures are logged."""
        callbacks, self._shutdown_callbacks = self._shutdown_callbacks, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                log.exception("shutdown callback %r failed", callback)

    @property
    def draining(self) -> bool:
        return self._draining

    async def aclose(self) -> None:
        """Refuse new requests, wait for those in flight (``shutdown-timeout``), then close."""
        self.begin_shutdown()
        await self.run_shutdown_callbacks()
        with anyio.move_on_after(self.settings.shutdown_timeout):
            await self._idle.wait()
        if self._in_flight:
            log.warning("closing with %d requests still in flight", self._in_flight)
        if self._health_check is not None:
            self._health_check.cancel()  # a check blocked in a worker thread is not awaited
        async with self._open_lock:
            if not self._opened:
                return
            self._opened = False
            try:
                await self.bus.aclose()
            finally:
                await self.store.aclose()

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.open()
        # A task of its own, not a task group around the yield: hosts may enter and leave
        # the lifespan in different tasks (a cancel scope must not span them).
        retention = (
            asyncio.get_running_loop().create_task(self._retention_loop())
            if self.settings.retention.interval > 0 and self.store.supports_retention
            else None
        )
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()  # a batch under way finishes first
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            await self.aclose()

    async def run_retention(self, **options: Any) -> RetentionReport:
        """Run retention once on this server's store (``datafn compact`` does it without a
        server); ``options`` go to :func:`~datafn.server.retention.run_retention`."""
        return await run_retention(self.store, self.settings.retention, **options)

    async def _retention_loop(self) -> None:
        """Every ``retention.interval`` seconds, a retention run (the first one an interval
        after start); a failed run is logged and the next one comes as planned."""
        interval = self.settings.retention.interval
        while True:
            await anyio.sleep(interval)
            try:
                await self.run_retention()
            except Exception:
                log.exception("retention run failed; the next one is in %g s", interval)

    async def __aenter__(self) -> DatafnServer:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- HTTP ----------------------------------------------------------------------------------

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            error = _error(
                "DFQL_UNSUPPORTED", f"method {request.method} is not allowed here", status=405
            )
        elif exc.status_code == 404:
            # a client whose remote lacks (or mistypes) the base path learns which one it is
            base = str(request.scope.get("root_path", "")).rstrip("/") + self.base_path
            error = _error(
                "NOT_FOUND",
                f"no such route: {request.method} {request.url.path}; the DataFn routes of "
                f"this server are under {base or '/'}",
                status=404,
                details={"basePath": base or "/"},
            )
        else:
            error = _error("DFQL_INVALID", str(exc.detail), status=exc.status_code)
        return self._error_response(error)

    def _error_response(self, error: ProtocolError) -> Response:
        status = error.http_status or 500
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        return _json_response(error.to_envelope(), status, headers)

    def _internal(self, exc: BaseException) -> ProtocolError:
        log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        message = (
            "internal error" if self.production else f"internal error: {type(exc).__name__}: {exc}"
        )
        return _error("INTERNAL", message, status=500)

    def _endpoint(self, action: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await self._handle(request, action)

        endpoint.__name__ = f"datafn_{action}"
        return endpoint

    async def _status(self, request: Request) -> Response:
        return await self._handle(request, "status")

    async def _health(self, request: Request) -> Response:
        """``GET <base>/health``, for load balancers and orchestrators: 200 ``{"ok": true}``
        while the store can serve, 503 with a generic envelope otherwise (and while shutting
        down). It asks for no credentials and runs no hook, so it says nothing else: no
        version, no path, no count, no reason (the reason goes to the log)."""
        headers = {"Cache-Control": "no-store"}
        if not self._draining and await self._store_ready():
            return _json_response({"ok": True}, headers=headers)
        error = ServiceUnavailable("not ready", http_status=503)
        return _json_response(error.to_envelope(), 503, {**headers, "Retry-After": "1"})

    async def _store_ready(self) -> bool:
        """Whether the store answers :meth:`ServerStore.check_ready` within
        :attr:`health_timeout` seconds.

        The check runs in a task of its own that the probe waits for with a deadline: a check
        blocked where it cannot be cancelled (a worker thread waiting on the database) does
        not hold the probe. Concurrent probes share the check in flight (one at a time, so
        probes never crowd the pool), and a check older than the deadline answers "not ready"
        at once, also when it ends late."""
        loop = asyncio.get_running_loop()
        task = self._health_check
        if task is None or task.done():
            task = self._health_check = loop.create_task(self._check_store())
            self._health_check_started = loop.time()
        deadline = self._health_check_started + self.health_timeout
        remaining = deadline - loop.time()
        if remaining > 0:
            await asyncio.wait((task,), timeout=remaining)
        if task.done() and not task.cancelled():
            answered = task.result()  # when the store answered; None: it is not ready
            if answered is None:
                return False
            if answered <= deadline:
                return True
        if self._healthy:
            log.warning("health: the store did not answer within %g s", self.health_timeout)
        self._healthy = False
        return False

    async def _check_store(self) -> float | None:
        """Check the store; the loop time it answered at, or ``None`` when it is not ready."""
        try:
            if not self._opened:  # mounted without a lifespan, or not reachable yet
                await self.open()
            await self.store.check_ready()
        except Exception as exc:
            if self._healthy:  # logged once per change, not once per probe
                reason = (str(exc).strip().splitlines() or [""])[0]
                log.warning(
                    "health: the store is not ready: %s: %s",
                    type(exc).__name__,
                    mask_url(reason),
                )
            self._healthy = False
            return None
        if not self._healthy:
            log.warning("health: the store is ready again")
        self._healthy = True
        return asyncio.get_running_loop().time()

    async def _handle(self, request: Request, action: str) -> Response:
        self._in_flight += 1
        self._idle = self._idle if self._in_flight > 1 else anyio.Event()
        token = _current.set(self)
        try:
            body = await self._run(request, action)
        except ProtocolError as exc:
            return self._error_response(exc)
        except ClientDisconnect:
            # the client went away before its body arrived: nobody reads this answer
            log.debug("%s: the client disconnected before its request was read", action)
            return Response(status_code=499)
        except Exception as exc:
            return self._error_response(self._internal(exc))
        finally:
            _current.reset(token)
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        return _json_response({"ok": True, "result": body})

    async def _run(self, request: Request, action: str) -> dict[str, Any]:
        if self._draining:
            raise ServiceUnavailable("the server is shutting down", http_status=503)
        client_host = request.client.host if request.client else None
        if self._rate is not None and not self._rate.allow(client_host or "?"):
            raise _error("LIMIT_EXCEEDED", "too many requests", status=429)
        payload: Any = None
        size = 0
        if action != "status":
            body = await self._read_body(request)
            size = len(body)
            payload = self._parse(body)
        if not self._opened:
            if self._draining:  # never reopen what shutdown closed
                raise ServiceUnavailable("the server is shutting down", http_status=503)
            await self.open()
        headers = merge_headers(request.headers.items())
        identity, namespace = await self.authenticate(headers, action)
        context = RequestContext(action, identity, namespace, headers, client_host)
        await self.authorize(context, payload)
        if action == "status":
            return self.service.status()
        prepared = await self._validate(action, payload, size)
        sync_context = SyncContext(
            side="server",
            client_id=payload.get("clientId") if isinstance(payload.get("clientId"), str) else None,
            namespace=namespace,
            identity=identity,
            resources=resources_of(action, prepared, self.schema),
        )
        try:
            replaced = await self._caller.before_sync(action, payload, sync_context)
        except SyncVetoed as exc:
            raise self._vetoed(exc) from None
        if replaced is not payload:
            payload = replaced
            # a plugin's payload: its size in bytes is not known, so every bound is counted
            prepared = await self._validate(action, payload, None)
        result = await self.service.run(action, namespace, prepared)
        await self._caller.after_sync(action, payload, result, sync_context)
        return result

    async def _validate(self, action: str, payload: Any, size: int | None) -> Any:
        """Bound the body (:mod:`datafn.server.bounds`), then validate it; a body larger than
        ``_VALIDATE_ON_LOOP_BYTES`` is validated in a worker thread, so the other clients are
        not held while it is (validation is pure Python and yields the GIL every few ms)."""
        if size is not None and size <= _VALIDATE_ON_LOOP_BYTES:
            return self._validate_now(action, payload, size)
        return await anyio.to_thread.run_sync(
            self._validate_now, action, payload, size, limiter=self._validation_limiter
        )

    def _validate_now(self, action: str, payload: Any, size: int | None = None) -> Any:
        check_request_bounds(
            action, payload, resources=len(self.schema.resources), limits=self.limits, size=size
        )
        return self.service.validate(action, payload)

    async def _read_body(self, request: Request) -> bytes:
        # A client that sends its body slowly (or stops) holds a connection and a task:
        # the whole body must arrive within ``read-timeout`` (408 otherwise). ``datafn
        # serve`` also bounds the headers' time, see datafn.server.connections.
        timeout = self.settings.read_timeout
        with anyio.move_on_after(timeout):
            return await self._read_body_now(request)
        raise _error(
            "LIMIT_EXCEEDED",
            f"the request was not received within {timeout:g} s",
            status=408,
            details={"timeout": timeout},
        )

    async def _read_body_now(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ValidationFailed("invalid Content-Length header") from None
            if size > limit:
                raise self._too_large(limit)
        chunks = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _too_large(limit: int) -> ProtocolError:
        return _error(
            "LIMIT_EXCEEDED",
            f"the request body exceeds {limit} bytes",
            status=413,
            details={"limit": limit},
        )

    @staticmethod
    def _parse(body: bytes) -> Any:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValidationFailed("Invalid JSON", code="DFQL_INVALID") from None
        if not isinstance(payload, dict):
            raise ValidationFailed("the request body must be a JSON object", code="DFQL_INVALID")
        return payload

    async def authenticate(
        self, headers: dict[str, str], action: str
    ) -> tuple[Identity | None, str]:
        """Authenticate a request or socket and resolve its namespace (hooks decide both).

        Raises :class:`~datafn.errors.ProtocolError` (401 or ``NAMESPACE_INVALID``) on refusal.
        """
        token = _current.set(self)  # hooks read this server's settings through it
        try:
            return await self._authenticate(headers, action)
        finally:
            _current.reset(token)

    async def _authenticate(
        self, headers: dict[str, str], action: str
    ) -> tuple[Identity | None, str]:
        try:
            identity = await self._caller.call(
                "datafn_authenticate", headers=headers, action=action
            )
        except HookFailed as exc:
            if isinstance(exc.cause, ProtocolError):
                raise exc.cause from None
            log.warning("%s", exc, exc_info=exc.cause)
            raise _error("FORBIDDEN", "authentication failed", status=401) from None
        if identity is not None and not isinstance(identity, Identity):
            log.error("datafn_authenticate returned %r, not an Identity", type(identity).__name__)
            raise _error("FORBIDDEN", "authentication failed", status=401)
        try:
            namespace = await self._caller.call(
                "datafn_resolve_namespace", identity=identity, headers=headers
            )
        except HookFailed as exc:
            if isinstance(exc.cause, ProtocolError):
                raise exc.cause from None
            log.warning("%s", exc, exc_info=exc.cause)
            raise _error(
                "NAMESPACE_INVALID", "the namespace could not be resolved", status=403
            ) from None
        if namespace is None:
            namespace = DEFAULT_NAMESPACE
        if (
            not isinstance(namespace, str)
            or not 0 < len(namespace) <= 255
            or not namespace.isprintable()
        ):
            log.error("datafn_resolve_namespace returned an invalid namespace %r", namespace)
            raise _error("NAMESPACE_INVALID", "the namespace is invalid", status=403)
        return identity, namespace

    async def authorize(self, context: RequestContext, payload: Any) -> None:
        """Ask every ``datafn_authorize`` implementation; raises Forbidden when one denies."""
        try:
            answers = await self._caller.call(
                "datafn_authorize", context=context, action=context.action, payload=payload
            )
        except HookFailed as exc:
            if isinstance(exc.cause, ProtocolError):
                raise exc.cause from None
            log.warning("%s", exc, exc_info=exc.cause)
            raise Forbidden(f"{context.action} is not allowed") from None
        if any(answer is False for answer in answers):
            raise Forbidden(f"{context.action} is not allowed")

    def _vetoed(self, exc: SyncVetoed) -> ProtocolError:
        if exc.veto is not None:
            code = exc.veto.code
            status = _STATUS_BY_CODE.get(
                code, 400 if code.startswith(("DFQL", "SCHEMA", "LIMIT")) else 403
            )
            return _error(code, str(exc), status=status, path=exc.veto.path)
        log.warning("%s", exc, exc_info=exc.cause)
        message = (
            str(exc) if not self.production else f"{exc.phase} refused by plugin {exc.plugin!r}"
        )
        return _error("FORBIDDEN", message, status=403)


def create_app(
    runtime: Runtime | None = None,
    *,
    schema: Schema | Mapping[str, Any] | str | Path | None = None,
    store: ServerStore | str | None = None,
    bus: NotificationBus | None = None,
    plugins: Sequence[object] = (),
    routes: Sequence[BaseRoute] = (),
    **overrides: Any,
) -> Starlette:
    """The ASGI application of a DataFn server.

    :param runtime: configuration and plugins; booted from ``pyproject.toml``, the environment
        and ``overrides`` when not given (``plugins`` are then registered too).
    :param schema: a :class:`~datafn.schema.Schema`, a dict or a ``.json``/``.toml`` path;
        default: the ``schema`` setting.
    :param store: a :class:`~datafn.server.store.ServerStore` or a database URL; default: the
        ``server.database`` setting (``sqlite:///datafn.db``).
    :param bus: a notification bus; default: the ``server.notification-bus`` setting.
    :param routes: extra Starlette routes (e.g. a WebSocket endpoint under the base path).
    :return: a Starlette application; ``app.state.datafn`` is its :class:`DatafnServer`.
    """
    if runtime is None:
        runtime = Runtime.boot(plugins=plugins, **overrides)
    elif plugins or overrides:
        raise TypeError("pass plugins and settings to Runtime.boot() when giving a runtime")
    return DatafnServer(runtime, schema=schema, store=store, bus=bus, routes=routes).app
