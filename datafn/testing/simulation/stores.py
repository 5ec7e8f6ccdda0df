"""Store wrappers of the simulator: the durable store outlives the incarnations that use it.

A crashed incarnation must not touch its files any more (a killed process does not run its
``finally`` blocks): the wrapper of each incarnation makes every store call of a dead
incarnation wait forever (it is being cancelled, so the call ends at once). The server's
wrapper also reports every commit to the simulator.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from datafn.client.store import ClientStore
from datafn.server.store import Change, PendingMutation, PushOutcome, ServerStore

__all__ = ["guarded_client_store", "guarded_server_store"]

CommitObserver = Callable[[str, str, Sequence[PendingMutation], PushOutcome, list[Change]], None]


def _async_methods(base: type) -> list[str]:
    return [
        name
        for name in dir(base)
        if not name.startswith("_") and inspect.iscoroutinefunction(getattr(base, name))
    ]


def _forward(name: str) -> Callable[..., Awaitable[Any]]:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._sim_dead():
            await anyio.sleep_forever()
        return await getattr(self._sim_inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


def _wrapper_class(base: type, overrides: dict[str, Any]) -> type:
    namespace: dict[str, Any] = {name: _forward(name) for name in _async_methods(base)}
    namespace.update(overrides)

    def __init__(self: Any, inner: Any, dead: Callable[[], bool], *extra: Any) -> None:
        self._sim_inner = inner
        self._sim_dead = dead
        self._sim_extra = extra

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("_sim_"):
            raise AttributeError(name)
        return getattr(self._sim_inner, name)

    namespace["__init__"] = __init__
    namespace["__getattr__"] = __getattr__
    return type(f"Simulated{base.__name__}", (base,), namespace)


_client_class: type | None = None
_server_class: type | None = None


def guarded_client_store(store: ClientStore, dead: Callable[[], bool]) -> ClientStore:
    """``store`` as one incarnation of a client sees it: unusable once ``dead()``."""
    global _client_class
    if _client_class is None:
        _client_class = _wrapper_class(ClientStore, {})
    wrapped: ClientStore = _client_class(store, dead)
    return wrapped


async def _apply_push(
    self: Any, namespace: str, client_id: str, mutations: Sequence[PendingMutation]
) -> PushOutcome:
    if self._sim_dead():
        await anyio.sleep_forever()
    inner: ServerStore = self._sim_inner
    outcome = await inner.apply_push(namespace, client_id, mutations)
    changes: list[Change] = []
    if outcome.cursor > outcome.cursor_before:
        names = list(inner.schema.resource_names)
        changes = await inner.changes_since(
            namespace,
            dict.fromkeys(names, outcome.cursor_before),
            outcome.cursor - outcome.cursor_before,
        )
    observer: CommitObserver = self._sim_extra[0]
    observer(namespace, client_id, mutations, outcome, changes)
    return outcome


def guarded_server_store(
    store: ServerStore, dead: Callable[[], bool], observer: CommitObserver
) -> ServerStore:
    """``store`` as one incarnation of the server sees it; ``observer`` hears every push."""
    global _server_class
    if _server_class is None:
        _server_class = _wrapper_class(
            ServerStore,
            {
                "apply_push": _apply_push,
                # the server sets the conflict rules on the store it holds: the inner store's
                "conflict_rules": property(
                    lambda self: self._sim_inner.conflict_rules,
                    lambda self, rules: setattr(self._sim_inner, "conflict_rules", rules),
                ),
            },
        )
    wrapped: ServerStore = _server_class(store, dead, observer)
    # ServerStore.__init__ is not run: the attributes the server reads come from the inner
    # store through __getattr__ (url, schema, config, name)
    return wrapped
