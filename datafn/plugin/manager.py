"""The plugin manager: discovery, allow/block lists, validation and the one async hook caller.

pluggy calls implementations synchronously and does not await coroutines, so every async hook
(see :data:`datafn.plugin.spec.ASYNC_HOOKS`) goes through :class:`AsyncHookCaller`, which
awaits each implementation under a timeout, applies *firstresult* after awaiting and wraps
every failure in :class:`~datafn.errors.HookFailed` naming the plugin. The fail-closed and
fail-open policies of ``datafn_before_sync`` / ``datafn_after_sync`` are implemented here once.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import pluggy

from datafn.context import SyncContext
from datafn.errors import (
    ConfigError,
    HookFailed,
    MissingPluginError,
    PluginError,
    SyncVetoed,
    Veto,
)
from datafn.plugin import PROJECT_NAME, spec
from datafn.registry import Registry

__all__ = [
    "ASYNC_HOOKS",
    "REGISTRY_HOOKS",
    "AsyncHookCaller",
    "HookFailure",
    "PluginInfo",
    "PluginManager",
]

log = logging.getLogger("datafn.plugin")

#: Hooks whose implementations may be coroutines; they are called through AsyncHookCaller.
ASYNC_HOOKS = frozenset(
    {
        "datafn_sync_seed",
        "datafn_sync_clone",
        "datafn_sync_pull",
        "datafn_sync_push",
        "datafn_sync_clone_up",
        "datafn_sync_reconcile",
        "datafn_sync_loop",
        "datafn_before_sync",
        "datafn_after_sync",
        "datafn_authenticate",
        "datafn_authorize",
        "datafn_resolve_namespace",
        "datafn_on_event",
    }
)

#: Registry kind → the hook that fills it.
REGISTRY_HOOKS = {
    "client store": "datafn_register_client_stores",
    "transport": "datafn_register_transports",
    "realtime channel": "datafn_register_realtime_channels",
    "trigger": "datafn_register_triggers",
    "server store": "datafn_register_server_stores",
    "notification bus": "datafn_register_notification_buses",
}

#: The distribution whose entry points are the built-in plugins.
BUILTIN_DISTRIBUTION = "datafn"


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin as ``datafn plugins`` shows it."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool


@dataclass(frozen=True)
class HookFailure:
    """A fail-open hook implementation that raised or timed out."""

    hook: str
    plugin: str
    error: HookFailed


@dataclass
class _Blocked:
    name: str
    distribution: str | None
    reason: str


@dataclass
class PluginManager:
    """Owns the pluggy manager, the registries and the async hook caller.

    Use :meth:`load` to discover plugins from the ``datafn`` entry-point group.
    """

    hook_timeout: float | None = 30.0
    pm: pluggy.PluginManager = field(init=False)
    caller: AsyncHookCaller = field(init=False)
    _dists: dict[str, tuple[str, str]] = field(init=False, default_factory=dict)
    _builtin: set[str] = field(init=False, default_factory=set)
    _registries: dict[str, Registry[Any]] = field(init=False, default_factory=dict)
    skipped: list[_Blocked] = field(init=False, default_factory=list)
    #: every installed plugin (entry point) name → its distribution, loaded or not
    available: dict[str, str | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(spec)
        self.caller = AsyncHookCaller(self.pm, timeout=self.hook_timeout)

    # -- discovery ---------------------------------------------------------------------------

    def load(
        self,
        *,
        allow: Iterable[str] | None = None,
        block: Iterable[str] = (),
        autoload: bool = True,
        required: Iterable[str] = (),
        extra: Sequence[object] = (),
    ) -> None:
        """Register the entry-point plugins, then ``extra`` objects, then validate.

        :param allow: when given, third-party plugins not named here are not loaded (built-in
            plugins are always loaded unless blocked).
        :param block: plugin names never loaded (built-in ones included).
        :param autoload: ``False`` loads only built-ins and plugins named in ``allow``.
        :param required: plugin or distribution names (with an optional version specifier,
            ``datafn-guard>=0.1``) that must be registered, else MissingPluginError.
        :param extra: plugin objects registered directly (tests, embedding applications).
        """
        allowed = set(allow) if allow is not None else None
        blocked = set(block)
        seen: set[str] = set()
        # a distribution's METADATA is parsed once, not once per entry point and field
        metadata: dict[importlib.metadata.Distribution, tuple[str, str]] = {}
        for ep in importlib.metadata.entry_points(group=PROJECT_NAME):
            if ep.name in seen or self.pm.has_plugin(ep.name):
                continue
            seen.add(ep.name)
            dist = ep.dist
            dist_name = dist_version = None
            if dist is not None:
                if dist not in metadata:
                    fields = dist.metadata
                    metadata[dist] = (fields["Name"], fields["Version"])
                dist_name, dist_version = metadata[dist]
            self.available[ep.name] = dist_name
            builtin = dist_name == BUILTIN_DISTRIBUTION
            reason = None
            if ep.name in blocked:
                reason = "blocked"
            elif not builtin and allowed is not None and ep.name not in allowed:
                reason = "not in the allow list"
            elif not builtin and not autoload and not (allowed and ep.name in allowed):
                reason = "autoload disabled"
            if reason:
                self.skipped.append(_Blocked(ep.name, dist_name, reason))
                log.debug("plugin %s not loaded: %s", ep.name, reason)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from {dist_name or 'an unknown distribution'} "
                    f"failed to import: {type(exc).__name__}: {exc}",
                    plugin=ep.name,
                ) from exc
            self.register(plugin, name=ep.name)
            if dist_name is not None and dist_version is not None:
                self._dists[ep.name] = (dist_name, dist_version)
            if builtin:
                self._builtin.add(ep.name)
        for obj in extra:
            self.register(obj)
        self.check()
        self.require(required)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register one plugin object; errors name the plugin."""
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        try:
            registered = self.pm.register(plugin, name=label)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {label!r} is invalid: {exc}", plugin=label) from exc
        except ValueError as exc:
            raise PluginError(f"plugin {label!r}: {exc}", plugin=label) from exc
        if registered is None:  # blocked by pluggy itself
            raise PluginError(f"plugin {label!r} is blocked", plugin=label)
        for hook_caller in self.pm.get_hookcallers(plugin) or ():
            if hook_caller.name not in ASYNC_HOOKS:
                continue
            for impl in hook_caller.get_hookimpls():
                if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                    self.pm.unregister(plugin)
                    raise PluginError(
                        f"plugin {label!r}: {hook_caller.name} is an async hook and cannot be "
                        "a wrapper",
                        plugin=label,
                    )
        return registered

    def check(self) -> None:
        """Refuse implementations of hooks that do not exist (typos in ``datafn_*`` names)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(f"plugin {plugin!r}: {exc}", plugin=plugin) from exc

    def require(self, required: Iterable[str]) -> None:
        required = list(required)
        if not required:
            return
        from packaging.requirements import InvalidRequirement, Requirement

        missing: list[str] = []
        installed = {info.name: info for info in self.plugins()}
        dists = {info.distribution: info for info in installed.values() if info.distribution}
        for entry in required:
            try:
                req = Requirement(entry)
            except InvalidRequirement:
                missing.append(f"{entry} (not a valid requirement)")
                continue
            info = installed.get(req.name) or dists.get(req.name)
            if info is None:
                missing.append(entry)
            elif req.specifier and (info.version is None or info.version not in req.specifier):
                missing.append(f"{entry} (found version {info.version})")
        if missing:
            raise MissingPluginError(
                "required plugins are missing: "
                + ", ".join(missing)
                + " — install them or remove them from required-plugins"
            )

    # -- introspection -----------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(hc.name for hc in self.pm.get_hookcallers(plugin) or ()))
            dist, version = self._dists.get(name, (None, None))
            infos.append(PluginInfo(name, dist, version, hooks, name in self._builtin))
        return sorted(infos, key=lambda i: (not i.builtin, i.name))

    @property
    def hook(self) -> pluggy.HookRelay:
        """Synchronous hooks only (configuration and registration)."""
        return self.pm.hook

    def call_each(self, name: str, collector: Any, **kwargs: Any) -> None:
        """Call a synchronous hook plugin by plugin, telling ``collector`` whose turn it is
        (``collector.current_plugin``) so registrations are attributed; failures name the plugin.
        """
        for impl, plugin_name in self.caller.implementations(name):
            collector.current_plugin = plugin_name
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except (PluginError, ConfigError):
                raise
            except Exception as exc:
                raise HookFailed(name, plugin_name, exc) from exc
            finally:
                collector.current_plugin = None

    # -- registries --------------------------------------------------------------------------

    def registry(self, kind: str) -> Registry[Any]:
        """The registry of ``kind`` (see REGISTRY_HOOKS), filled by its hook on first use."""
        if kind not in self._registries:
            try:
                hook_name = REGISTRY_HOOKS[kind]
            except KeyError:
                raise PluginError(f"unknown registry kind {kind!r}") from None
            registry: Registry[Any] = Registry(kind)
            self.call_each(hook_name, registry, registry=registry)
            self._registries[kind] = registry
        return self._registries[kind]


class _Default:
    """Marks "use the caller's hook-timeout" (None already means "unbounded")."""


_DEFAULT = _Default()


class AsyncHookCaller:
    """Awaits hook implementations one by one in pluggy's order (tryfirst … trylast)."""

    def __init__(self, pm: pluggy.PluginManager, *, timeout: float | None) -> None:
        self._pm = pm
        self.timeout = timeout

    def implementations(self, name: str) -> list[tuple[Any, str]]:
        """``(hookimpl, plugin name)`` in call order."""
        hook_caller = getattr(self._pm.hook, name)
        impls = [i for i in hook_caller.get_hookimpls() if not (i.hookwrapper or i.wrapper)]
        return [(impl, impl.plugin_name) for impl in reversed(impls)]

    async def call_one(
        self,
        name: str,
        impl: Any,
        kwargs: dict[str, Any],
        *,
        per_call_limit: float | _Default | None = _DEFAULT,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """Call one implementation, awaiting it under the timeout; failures name the plugin.

        :param per_call_limit: seconds (default: ``hook-timeout``; None: unbounded).
        :param passthrough: exception types raised as they are instead of being wrapped in
            :class:`~datafn.errors.HookFailed` (a phase lets a server ``Conflict`` through).
        """
        limit = self.timeout if isinstance(per_call_limit, _Default) else per_call_limit
        try:
            args = [kwargs[a] for a in impl.argnames]
        except KeyError as exc:
            raise HookFailed(name, impl.plugin_name, f"hook called without {exc}") from None
        try:
            with anyio.move_on_after(limit) as scope:
                value = impl.function(*args)
                if inspect.isawaitable(value):
                    value = await value
        except passthrough:
            raise
        except HookFailed:
            raise
        except Exception as exc:
            raise HookFailed(name, impl.plugin_name, exc) from exc
        if scope.cancelled_caught:
            raise HookFailed(name, impl.plugin_name, f"timed out after {limit} s")
        return value

    async def call(
        self,
        name: str,
        *,
        per_call_limit: float | _Default | None = _DEFAULT,
        passthrough: tuple[type[BaseException], ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Call every implementation (propagating failures).

        For a firstresult hook, return the first non-None result after awaiting it; otherwise
        return the list of non-None results. ``per_call_limit`` and ``passthrough`` as for
        :meth:`call_one`.
        """
        hook_caller = getattr(self._pm.hook, name)
        firstresult = bool(hook_caller.spec and hook_caller.spec.opts.get("firstresult"))
        results = []
        for impl, _plugin in self.implementations(name):
            value = await self.call_one(
                name, impl, kwargs, per_call_limit=per_call_limit, passthrough=passthrough
            )
            if value is not None:
                if firstresult:
                    return value
                results.append(value)
        return None if firstresult else results

    async def call_fail_open(
        self,
        name: str,
        *,
        on_failure: Callable[[HookFailure], Awaitable[None] | None] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Call every implementation; a failure is logged, reported and skipped."""
        results = []
        for impl, plugin in self.implementations(name):
            try:
                value = await self.call_one(name, impl, kwargs)
            except HookFailed as exc:
                log.warning("%s", exc, exc_info=exc.cause)
                if on_failure is not None:
                    outcome = on_failure(HookFailure(name, plugin, exc))
                    if inspect.isawaitable(outcome):
                        await outcome
                continue
            if value is not None:
                results.append(value)
        return results

    async def before_sync(self, phase: str, payload: Any, context: SyncContext) -> Any:
        """Fail-closed: return the (possibly replaced) payload or raise SyncVetoed."""
        for impl, plugin in self.implementations("datafn_before_sync"):
            kwargs = {"phase": phase, "payload": payload, "context": context}
            try:
                value = await self.call_one("datafn_before_sync", impl, kwargs)
            except HookFailed as exc:
                veto = exc.cause if isinstance(exc.cause, Veto) else None
                raise _vetoed(phase, plugin, veto or exc.cause or exc.reason) from exc
            if isinstance(value, Veto):
                raise _vetoed(phase, plugin, value)
            if value is not None:
                payload = value
        return payload

    async def after_sync(
        self,
        phase: str,
        payload: Any,
        result: Any,
        context: SyncContext,
        *,
        on_failure: Callable[[HookFailure], Awaitable[None] | None] | None = None,
    ) -> None:
        """Fail-open: every failing implementation is logged and reported, none stops sync."""
        await self.call_fail_open(
            "datafn_after_sync",
            on_failure=on_failure,
            phase=phase,
            payload=payload,
            result=result,
            context=context,
        )


def _vetoed(phase: str, plugin: str, cause: BaseException | str) -> SyncVetoed:
    if isinstance(cause, Veto):
        return SyncVetoed(phase, plugin, cause.reason, veto=cause)
    return SyncVetoed(phase, plugin, cause)
