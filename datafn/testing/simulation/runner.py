"""One simulated run: a server, N clients, a network between them, a workload, the checks.

Everything runs in one :class:`~datafn.testing.simulation.clock.VirtualTimeLoop`. Clients are
real :class:`datafn.Client` objects with the built-in http transport, whose httpx transport
is the simulated network; the network hands each request to the real server application
(ASGI, in-process) and injects the faults. Crashes cancel an incarnation's tasks wherever they
wait and abandon its objects; the restart opens new ones on the same store objects.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import orjson

from datafn.builtins.client_http import HttpTransport
from datafn.client import Client
from datafn.client.store import ClientStore
from datafn.errors import DatafnError, ValidationFailed, Veto
from datafn.plugin import hookimpl
from datafn.registry import Registry
from datafn.runtime import Runtime
from datafn.schema import Schema, load_schema
from datafn.server.app import DatafnServer
from datafn.server.memory import MemoryServerStore
from datafn.server.store import Change, PendingMutation, PushOutcome, ServerStore
from datafn.testing.simulation.clock import SimulationDeadlock, VirtualTimeLoop
from datafn.testing.simulation.model import (
    RECORD_IDS,
    SCHEMA,
    SimulationOptions,
    SimulationResult,
    Step,
    SwarmConfig,
    TraceLine,
    Violation,
)
from datafn.testing.simulation.stores import guarded_client_store, guarded_server_store
from datafn.testing.simulation.workload import SYNC_KINDS, WRITE_KINDS, describe_step

__all__ = ["run_simulation"]

REMOTE = "http://datafn.sim/datafn"
NAMESPACE = "datafn"
RESOURCE = "todos"
#: Steps other than writes and sync calls that need the client running.
CLIENT_KINDS = ("start", "stop", "discard", "announce", "focus")
#: Virtual seconds one explicit settle operation may take.
SETTLE_OPERATION_LIMIT = 300.0


class _Box:
    """A one-shot result slot: an answer ``(status, headers, body)`` or a reset connection."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None

    def put(self, answer: tuple[int, list[tuple[str, str]], bytes] | None) -> None:
        if not self.event.is_set():
            self.answer = answer
            self.event.set()


@dataclass
class _Write:
    label: str
    client: int
    order: int
    operation: str
    record_id: str
    rev: str | None
    mutation_id: str
    step: int | None
    guard: dict[str, Any] | None = None


@dataclass
class _Request:
    number: int
    client: int
    endpoint: str
    method: str
    body: bytes
    headers: list[tuple[str, str]]
    what: str
    delivered: bool = False  # the server received it (only such requests can be replayed)


@dataclass
class _Commit:
    number: int
    client_id: str
    changes: list[Change]
    mutations: list[tuple[str, PendingMutation, bool]]  # (mutation id, mutation, applied)
    #: ids of the mutations that produced a change (computed once, see _Run._changed)
    producers: set[int] | None = None


def _produces(mutation: PendingMutation, change: Change) -> bool:
    """Whether ``change`` can be the effect of ``mutation`` (same record; a delete for a
    delete, else the mutation's rev)."""
    if change.resource != mutation.resource or change.id != mutation.id:
        return False
    if mutation.operation == "delete":
        return change.op == "delete"
    rev = (mutation.record or {}).get("rev")
    return change.op != "delete" and (rev is None or (change.data or {}).get("rev") == rev)


@dataclass
class _ClientNode:
    """A client: its durable store (the "file") and its current incarnation."""

    index: int
    client_id: str
    store: ClientStore
    incarnation: _Incarnation | None = None
    link_up: bool = True
    wants_sync: bool = False
    writes: int = 0
    requests: int = 0
    armed: list[tuple[str, str]] = field(default_factory=list)  # (fault, endpoint)


class _Incarnation:
    """One run of a client's process: a Client on the node's store, until it crashes."""

    def __init__(self, run: _Run, node: _ClientNode, number: int) -> None:
        self.run = run
        self.node = node
        self.number = number
        self.dead = False
        self.scope = anyio.CancelScope()
        self.client: Client | None = None
        self.ops: anyio.abc.TaskGroup | None = None
        self.ready = anyio.Event()

    async def host(self) -> None:
        run = self.run
        node = self.node
        try:
            with self.scope:
                store = guarded_client_store(node.store, lambda: self.dead)
                transport = HttpTransport(
                    REMOTE,
                    transport=_Link(run, node),
                    timeout=run.options.request_timeout,
                )
                client = Client(
                    schema=run.schema,
                    remote=REMOTE,
                    store=f"simulated://client-{node.index}",
                    client_id=node.client_id,
                    transport=transport,
                    plugins=[_StorePlugin(store), _VetoPolicy(), *run.options.plugins],
                    use_env=False,
                    pyproject=run.pyproject,
                    disable_plugin_autoload=True,
                    sync=run.sync_settings,
                )
                async with client:
                    client.sync.random = random.Random(
                        f"{run.seed}:{node.index}:{self.number}"
                    ).random
                    client.events.on("mutation_applied", self._applied)
                    client.events.on("mutation_rejected", self._rejected)
                    client.events.on("conflict", self._conflict)
                    client.events.on("sync_started", self._started)
                    client.events.on("sync_stuck", self._stuck)
                    client.events.on("sync_recovered", self._recovered)
                    self.client = client
                    async with anyio.create_task_group() as ops:
                        self.ops = ops
                        self.ready.set()
                        await anyio.sleep_forever()
        except Exception as exc:
            if not self.dead:
                run.engine_error(node.index, "the client", exc)
        finally:
            self.dead = True
            self.ready.set()
            if node.incarnation is self:
                node.incarnation = None

    async def _applied(self, event: Any) -> None:
        self.run.last_mutation_id = event.context.mutation_id

    async def _stuck(self, event: Any) -> None:
        self.run.stuck[self.node.index] = (self, event.cause, event.since)
        self.run.stats["stuck_episodes"] = self.run.stats.get("stuck_episodes", 0) + 1
        self.run.note(
            f"client {self.node.index}: sync_stuck ({event.cause}, for {event.duration:.1f} s)"
        )

    async def _recovered(self, event: Any) -> None:
        self.run.stuck.pop(self.node.index, None)
        stats = self.run.stats
        stats["max_recovery_seconds"] = max(stats.get("max_recovery_seconds", 0), event.duration)
        self.run.note(
            f"client {self.node.index}: sync_recovered ({event.cause}, "
            f"after {event.duration:.1f} s)"
        )

    async def _started(self, event: Any) -> None:
        if event.context.phase == "clone_up":
            self.run.note(f"client {self.node.index}: cloneUp begins")

    async def _rejected(self, event: Any) -> None:
        context = event.context
        self.run.rejected(self.node, context.mutation_id, context.record_id, context.error)

    async def _conflict(self, event: Any) -> None:
        stats = self.run.stats
        key = f"conflicts_{event.role}"
        stats[key] = stats.get(key, 0) + 1
        if event.role == "rejected" and event.mutation_id is not None:
            self.run.conflict_rejected.add((self.node.index, event.mutation_id))
        self.run.note(
            f"client {self.node.index}: conflict ({event.role}) on {event.record_id} "
            f"({', '.join(event.fields)})",
            records=[event.record_id],
        )

    def crash(self) -> None:
        self.dead = True
        self.scope.cancel()

    def spawn(self, what: str, operation: Callable[[Client], Awaitable[Any]]) -> anyio.Event:
        """Run ``operation(client)`` in this incarnation (a crash cancels it); the event is
        set when it ended, whichever way."""
        done = anyio.Event()
        if self.dead or self.ops is None or self.client is None:
            done.set()
            return done
        client = self.client
        run = self.run
        step = run.step_index

        async def task() -> None:
            try:
                result = await operation(client)
                if result is not None:
                    run.note(f"client {self.node.index}: {what} done{result}", step=step)
            except DatafnError as exc:
                run.note(
                    f"client {self.node.index}: {what} failed: {type(exc).__name__}: "
                    f"{_short(str(exc))}",
                    step=step,
                )
            except Exception as exc:
                if not self.dead:
                    run.engine_error(self.node.index, what, exc)
            finally:
                done.set()

        self.ops.start_soon(task)
        return done


