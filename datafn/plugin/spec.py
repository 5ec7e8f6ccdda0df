"""Every hook specification of datafn: reading this file is reading the architecture.

Each specification says what it is for, its parameters, what it returns, when it is called and
its failure policy:

- **fail-closed**: an exception (or a veto) aborts the operation the hook guards; the error
  names the plugin that raised it.
- **fail-open**: an exception is logged with the plugin's name and reported once as a
  ``plugin_error`` event; the operation goes on as if the implementation had returned nothing.
- **propagates**: an exception is wrapped in :class:`~datafn.errors.HookFailed` naming the plugin
  and raised to the caller (used where there is no sensible way to go on).

Hooks marked *async* may be implemented by plain functions or coroutines; the kernel's async
caller (:class:`datafn.plugin.manager.AsyncHookCaller`) awaits them, bounds each call with the
``hook-timeout`` setting and applies *firstresult* after awaiting. The other hooks are
synchronous and called through pluggy directly.

All implementations may accept any subset of the named arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datafn.plugin import hookspec

if TYPE_CHECKING:
    import click

    from datafn.config import Config, SettingsRegistry
    from datafn.context import Identity, RequestContext, SyncContext
    from datafn.events import Event
    from datafn.registry import Registry

# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@hookspec
def datafn_add_settings(settings: SettingsRegistry) -> None:
    """Declare a plugin's own typed settings section.

    :param settings: call ``settings.add("guard", GuardSettings)`` with a pydantic model; its
        values are read from ``[tool.datafn.guard]`` (kebab-case keys), validated, and errors
        name the full key path (``tool.datafn.guard.max-batch-size: …``).

    Called once, while the configuration is loaded, before any other plugin hook.
    Return value: ignored. Failure policy: propagates (a plugin that cannot declare its
    settings cannot run).
    """


@hookspec
def datafn_configure(config: Config) -> None:
    """React to the final, validated configuration.

    :param config: the effective configuration; ``config.section("guard")`` returns a plugin's
        validated settings model.

    Called once after configuration is loaded and every plugin is registered.
    Return value: ignored. Failure policy: propagates.
    """


@hookspec
def datafn_add_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``datafn`` command line.

    :param cli: the root :class:`click.Group`; call ``cli.add_command(...)``.

    Called when the ``datafn`` command starts. Return value: ignored. Failure policy:
    propagates.
    """


# ---------------------------------------------------------------------------------------------
# registries: backends selected by name from configuration
# ---------------------------------------------------------------------------------------------


@hookspec
def datafn_register_client_stores(registry: Registry[Any]) -> None:
    """Register local (client-side) stores by name.

    :param registry: ``registry.add("sqlite", factory)``; ``factory(url, schema, config)``
        returns a client store. The ``store`` setting selects one by its URL scheme.

    Called once, the first time a client store is needed. Return value: ignored. Failure
    policy: propagates.
    """


@hookspec
def datafn_register_transports(registry: Registry[Any]) -> None:
    """Register client→server transports by name (``"http"`` is built in).

    :param registry: ``registry.add(name, factory)``; ``factory(remote, config)`` returns a
        transport with ``async request(endpoint, payload)`` and ``aclose()``.

    Called once, the first time a transport is needed. Return value: ignored. Failure policy:
    propagates.
    """


@hookspec
def datafn_register_realtime_channels(registry: Registry[Any]) -> None:
    """Register real-time channels (client side of the WebSocket) by name.

    :param registry: ``registry.add("websockets", factory)``; the ``realtime-channel`` setting
        selects one when ``sync.ws`` is on.

    Called once, the first time a channel is needed. Return value: ignored. Failure policy:
    propagates.
    """


@hookspec
def datafn_register_triggers(registry: Registry[Any]) -> None:
    """Register automatic sync triggers by name (after-write push, interval, connectivity …).

    :param registry: ``registry.add(name, factory)``; ``factory(engine)`` returns an object with
        ``async run()`` that the engine starts in its task group and cancels on stop.

    Called once when the sync engine starts. Return value: ignored. Failure policy: propagates.
    """


@hookspec
def datafn_register_server_stores(registry: Registry[Any]) -> None:
    """Register server stores by name (``memory`` is built in; ``sqlite``/``postgresql`` come
    with ``datafn-sqlmodel``).

    :param registry: ``registry.add(name, factory)``; ``factory(url, schema, config)`` returns
        a server store. The server's ``database`` URL selects one by its scheme.

    Called once when the server starts. Return value: ignored. Failure policy: propagates.
    """


@hookspec
def datafn_register_notification_buses(registry: Registry[Any]) -> None:
    """Register notification buses that carry "namespace N reached seq S" between server
    processes (``memory`` is built in, in-process only).

    :param registry: ``registry.add(name, factory)``; ``factory(url, config)`` returns a bus.

    Called once when the server starts. Return value: ignored. Failure policy: propagates.
    """