#: Titles starting with this are refused by every client's policy (``datafn_before_sync``).
VETOED = "veto:"


class _VetoPolicy:
    """A client policy: pushes and cloneUps carrying a title that starts with ``veto:`` are
    vetoed as invalid content (what datafn-guard's rules or an application's own do)."""

    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any, context: Any) -> None:
        if phase not in ("push", "clone_up") or not isinstance(payload, dict):
            return
        for index, mutation in enumerate(payload.get("mutations") or ()):
            title = (mutation.get("record") or {}).get("title")
            if isinstance(title, str) and title.startswith(VETOED):
                raise Veto(
                    f"the simulated policy refuses the title of {mutation.get('id')}",
                    code="DFQL_INVALID",
                    path=f"mutations[{index}].record.title",
                )


class _StorePlugin:
    """Registers the ``simulated`` client store scheme: the incarnation's view of the file."""

    def __init__(self, store: ClientStore) -> None:
        self.store = store

    @hookimpl
    def datafn_register_client_stores(self, registry: Registry[Any]) -> None:
        store = self.store
        registry.add("simulated", lambda url, schema, config: store, description="simulator")


class _Link(httpx.AsyncBaseTransport):
    """A client's side of the simulated network (the httpx transport of its HttpTransport)."""

    def __init__(self, run: _Run, node: _ClientNode) -> None:
        self.run = run
        self.node = node

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [(k, v) for k, v in request.headers.items()]
        return await self.run.network_send(
            self.node, request.method, request.url.path, headers, body
        )

    async def aclose(self) -> None:
        return None