@hookspec
def datafn_add_server_routes(server: Any, routes: list[Any]) -> None:
    """Add ASGI routes (e.g. the WebSocket endpoint) to a DataFn server.

    :param server: the :class:`~datafn.server.DatafnServer` being built (its ``base_path``,
        ``settings``, ``bus`` and ``authenticate`` are there to use).
    :param routes: append Starlette routes to it; mount them under ``server.base_path``.

    Called once per server, while its application is built. Return value: ignored. Failure
    policy: propagates.
    """


# ---------------------------------------------------------------------------------------------
# phases: each sync phase and the lifecycle loop run through a hook (async, firstresult);
# the defaults are built-in plugins registered with trylast=True, so a plugin replaces a phase
# by implementing its hook and returning a result.
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def datafn_sync_seed(engine: Any, data: dict[str, list[dict[str, Any]]]) -> Any:
    """Run the seed phase: send server-side initial data (async, firstresult).

    :param engine: the client's sync engine.
    :param data: records to seed, per resource.
    :return: a ``SeedResult``; the first non-None result wins.

    Called by ``client.sync.seed()``. Failure policy: propagates (the phase fails, is retried
    by its caller where that applies, and ``sync_failed`` is emitted).
    """


@hookspec(firstresult=True)
def datafn_sync_clone(engine: Any, resources: list[str]) -> Any:
    """Run the clone phase: full download of resources not yet hydrated (async, firstresult).

    :param engine: the client's sync engine.
    :param resources: the resources to clone.
    :return: a phase report; the first non-None result wins.

    Called on start for unhydrated resources, by ``client.sync.clone()`` and by reconcile.
    Failure policy: propagates.
    """


@hookspec(firstresult=True)
def datafn_sync_pull(engine: Any, resources: list[str]) -> Any:
    """Run the pull phase: cursor-based incremental download (async, firstresult).

    :param engine: the client's sync engine.
    :param resources: the resources to pull (their per-resource cursors are in the store).
    :return: a phase report; the first non-None result wins.

    Called after clone, by triggers and by ``client.sync.pull()``. Failure policy: propagates.
    """


@hookspec(firstresult=True)
def datafn_sync_push(engine: Any) -> Any:
    """Run the push phase: upload the local changelog in batches (async, firstresult).

    :param engine: the client's sync engine.
    :return: a phase report; the first non-None result wins.

    Called after local writes (debounced), on ``push-interval`` and by ``client.sync.push()``.
    Failure policy: propagates.
    """


@hookspec(firstresult=True)
def datafn_sync_clone_up(engine: Any, resources: list[str]) -> Any:
    """Run the cloneUp phase: bulk upload of data created while there was no server
    (async, firstresult).

    :param engine: the client's sync engine.
    :param resources: the resources whose local records are uploaded.
    :return: a phase report; the first non-None result wins.

    Called by ``client.sync.clone_up()``. Failure policy: propagates.
    """


@hookspec(firstresult=True)
def datafn_sync_reconcile(engine: Any, resources: list[str]) -> Any:
    """Run the reconcile phase: compare local and server counts, re-clone mismatches
    (async, firstresult).

    :param engine: the client's sync engine.
    :param resources: the resources to compare.
    :return: a phase report; the first non-None result wins.

    Called by ``client.sync.reconcile()``. Failure policy: propagates.
    """


@hookspec(firstresult=True)
def datafn_sync_loop(engine: Any) -> Any:
    """Run the sync engine's lifecycle loop: seed → clone → pull → push → cloneUp →
    reconcile, then react to triggers until stopped (async, firstresult).

    :param engine: the client's sync engine.
    :return: any non-None value once the loop has ended (it runs until cancelled).

    Called by ``client.sync.start()`` inside the engine's task group; ``start()`` returns
    once ``engine.start_lifecycle()`` (the first round) has ended, so an implementation calls
    it first (or ends, or raises). Failure policy: the engine reports a failure
    (``last_error``, ``sync_failed`` with phase ``loop``) and calls the hook again after a
    growing delay.
    """


# ---------------------------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------------------------


@hookspec
def datafn_before_sync(phase: str, payload: Any, context: SyncContext) -> Any:
    """Inspect, replace or veto the payload of a sync operation before it runs (async).

    :param phase: ``"seed"``, ``"clone"``, ``"pull"``, ``"push"``, ``"clone_up"`` or
        ``"reconcile"``.
    :param payload: on the client, the request about to be sent; on the server, the request
        received (wire form, camelCase keys).
    :param context: side, client id, namespace and identity (server side), resources.
    :return: ``None`` to let the payload through, a replacement payload (handed to the next
        implementation and then used), or a :class:`~datafn.errors.Veto` to abort.

    Called in order (``tryfirst`` first) before every sync operation, on both sides.
    Failure policy: **fail-closed** — an exception, a returned or raised ``Veto`` or a timeout
    aborts the operation with :class:`~datafn.errors.SyncVetoed` naming the plugin; the phase
    does not run and ``sync_failed`` is emitted. On the server the veto becomes a
    ``FORBIDDEN`` (or the veto's code) envelope.
    """