class _ServerIncarnation:
    def __init__(self, run: _Run, number: int) -> None:
        self.run = run
        self.number = number
        self.dead = False
        self.scope = anyio.CancelScope()
        self.server: DatafnServer | None = None
        self.tasks: anyio.abc.TaskGroup | None = None
        self.pending: set[_Box] = set()
        self.ready = anyio.Event()

    async def host(self) -> None:
        run = self.run
        try:
            with self.scope:
                store = guarded_server_store(run.server_store, lambda: self.dead, run.committed)
                server = DatafnServer(run.server_runtime, schema=run.schema, store=store)
                await server.open()
                self.server = server
                async with anyio.create_task_group() as tasks:
                    self.tasks = tasks
                    self.ready.set()
                    await anyio.sleep_forever()
        except Exception as exc:
            if not self.dead:
                run.engine_error(None, "the server", exc)
        finally:
            self.dead = True
            self.ready.set()
            for box in list(self.pending):
                box.put(None)

    def crash(self) -> None:
        self.dead = True
        self.scope.cancel()
        for box in list(self.pending):
            box.put(None)

    async def call(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, client: str
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """Serve one request; None when the server crashed before answering."""
        if self.dead or self.tasks is None or self.server is None:
            return None
        box = _Box()
        self.pending.add(box)
        app = self.server.app

        async def serve() -> None:
            try:
                box.put(await _asgi(app, method, path, headers, body, client))
            finally:
                box.put(None)

        self.tasks.start_soon(serve)
        try:
            await box.event.wait()
        finally:
            self.pending.discard(box)
        return box.answer


async def _asgi(
    app: Any, method: str, path: str, headers: list[tuple[str, str]], body: bytes, client: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "server": ("datafn.sim", 80),
        "client": (client, 1000),
    }
    sent_body = False
    complete = anyio.Event()
    status = 500
    out_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            out_headers.extend(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
            )
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                complete.set()

    await app(scope, receive, send)
    complete.set()
    return status, out_headers, b"".join(chunks)


def _short(text: str, size: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


def _fmt(record: dict[str, Any] | None) -> str:
    if record is None:
        return "(none)"
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in record.items() if k != "id") + "}"


class _Run:
    def __init__(
        self, seed: int, options: SimulationOptions, config: SwarmConfig, steps: Sequence[Step]
    ) -> None:
        self.seed = seed
        self.options = options
        self.config = config
        self.steps = list(steps)
        self.schema: Schema = load_schema(SCHEMA)
        self.pyproject = options.pyproject or _empty_pyproject()
        self.sync_settings: dict[str, Any] = {
            "push_batch_size": config.push_batch_size,
            "pull_batch_size": config.pull_batch_size,
            "clone_page_size": config.clone_page_size,
            "push_max_retries": config.push_max_retries,
            "request_timeout": options.request_timeout,
            **options.sync,
        }
        self.trace: list[TraceLine] = []
        self.violations: list[Violation] = []
        self.step_index: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.faults_on = True
        self.last_mutation_id: str | None = None
        # what happened, for the checks
        self.writes: dict[str, _Write] = {}  # label → write
        self.by_mutation: dict[tuple[str, str], _Write] = {}  # (client id, mutation id)
        self.reported: dict[tuple[str, str], str] = {}  # (client id, mutation id) → error
        self.discarded: set[str] = set()
        #: (client index, mutation id) of the writes refused for a conflict (reject policy)
        self.conflict_rejected: set[tuple[int, str]] = set()
        self.commits: list[_Commit] = []
        self.applied: dict[tuple[str, str], list[int]] = {}  # (client, mid) → commit numbers
        self.given: dict[str, int] = {}  # resource → highest cursor handed out
        #: open watchdog episodes: client index → (incarnation, cause, since)
        self.stuck: dict[int, tuple[_Incarnation, str, float]] = {}
        self.requests: list[_Request] = []
        self.stats: dict[str, float] = {
            "requests": 0,
            "faults": 0,
            "commits": 0,
            "writes": 0,
            "client_crashes": 0,
            "server_crashes": 0,
        }
        self.server_store: ServerStore = MemoryServerStore("memory://", self.schema)
        self.server_runtime = Runtime.boot(
            plugins=list(options.server_plugins),
            use_env=False,
            pyproject=self.pyproject,
            disable_plugin_autoload=True,
            server={"database": "memory://", "conflicts": {"default": options.conflicts}},
        )
        self.server: _ServerIncarnation | None = None
        self.server_count = 0
        self.nodes: list[_ClientNode] = []
        for index in range(1, config.clients + 1):
            store: ClientStore
            if options.store_factory is not None:
                store = options.store_factory(index, self.schema)
            else:
                from datafn.builtins.client_memory_store import MemoryClientStore

                store = MemoryClientStore("memory://", self.schema)
            self.nodes.append(_ClientNode(index, f"client-{index}", store))
        self.incarnations = 0
        self.hosts: anyio.abc.TaskGroup | None = None

    # -- the trace -------------------------------------------------------------------------

    def now(self) -> float:
        return self.loop.time() if self.loop is not None else 0.0

    def note(
        self, text: str, *, records: Sequence[str] = (), step: int | str | None = "current"
    ) -> None:
        index = self.step_index if step == "current" else step
        assert index is None or isinstance(index, int)
        self.trace.append(TraceLine(round(self.now(), 6), index, text, tuple(records)))

    def violation(self, invariant: str, message: str, records: Sequence[str] = ()) -> None:
        history = tuple(
            f"{line.time:9.3f}s {line.text}"
            for line in self.trace
            if line.is_step or set(line.records) & set(records)
        )
        if not records:
            history = ()
        self.violations.append(Violation(invariant, message, tuple(records), history))

    def engine_error(self, client: int | None, what: str, exc: BaseException) -> None:
        who = f"client {client}" if client is not None else "the server"
        detail = f"{type(exc).__name__}: {_short(str(exc), 300)}"
        if isinstance(exc, BaseExceptionGroup):
            inner = exc.exceptions[0]
            detail += f" (first: {type(inner).__name__}: {_short(str(inner), 300)})"
        self.note(f"{who}: {what} raised {detail}")
        self.violation("engine-error", f"{who}: {what} raised {detail}")

    def label(self, client_id: str, mutation_id: str) -> str:
        write = self.by_mutation.get((client_id, mutation_id))
        if write is not None:
            return write.label
        if mutation_id.startswith("cloneup:"):
            return f"cloneUp {mutation_id[8:16]}"
        return f"mutation {mutation_id[:8]}"

    # -- observations ------------------------------------------------------------------------

    def committed(
        self,
        namespace: str,
        client_id: str,
        mutations: Sequence[PendingMutation],
        outcome: PushOutcome,
        changes: list[Change],
    ) -> None:
        number = len(self.commits) + 1
        entries = []
        for mutation, result in zip(mutations, outcome.results, strict=True):
            applied = result is None
            entries.append((mutation.mutation_id, mutation, applied))
            if applied:
                self.applied.setdefault((client_id, mutation.mutation_id), []).append(number)
        self.commits.append(_Commit(number, client_id, changes, entries))
        self.stats["commits"] += 1
        for change in changes:
            seen = self.given.get(change.resource)
            if seen is not None and change.seq <= seen:
                self.violation(
                    "visibility",
                    f"change seq {change.seq} of {change.resource} ({change.op} {change.id}) "
                    f"became visible after a client was given cursor {seen}",
                    [change.id],
                )
        parts = []
        for mutation, result in zip(mutations, outcome.results, strict=True):
            what = (
                f"{self.label(client_id, mutation.mutation_id)} {mutation.operation} {mutation.id}"
            )
            if mutation.record is not None and mutation.mutation_id.startswith("cloneup:"):
                what += f" (rev {mutation.record.get('rev')})"
            if result is not None:
                what += f" refused {result.code}"
            parts.append(what)
        seqs = (
            f"seq {changes[0].seq}" + (f"..{changes[-1].seq}" if len(changes) > 1 else "")
            if changes
            else "no change"
        )
        self.note(
            f"server commits a push of {client_id} ({seqs}): " + "; ".join(parts),
            records=sorted({m.id for m in mutations}),
        )

    def rejected(
        self, node: _ClientNode, mutation_id: str | None, record_id: str | None, error: Any
    ) -> None:
        if mutation_id is None:
            return
        code = getattr(error, "code", type(error).__name__)
        self.reported[(node.client_id, mutation_id)] = str(code)
        self.note(
            f"client {node.index} reports {self.label(node.client_id, mutation_id)} "
            f"({record_id}) rejected: {code}",
            records=[record_id] if record_id else [],
        )

    # -- the network ---------------------------------------------------------------------------

    def _describe_request(self, client_id: str, endpoint: str, body: bytes) -> str:
        if endpoint != "push" or not body:
            return endpoint
        try:
            payload = orjson.loads(body)
            labels = [
                self.label(client_id, str(m.get("mutationId")))
                for m in payload.get("mutations", ())
            ]
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return "push"
        return f"push ({', '.join(labels)})"

    def _pick_fault(self, node: _ClientNode, endpoint: str, rng: random.Random) -> str | None:
        if not self.faults_on:
            return None
        for position, (fault, wanted) in enumerate(node.armed):
            if wanted in ("any", endpoint):
                del node.armed[position]
                return fault
        if self.config.fault_rate and rng.random() < self.config.fault_rate:
            menu: list[str] = [
                f
                for f in ("drop", "reset", "duplicate", "delay", "truncate")
                if f in self.config.faults
            ]
            if "delay" in self.config.faults:
                menu.append("timeout")
            if "crash" in self.config.faults and endpoint == "push":
                menu.append("crash_after_commit")
            if menu:
                return rng.choice(menu)
        return None

    async def network_send(
        self,
        node: _ClientNode,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> httpx.Response:
        endpoint = path.rsplit("/", 1)[-1]
        number = len(self.requests) + 1
        what = self._describe_request(node.client_id, endpoint, body)
        request = _Request(number, node.index, endpoint, method, body, headers, what)
        self.requests.append(request)
        self.stats["requests"] += 1
        who = f"client {node.index}"
        # every choice about this request from its own generator: removing a step that sends
        # nothing (shrinking) leaves the fate of every request as it was
        node.requests += 1
        rng = random.Random(f"network:{self.seed}:{node.index}:{node.requests}")
        timeout = self.options.request_timeout
        latency = self.config.latency
        if not node.link_up:
            await anyio.sleep(latency * rng.random())
            raise httpx.ConnectError(f"{who} is offline")
        fault = self._pick_fault(node, endpoint, rng)
        if fault is not None:
            self.stats["faults"] += 1
        records = self._records_of(body) if endpoint == "push" else []
        if fault == "drop":
            self.note(f"network drops {who}'s {what} before the server", records=records)
            await anyio.sleep(latency * rng.random())
            raise httpx.ConnectError("connection refused (simulated)")
        hold = latency * rng.random()
        if fault == "delay":
            hold += rng.uniform(0.5, timeout * 0.8)
            self.note(f"network delays {who}'s {what} by {hold:.3f} s", records=records)
        elif fault == "timeout":
            hold += timeout + rng.uniform(0.1, 5.0)
            self.note(
                f"network holds {who}'s {what} for {hold:.3f} s: the client gives up after "
                f"{timeout} s, the server still receives it",
                records=records,
            )
        back = latency * rng.random()
        copies = 2 if fault == "duplicate" else 1
        if fault == "duplicate":
            self.note(f"network delivers {who}'s {what} twice", records=records)
        box = _Box()
        assert self.hosts is not None
        self.hosts.start_soon(self._fly, request, hold, copies, box)
        try:
            with anyio.move_on_after(timeout) as waiting:
                await box.event.wait()
        except anyio.get_cancelled_exc_class():
            if node.incarnation is not None and not node.incarnation.dead:
                self.note(
                    f"{who} stops waiting for the answer to its {what} (its task was cancelled)",
                    records=records,
                )
            raise
        if waiting.cancelled_caught:
            raise httpx.ReadTimeout(f"{who}'s {endpoint} timed out after {timeout} s")
        answer = box.answer
        if answer is None:
            self.note(f"{who}'s {what}: connection reset (the server went down)", records=records)
            raise httpx.ReadError("connection reset by peer (server crash)")
        status, out_headers, content = answer
        if not self.faults_on:  # settling began while this request was on its way
            fault = None
        if fault == "reset":
            self.note(
                f"network resets the connection after the server answered {who}'s {what} "
                f"({self._describe_answer(endpoint, status, content, node.client_id)})",
                records=records,
            )
            raise httpx.ReadError("connection reset by peer (simulated)")
        if fault == "crash_after_commit":
            self.note(
                f"{who} crashes after the server answered its {what} "
                f"({self._describe_answer(endpoint, status, content, node.client_id)}), "
                "before reading the answer",
                records=records,
            )
            self.crash_client(node)
            await anyio.sleep_forever()
        if fault == "truncate" and len(content) > 1:
            cut = len(content) // 2
            self.note(
                f"network cuts the answer to {who}'s {what} to {cut} of {len(content)} bytes",
                records=records,
            )
            content = content[:cut]
        await anyio.sleep(back)
        kept = [(k, v) for k, v in out_headers if k.lower() not in ("content-length",)]
        return httpx.Response(status, headers=kept, content=content)

    async def _fly(self, request: _Request, hold: float, copies: int, box: _Box) -> None:
        await anyio.sleep(hold)
        for copy_number in range(copies):
            answer = await self._deliver(request)
            if copy_number == 0:
                box.put(answer)
        box.put(None)

    async def _deliver(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
        server = self.server
        if server is None or server.dead:
            return None
        path = f"/datafn/{request.endpoint}"
        request.delivered = True
        answer = await server.call(
            request.method, path, request.headers, request.body, f"client-{request.client}"
        )
        if answer is None:
            return None
        status, _headers, content = answer
        if status >= 500 and status != 503:
            self.violation(
                "http-500",
                f"the server answered HTTP {status} to client {request.client}'s "
                f"{request.what}: {_short(content.decode('utf-8', 'replace'), 300)}",
            )
        if status == 200 and request.endpoint in ("pull", "clone"):
            try:
                result = orjson.loads(content).get("result", {})
                cursors = result.get("cursors") or {}
                for resource, cursor in cursors.items():
                    n = int(cursor)
                    if n > self.given.get(resource, -1):
                        self.given[resource] = n
                self._note_download(request, result, cursors)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                pass
        return answer

    def _note_download(
        self, request: _Request, result: dict[str, Any], cursors: dict[str, Any]
    ) -> None:
        """A trace line for a pull or clone answer that carries records."""
        parts: list[str] = []
        records: list[str] = []
        groups = (
            ("data", "") if request.endpoint == "clone" else ("records", ""),
            ("merged", "merge ") if request.endpoint == "pull" else ("", ""),
            ("deleted", "delete ") if request.endpoint == "pull" else ("", ""),
        )
        for key, prefix in groups:
            if not key:
                continue
            for rows in (result.get(key) or {}).values():
                for row in rows:
                    if isinstance(row, dict):
                        records.append(str(row.get("id")))
                        parts.append(f"{prefix}{row.get('id')} (rev {row.get('rev')})")
                    else:
                        records.append(str(row))
                        parts.append(f"{prefix}{row}")
        if not parts:
            return
        where = ", ".join(f"{k} {v}" for k, v in cursors.items())
        self.note(
            f"the server answers client {request.client}'s {request.endpoint} with "
            f"{', '.join(parts)} (cursor {where})",
            records=records,
        )

    def _records_of(self, body: bytes) -> list[str]:
        try:
            payload = orjson.loads(body)
            return sorted({str(m.get("id")) for m in payload.get("mutations", ())})
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return []

    def _describe_answer(self, endpoint: str, status: int, content: bytes, client_id: str) -> str:
        if endpoint != "push":
            return f"HTTP {status}"
        try:
            result = orjson.loads(content)["result"]
            applied = [self.label(client_id, m) for m in result.get("applied", ())]
            refused = [
                f"{self.label(client_id, e['mutationId'])} {e['code']}"
                for e in result.get("errors", ())
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return f"HTTP {status}"
        parts = []
        if applied:
            parts.append("it applied " + ", ".join(applied))
        if refused:
            parts.append("refused " + ", ".join(refused))
        return "; ".join(parts) or f"HTTP {status}"

    # -- crashes and restarts ------------------------------------------------------------------

    def crash_client(self, node: _ClientNode) -> None:
        incarnation = node.incarnation
        if incarnation is None:
            return
        node.incarnation = None
        self.stats["client_crashes"] += 1
        incarnation.crash()

    async def start_client(self, node: _ClientNode) -> _Incarnation | None:
        assert self.hosts is not None
        self.incarnations += 1
        incarnation = _Incarnation(self, node, self.incarnations)
        node.incarnation = incarnation
        self.hosts.start_soon(incarnation.host)
        await incarnation.ready.wait()
        if incarnation.dead:
            return None
        if node.wants_sync:
            assert incarnation.client is not None
            await incarnation.client.sync.start()
        return incarnation

    async def start_server(self) -> None:
        assert self.hosts is not None
        self.server_count += 1
        incarnation = _ServerIncarnation(self, self.server_count)
        self.hosts.start_soon(incarnation.host)
        await incarnation.ready.wait()
        self.server = incarnation

    async def _server_down(self, down: float) -> None:
        server = self.server
        if server is not None:
            self.stats["server_crashes"] += 1
            self.server = None
            server.crash()
        await anyio.sleep(down)
        await self.start_server()
        self.note("the server is back (same store)", step=None if not self.faults_on else "current")

    # -- the workload --------------------------------------------------------------------------

    async def run_step(self, index: int, step: Step) -> None:
        self.step_index = index
        self.trace.append(
            TraceLine(
                round(self.now(), 6),
                index,
                f"step {index + 1}: {describe_step(step)}",
                is_step=True,
            )
        )
        if step.client > len(self.nodes):
            return
        node = self.nodes[step.client - 1]
        rng = random.Random(step.seed)
        kind = step.kind
        incarnation = node.incarnation
        needs_client = kind in WRITE_KINDS or kind in SYNC_KINDS or kind in CLIENT_KINDS
        if needs_client and incarnation is None:
            self.note(f"client {node.index} is down: nothing happens")
        elif kind in WRITE_KINDS:
            assert incarnation is not None
            await self._inside(
                incarnation, f"a {kind} write", lambda: self._write(node, incarnation, kind, rng)
            )
        elif kind in SYNC_KINDS:
            assert incarnation is not None
            self._sync(incarnation, kind)
        elif kind == "start":
            assert incarnation is not None and incarnation.client is not None
            node.wants_sync = True
            await incarnation.client.sync.start()
        elif kind == "stop":
            assert incarnation is not None
            node.wants_sync = False
            incarnation.spawn("sync.stop()", lambda c: _none(c.sync.stop()))
        elif kind == "discard":
            assert incarnation is not None
            await self._inside(incarnation, "a discard", lambda: self._discard(node, incarnation))
        elif kind == "announce":
            assert incarnation is not None
            seq = await self.server_store.namespace_seq(NAMESPACE)
            self.note(f"client {node.index} hears that the server is at seq {seq}")
            incarnation.spawn(
                f"cursor_announced({seq})", lambda c: _none(c.sync.cursor_announced(seq))
            )
        elif kind == "focus":
            assert incarnation is not None
            incarnation.spawn("notify('focus')", lambda c: _none(c.sync.notify("focus")))
        elif kind == "fault":
            node.armed.append((str(step.arg("fault")), str(step.arg("endpoint"))))
        elif kind == "offline":
            node.link_up = False
        elif kind == "online":
            node.link_up = True
            if incarnation is not None and incarnation.client is not None:
                incarnation.spawn("notify('online')", lambda c: _none(c.sync.notify("online")))
        elif kind == "crash":
            if incarnation is None:
                self.note(f"client {node.index} is down already")
            else:
                self.crash_client(node)
        elif kind == "restart":
            if incarnation is not None:
                self.note(f"client {node.index} is running: nothing happens")
            else:
                await self.start_client(node)
        elif kind == "replay":
            await self._replay(rng)
        elif kind == "server_crash":
            await self._server_down(float(step.arg("down", 0.0)))
        await anyio.sleep(step.after)

    async def _inside(
        self, incarnation: _Incarnation, what: str, work: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``work`` as a task of the incarnation (a crash cancels it) and wait for it."""

        async def operation(client: Client) -> None:
            await work()

        await incarnation.spawn(what, operation).wait()

    def _sync(self, incarnation: _Incarnation, kind: str) -> None:
        async def operation(client: Client) -> str:
            call: Callable[[], Awaitable[Any]] = getattr(client.sync, kind)
            return _summary(await call())

        incarnation.spawn(f"sync.{kind}()", operation)

    async def _write(
        self, node: _ClientNode, incarnation: _Incarnation, kind: str, rng: random.Random
    ) -> None:
        client = incarnation.client
        assert client is not None
        node.writes += 1
        label = f"c{node.index}.{node.writes}"
        local: dict[str, dict[str, Any]] = {
            str(r["id"]): r for r in await client.table(RESOURCE).query()
        }
        existing = sorted(local)

        def pick(prefer_existing: float) -> str:
            if existing and rng.random() < prefer_existing:
                return rng.choice(existing)
            return rng.choice(RECORD_IDS)

        title = f"t{label}"
        guard: dict[str, Any] | None = None
        operation = kind
        record: dict[str, Any]
        if kind == "insert":
            free = [i for i in RECORD_IDS if i not in local]
            record_id = rng.choice(free) if free and rng.random() < 0.9 else pick(1.0)
            record = {
                "id": record_id,
                "title": title,
                "done": rng.random() < 0.3,
                "n": rng.randint(0, 9),
                "rev": label,
            }
        elif kind in ("merge", "guarded"):
            record_id = pick(0.85)
            record = {"id": record_id, "rev": label}
            for name in rng.sample(("title", "done", "n"), rng.randint(1, 2)):
                record[name] = {"title": title, "done": rng.random() < 0.5, "n": rng.randint(0, 9)}[
                    name
                ]
            if record_id not in local and "title" not in record and rng.random() < 0.7:
                record["title"] = title
            operation = "merge"
            if kind == "guarded":
                current = local.get(record_id) or {}
                if rng.random() < 0.7 and "rev" in current:
                    guard = {"rev": current["rev"]}
                else:
                    guard = {"done": bool(current.get("done", False))}
        elif kind == "replace":
            record_id = pick(0.8)
            record = {"id": record_id, "title": title, "done": rng.random() < 0.5, "rev": label}
        elif kind == "delete":
            record_id = pick(0.9)
            record = {"id": record_id}
        elif kind == "vetoed":  # valid, but the clients' policy refuses to send it
            record_id = pick(0.7)
            record = {"id": record_id, "title": f"{VETOED}{label}", "rev": label}
            operation = "merge" if record_id in local else "insert"
        else:  # invalid: what the local schema must refuse
            record_id = pick(0.5)
            bad = rng.choice(("title-type", "unknown-field", "missing-title", "n-type"))
            operation = "insert" if bad == "missing-title" else "replace"
            record = {"id": record_id, "title": title, "rev": label}
            if bad == "title-type":
                record["title"] = 12
            elif bad == "unknown-field":
                record["colour"] = "red"
            elif bad == "missing-title":
                del record["title"]
            else:
                record["n"] = "seven"
        shown = dict(record)
        text = f"client {node.index} {operation}s {record_id}"
        if operation != "delete":
            text += f" {_fmt(shown)}"
        if guard is not None:
            text += f" if {guard}"
        self.last_mutation_id = None
        table = client.table(RESOURCE)
        before = self.last_mutation_id
        try:
            if operation == "insert":
                await table.insert(record, guard=guard)
            elif operation == "merge":
                await table.merge(record, guard=guard)
            elif operation == "replace":
                await table.replace(record, guard=guard)
            else:
                await table.delete(record_id, guard=guard)
        except DatafnError as exc:
            code = getattr(exc, "code", type(exc).__name__)
            self.note(f"{text}: refused locally ({code})", records=[record_id])
            return
        except Exception as exc:
            if not incarnation.dead:
                self.engine_error(node.index, f"a local {operation}", exc)
            return
        mutation_id = self.last_mutation_id
        if mutation_id is None or mutation_id == before:
            self.note(f"{text}: no mutation was reported", records=[record_id])
            return
        if kind == "invalid":
            self.note(
                f"{text}: accepted locally although the schema forbids it", records=[record_id]
            )
        self.stats["writes"] += 1
        write = _Write(
            label,
            node.index,
            node.writes,
            operation,
            record_id,
            label if operation != "delete" else None,
            mutation_id,
            self.step_index,
            guard,
        )
        self.writes[label] = write
        self.by_mutation[(node.client_id, mutation_id)] = write
        self.note(f"{text} → write {label} (queued)", records=[record_id])

    async def _discard(self, node: _ClientNode, incarnation: _Incarnation) -> None:
        client = incarnation.client
        assert client is not None
        sync: Any = client.sync
        if not hasattr(sync, "pending") or not hasattr(sync, "discard"):
            self.note("this client has no sync.pending()/discard(): nothing happens")
            return
        try:
            pending = await sync.pending()
        except DatafnError as exc:
            self.note(f"sync.pending() failed: {exc}")
            return
        if not pending:
            self.note(f"client {node.index} has nothing queued")
            return
        first = pending[0]
        mutation_id = getattr(first, "mutation_id", None)
        if mutation_id is None and isinstance(first, dict):
            mutation_id = first.get("mutation_id") or first.get("mutationId")
        if mutation_id is None:
            self.note("sync.pending() gave an entry without a mutation id")
            return
        write = self.by_mutation.get((node.client_id, mutation_id))
        try:
            await sync.discard(mutation_id)
        except KeyError:
            self.note(f"client {node.index}: {mutation_id[:8]} is no longer queued")
            return
        except BaseException as exc:
            # whatever the call said, a write it took off the queue was discarded by the app
            still = {getattr(p, "mutation_id", None) for p in await node.store.changelog()}
            if write is not None and mutation_id not in still:
                self.discarded.add(write.label)
            if isinstance(exc, DatafnError):
                self.note(f"sync.discard() failed: {exc}")
                return
            raise
        label = write.label if write is not None else mutation_id[:8]
        if write is not None:
            self.discarded.add(write.label)
        self.note(
            f"client {node.index} discards {label}",
            records=[write.record_id] if write is not None else [],
        )

    async def _replay(self, rng: random.Random) -> None:
        candidates = [
            r for r in self.requests if r.delivered and r.endpoint in ("push", "pull", "clone")
        ]
        if not candidates:
            self.note("no request to replay")
            return
        request = rng.choice(candidates)
        self.note(
            f"network replays client {request.client}'s request #{request.number} "
            f"({request.what}) late",
            records=self._records_of(request.body) if request.endpoint == "push" else [],
        )
        self.stats["faults"] += 1
        answer = await self._deliver(request)
        if answer is not None:
            status, _, content = answer
            node = self.nodes[request.client - 1]
            self.note(
                "the replay's answer is thrown away ("
                + self._describe_answer(request.endpoint, status, content, node.client_id)
                + ")"
            )

    # -- settling and the checks --------------------------------------------------------------

    async def settle(self) -> None:
        self.step_index = None
        self.faults_on = False
        self.trace.append(
            TraceLine(
                round(self.now(), 6),
                None,
                "settle: faults off, every client online and running, sync rounds until quiet",
                is_step=True,
            )
        )
        for node in self.nodes:
            node.armed.clear()
            node.link_up = True
        if self.server is None or self.server.dead:
            await self.start_server()
        for node in self.nodes:
            node.wants_sync = False
            if node.incarnation is None:
                await self.start_client(node)
        for node in self.nodes:
            inc = node.incarnation
            if inc is not None and inc.client is not None and inc.client.sync.running:
                self.note(f"client {node.index} calls sync.stop()")
                with anyio.move_on_after(SETTLE_OPERATION_LIMIT):
                    await inc.client.sync.stop()
        await anyio.sleep(1.0)
        quiet = False
        rounds = 0
        errors: dict[int, str] = {}
        while rounds < self.options.settle_rounds:
            rounds += 1
            commits = len(self.commits)
            errors = {}
            for node in self.nodes:
                if node.incarnation is None:
                    await self.start_client(node)
                inc = node.incarnation
                if inc is None or inc.client is None:
                    errors[node.index] = "the client is not running"
                    continue
                failure: list[str] = []

                async def round_of(client: Client, failure: list[str] = failure) -> str:
                    try:
                        with anyio.fail_after(SETTLE_OPERATION_LIMIT):
                            await client.sync.sync_all()
                        return ""
                    except TimeoutError:
                        failure.append(f"sync_all() did not end in {SETTLE_OPERATION_LIMIT} s")
                        return " (timed out)"
                    except DatafnError as exc:
                        failure.append(f"sync_all() failed: {type(exc).__name__}: {exc}")
                        raise

                done = inc.spawn("sync_all()", round_of)
                await done.wait()
                if failure:
                    errors[node.index] = failure[0]
            pending = {}
            for node in self.nodes:
                inc = node.incarnation
                if inc is not None and inc.client is not None:
                    count = await node.store.pending_count()
                    if count:
                        pending[node.index] = count
            if not errors and not pending and len(self.commits) == commits:
                quiet = True
                break
        if not quiet:
            details = [f"client {i}: {e}" for i, e in sorted(errors.items())]
            for node in self.nodes:
                count = await node.store.pending_count()
                if count:
                    details.append(f"client {node.index} still has {count} queued write(s)")
            if len(self.commits) != commits:
                details.append("the server was still receiving changes")
            self.violation(
                "stuck",
                f"not settled after {rounds} sync rounds: " + "; ".join(details or ["?"]),
            )
        self.stats["settle_rounds"] = rounds

    async def server_records(self) -> dict[str, dict[str, Any]]:
        rows = await self.server_store.clone_page(NAMESPACE, RESOURCE, None, 1_000_000)
        return {str(r["id"]): dict(r) for r in rows}

    async def check_recovered(self) -> None:
        """Every stuck episode the watchdog reported has ended once the run settled: a last
        look of each watchdog (the clients are synced now) must find nothing stuck. Episodes
        of crashed incarnations end with them."""
        for index, (incarnation, cause, since) in sorted(self.stuck.items()):
            client = incarnation.client
            if incarnation.dead or client is None:
                continue
            with anyio.move_on_after(SETTLE_OPERATION_LIMIT):
                await client.sync.watchdog.check()
            if index in self.stuck:
                self.violation(
                    "unrecovered",
                    f"client {index} reported sync stuck ({cause}) at {since:.1f} s and had "
                    "not recovered after settling",
                )

    async def check(self) -> None:
        server = await self.server_records()
        # revs and deletes that reached the server's change log, by commit
        revs: dict[str, list[tuple[int, int, str, str]]] = {}  # rev → (commit, seq, op, by)
        for commit in self.commits:
            for change in commit.changes:
                rev = (change.data or {}).get("rev")
                if isinstance(rev, str):
                    by = next(
                        (
                            mid
                            for mid, m, applied in commit.mutations
                            if applied and m.id == change.id and (m.record or {}).get("rev") == rev
                        ),
                        "?",
                    )
                    revs.setdefault(rev, []).append((commit.number, change.seq, change.op, by))
        # 2. nothing applied twice; nothing refused applied
        for rev, seen in sorted(revs.items()):
            if len(seen) > 1 and rev in self.writes:
                write = self.writes[rev]
                where = ", ".join(
                    f"seq {seq} ({self._by(write, by)} {op} by {self.commits[c - 1].client_id}, "
                    f"commit {c})"
                    for c, seq, op, by in seen
                )
                self.violation(
                    "applied-twice",
                    f"write {rev} (client {write.client} {write.operation} {write.record_id}) "
                    f"is in the server's change log {len(seen)} times: {where}",
                    [write.record_id],
                )
        for (client_id, mutation_id), commits in sorted(self.applied.items()):
            changed = [
                c
                for c in commits
                if any(
                    m == mutation_id and applied and self._changed(self.commits[c - 1], p)
                    for m, p, applied in self.commits[c - 1].mutations
                )
            ]
            if len(changed) > 1:
                self.violation(
                    "applied-twice",
                    f"{self.label(client_id, mutation_id)} of {client_id} changed the server in "
                    f"{len(changed)} commits ({', '.join(map(str, changed))})",
                )
        for (client_id, mutation_id), code in sorted(self.reported.items()):
            reported_write = self.by_mutation.get((client_id, mutation_id))
            applied_in = self.applied.get((client_id, mutation_id))
            in_log = (
                reported_write is not None
                and reported_write.rev is not None
                and reported_write.rev in revs
            )
            if applied_in or in_log:
                what = reported_write.label if reported_write is not None else mutation_id
                records = [reported_write.record_id] if reported_write is not None else []
                self.violation(
                    "applied-twice",
                    f"{what} of {client_id} was reported rejected ({code}) but the server "
                    "applied it",
                    records,
                )
        # 1. no acknowledged write lost
        for label, write in self.writes.items():
            node = self.nodes[write.client - 1]
            key = (node.client_id, write.mutation_id)
            if key in self.applied or (write.rev is not None and write.rev in revs):
                continue
            if key in self.reported or label in self.discarded:
                continue
            if self._covered_by_clone_up(write, node.client_id):
                continue
            self.violation(
                "lost",
                f"write {label} (client {write.client} {write.operation} {write.record_id}) never "
                "reached the server, and the client did not report it rejected",
                [write.record_id],
            )
        # the server holds only records its schema accepts
        spec = self.schema.resource(RESOURCE)
        for record_id, record in sorted(server.items()):
            try:
                spec.validate_record(dict(record))
            except ValidationFailed as exc:
                self.violation(
                    "invalid-record",
                    f"the server holds {record_id} as {_fmt(record)}, which its schema refuses "
                    f"({exc.code} at {exc.path})",
                    [record_id],
                )
        # a write refused for a conflict is a dead letter of its client, never dropped
        for index, mutation_id in sorted(self.conflict_rejected):
            node = self.nodes[index - 1]
            kept = {e.mutation_id for e in await node.store.dead_letters()}
            refused = self.by_mutation.get((node.client_id, mutation_id))
            if refused is not None and refused.label in self.discarded:
                continue  # the app discarded the dead letter
            if mutation_id not in kept:
                self.violation(
                    "conflict-dropped",
                    f"{self.label(node.client_id, mutation_id)} of {node.client_id} was refused "
                    "for a conflict but is not among its dead letters",
                )
        # 3. convergence
        for node in self.nodes:
            inc = node.incarnation
            pending = await node.store.pending_count()
            if pending:
                self.violation(
                    "diverged", f"client {node.index} still has {pending} queued write(s)"
                )
            if inc is None:
                continue
            for resource in self.synced_resources():
                if resource == RESOURCE:
                    theirs_all = server
                else:
                    rows = await self.server_store.clone_page(NAMESPACE, resource, None, 10**6)
                    theirs_all = {str(r["id"]): dict(r) for r in rows}
                local_rows = await node.store.records_after(resource, None, 1_000_000)
                local = {str(r["id"]): dict(r) for r in local_rows}
                for record_id in sorted(set(local) | set(theirs_all)):
                    mine, theirs = local.get(record_id), theirs_all.get(record_id)
                    if mine != theirs:
                        self.violation(
                            "diverged",
                            f"client {node.index} holds {record_id} as {_fmt(mine)}, the server "
                            f"as {_fmt(theirs)}",
                            [record_id],
                        )

    def synced_resources(self) -> list[str]:
        """The resources every client keeps locally (the workload's, and any the schema adds)."""
        return [r.name for r in self.schema.resources if not r.is_remote_only]

    def _by(self, write: _Write, mutation_id: str) -> str:
        if mutation_id == write.mutation_id:
            return "its own mutation:"
        if mutation_id.startswith("cloneup:"):
            return "a cloneUp"
        return f"mutation {mutation_id[:8]}:"

    def _changed(self, commit: _Commit, mutation: PendingMutation) -> bool:
        """Whether ``mutation`` produced a change of ``commit``: each change is given to one
        applied mutation of its record (by its rev; a delete by its record), the latest in
        the batch first — a replay reported as applied earlier in the batch than the write
        that made the change must not be taken for it."""
        if commit.producers is None:
            commit.producers = set()
            taken: set[int] = set()
            for change in reversed(commit.changes):
                for index in range(len(commit.mutations) - 1, -1, -1):
                    _mid, candidate, applied = commit.mutations[index]
                    if index in taken or not applied or not _produces(candidate, change):
                        continue
                    taken.add(index)
                    commit.producers.add(id(candidate))
                    break
        return id(mutation) in commit.producers

    def _covered_by_clone_up(self, write: _Write, client_id: str) -> bool:
        """A write whose record a cloneUp uploaded later (with the rev of this write or of a
        later write of the same client to the same record) reached the server in it; one whose
        cloneUp was refused was reported."""
        for commit in self.commits:
            if commit.client_id != client_id:
                continue
            for mutation_id, mutation, applied in commit.mutations:
                if not mutation_id.startswith("cloneup:") or mutation.id != write.record_id:
                    continue
                rev = (mutation.record or {}).get("rev")
                later = self.writes.get(rev) if isinstance(rev, str) else None
                if (
                    later is not None
                    and later.client == write.client
                    and later.order >= write.order
                ) and (applied or (client_id, mutation_id) in self.reported):
                    return True
        return False

    # -- the whole run -------------------------------------------------------------------------

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        async with anyio.create_task_group() as hosts:
            self.hosts = hosts
            try:
                await self.start_server()
                for node in self.nodes:
                    await self.start_client(node)
                for index, step in enumerate(self.steps):
                    await self.run_step(index, step)
                await self.settle()
                await self.check()
                await self.check_recovered()
            finally:
                hosts.cancel_scope.cancel()


async def _none(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _summary(result: Any) -> str:
    if result is None:
        return ""
    name = type(result).__name__
    fields = []
    for key in ("applied", "rejected", "changes", "uploaded", "records", "recloned"):
        value = getattr(result, key, None)
        if value is None:
            continue
        if isinstance(value, list):
            value = len(value)
        if value in (0, {}, []):
            continue
        fields.append(f"{key} {value}")
    return f" ({name}{': ' + ', '.join(fields) if fields else ''})"


_PYPROJECT: Path | None = None


def _empty_pyproject() -> Path:
    """A pyproject.toml with an empty ``[tool.datafn]``: no developer configuration leaks in."""
    global _PYPROJECT
    if _PYPROJECT is None or not _PYPROJECT.exists():
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="datafn-simulation-"))
        path = folder / "pyproject.toml"
        path.write_text('[project]\nname = "simulation"\n\n[tool.datafn]\n', encoding="utf-8")
        _PYPROJECT = path
    return _PYPROJECT


class _DeterministicIds:
    """``uuid.uuid4`` during a run: ids from the seed, so that a run replays exactly."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"uuid:{seed}")

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)


def run_simulation(
    seed: int, options: SimulationOptions, steps: Sequence[Step] | None = None
) -> SimulationResult:
    """Run one simulation (see :func:`datafn.testing.simulation.simulate`)."""
    from datafn.testing.simulation.workload import generate_steps

    config = SwarmConfig.from_seed(seed, options)
    if steps is None:
        steps = generate_steps(seed, options, config)
    run = _Run(seed, options, config, steps)
    started = time.perf_counter()
    threads = set(threading.enumerate())
    original = uuid.uuid4
    uuid.uuid4 = _DeterministicIds(seed)
    try:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            try:
                runner.run(run.main())
            except SimulationDeadlock as exc:
                run.violation("stuck", f"the simulation deadlocked: {exc}")
            except BaseExceptionGroup as group:
                deadlock = group.subgroup(SimulationDeadlock)
                if deadlock is None:
                    raise
                run.violation("stuck", "the simulation deadlocked")
    finally:
        uuid.uuid4 = original
    extra = [t.name for t in threading.enumerate() if t not in threads]
    if extra:
        run.violation(
            "engine-error",
            f"threads were started during the run ({', '.join(sorted(extra))}): a run with "
            "threads is not deterministic",
        )
    run.stats["virtual_seconds"] = round(run.now(), 3)
    run.stats["wall_seconds"] = round(time.perf_counter() - started, 3)
    run.stats["steps"] = len(steps)
    return SimulationResult(
        seed=seed,
        options=options,
        config=config,
        steps=list(steps),
        violations=run.violations,
        trace=run.trace,
        stats=run.stats,
    )