@hookspec
def datafn_after_sync(phase: str, payload: Any, result: Any, context: SyncContext) -> None:
    """Observe the result of a sync operation (async).

    :param phase: as for ``datafn_before_sync``.
    :param payload: the payload that was sent (client) or received (server).
    :param result: the operation's result (wire form on the server; the record lists of a
        clone answer are sequences of dicts, read lazily from the store's JSON texts, so
        test them with ``collections.abc.Sequence``, not ``list``).
    :param context: as for ``datafn_before_sync``.

    Called after every successful sync operation, on both sides. Return value: ignored.
    Failure policy: **fail-open** — a failing or hung implementation is logged with the
    plugin's name and reported as a ``plugin_error`` event; the result is applied anyway.
    """


@hookspec(firstresult=True)
def datafn_authenticate(headers: dict[str, str], action: str) -> Identity | None:
    """Authenticate a server request or WebSocket (async, firstresult).

    :param headers: the request headers, lower-cased names.
    :param action: ``status``, ``clone``, ``pull``, ``push``, ``reconcile``, ``seed`` or ``ws``.
    :return: an :class:`~datafn.context.Identity`, or ``None`` when this plugin does not
        recognise the credentials. Raise :class:`~datafn.errors.ProtocolError` with HTTP
        status 401 to refuse outright.

    Called for every request and socket, after the body is parsed. When no plugin is
    configured to authenticate, requests are anonymous. Failure policy: fail-closed (an
    exception refuses the request).
    """


@hookspec
def datafn_authorize(context: RequestContext, action: str, payload: Any) -> bool | None:
    """Decide whether an authenticated request may run (async).

    :param context: identity, namespace, headers of the request.
    :param action: the route's action (``push``, ``seed`` …).
    :param payload: the parsed request body.
    :return: ``False`` to deny (403 ``FORBIDDEN``), ``True`` or ``None`` to allow. Every
        implementation must allow.

    Called for every request after authentication, before schema validation. Failure policy:
    **fail-closed** — an exception denies the request.
    """


@hookspec(firstresult=True)
def datafn_resolve_namespace(identity: Identity | None, headers: dict[str, str]) -> str | None:
    """Map an authenticated identity to its namespace (async, firstresult).

    :param identity: the authenticated identity, ``None`` for anonymous requests.
    :param headers: the request headers, lower-cased names.
    :return: the namespace (e.g. ``"user:42"``), or ``None`` to leave it to the next plugin;
        when no plugin answers, the namespace is ``"datafn"``.

    Called for every request and socket after authentication. The namespace never comes from
    the request body. Failure policy: fail-closed (an exception refuses the request with
    ``NAMESPACE_INVALID``).
    """


@hookspec(firstresult=True)
def datafn_resolve_conflict(
    resource: str,
    record_id: str,
    operation: str,
    fields: list[str],
    current: dict[str, Any] | None,
    incoming: dict[str, Any] | None,
    base_seq: int,
    client_id: str | None,
    other_client_id: str | None,
) -> dict[str, Any] | None:
    """Settle a write conflict on the server (synchronous, firstresult).

    :param resource: the resource written.
    :param record_id: the record's id.
    :param operation: the incoming write's operation (``insert``, ``merge``, ``replace``,
        ``delete``).
    :param fields: the fields both the incoming write and a change it did not see touched.
    :param current: the record as stored now (None when it was deleted).
    :param incoming: what the write sets: the delta of a merge, the record of an insert or
        replace, None for a delete.
    :param base_seq: the write's ``baseSeq``: its client had seen every change up to it.
    :param client_id: the client that sent the write.
    :param other_client_id: the client whose change the write would overwrite (None when
        unknown: a seed, a change older than provenance, or past the rows read).
    :return: the fields to apply, merged onto ``current`` (a full record when ``current`` is
        None); validated against the schema like a merge. ``None`` leaves the conflict to the
        resource's policy of ``[tool.datafn.server.conflicts]`` (``last-writer-wins`` or
        ``reject``). The change is reported as a conflict with ``resolution: "resolver"``.

    Called during a push, for each write with a ``baseSeq`` that conflicts (docs/concepts.md,
    "Conflicts"), inside the store's transaction while it holds the namespace's write lock,
    possibly on a worker thread: keep it quick and pure (no I/O, no awaiting). Failure
    policy: **fail-closed** — an exception (or a value that is neither a dict nor None) fails
    the whole push with a 500 ``INTERNAL`` naming the plugin: nothing of it is committed, the
    client keeps its writes and sends them again; a returned record that does not validate
    refuses that one write with the validation error.
    """


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------


@hookspec
def datafn_on_event(event: Event) -> None:
    """Observe every event the client emits (async).

    :param event: the :class:`~datafn.events.Event` (``event.name``, ``event.context``) —
        ``sync_started``, ``sync_applied``, ``sync_failed``, ``sync_retry``,
        ``connectivity_changed``, ``ws_connected``, ``ws_disconnected``, ``mutation_applied``,
        ``mutation_rejected``, ``mutation_discarded``, ``plugin_error``, ``sync_stuck``,
        ``sync_recovered``, ``conflict``.

    Called for every event, after the listeners registered with ``client.events.on``.
    Return value: ignored. Failure policy: **fail-open**.
    """
