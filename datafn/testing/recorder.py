"""A plugin that records which hooks ran, in which order, with which arguments.

::

    recorder = HookRecorder("datafn_before_sync", "datafn_after_sync")
    runtime = Runtime.boot(plugins=[recorder])
    ...
    assert recorder.names == ["datafn_before_sync", "datafn_after_sync"]
    assert recorder.calls[0].kwargs["phase"] == "push"

Each implementation accepts every argument of its specification and returns ``None``, so
the recorder never changes an outcome (``None`` lets a first-result hook go on to the next
implementation and lets a payload through).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from datafn.plugin import hookimpl, spec

__all__ = ["ALL_HOOKS", "HookCall", "HookRecorder"]

#: Every hook name of the specification, in the order of ``datafn/plugin/spec.py``.
ALL_HOOKS: tuple[str, ...] = tuple(
    name for name, value in vars(spec).items() if name.startswith("datafn_") and callable(value)
)


@dataclass(frozen=True)
class HookCall:
    """One recorded call: the hook's name and its arguments by name."""

    hook: str
    kwargs: dict[str, Any]


class HookRecorder:
    """Implements the chosen hooks (default: all of them) and records every call.

    :param hooks: hook names; unknown names raise ValueError.
    :param tryfirst: run before the other implementations (to see the payload as it came in);
        default: in registration order, last registered first.
    :param trylast: run after the other implementations (to see replaced payloads).
    """

    def __init__(
        self, *hooks: str, tryfirst: bool = False, trylast: bool = False, name: str | None = None
    ) -> None:
        chosen = hooks or ALL_HOOKS
        unknown = [hook for hook in chosen if hook not in ALL_HOOKS]
        if unknown:
            raise ValueError(f"no hook named {unknown[0]!r}; hooks: {', '.join(ALL_HOOKS)}")
        self.__name__ = name or "hook-recorder"
        self.hooks: tuple[str, ...] = tuple(chosen)
        self.calls: list[HookCall] = []
        self._lock = threading.Lock()
        for hook in self.hooks:
            setattr(self, hook, self._implementation(hook, tryfirst=tryfirst, trylast=trylast))

    def __repr__(self) -> str:
        return f"<HookRecorder {self.__name__}: {len(self.calls)} calls>"

    def _implementation(self, hook: str, *, tryfirst: bool, trylast: bool) -> Any:
        specification = getattr(spec, hook)
        argnames = specification.__code__.co_varnames[: specification.__code__.co_argcount]
        calls, lock = self.calls, self._lock

        def record(*args: Any) -> None:
            with lock:
                calls.append(HookCall(hook, dict(zip(argnames, args, strict=True))))

        # pluggy reads an implementation's argument names through __wrapped__: the recorder
        # asks for every argument of the specification.
        record.__wrapped__ = specification  # type: ignore[attr-defined]
        record.__name__ = hook
        return hookimpl(tryfirst=tryfirst, trylast=trylast)(record)

    @property
    def names(self) -> list[str]:
        """The names of the recorded calls, in order."""
        with self._lock:
            return [call.hook for call in self.calls]

    def of(self, hook: str) -> list[dict[str, Any]]:
        """The arguments of every recorded call of ``hook``, in order."""
        with self._lock:
            return [call.kwargs for call in self.calls if call.hook == hook]

    def phases(self, hook: str = "datafn_before_sync") -> list[str]:
        """The ``phase`` argument of every recorded call of a policy hook, in order."""
        return [kwargs["phase"] for kwargs in self.of(hook)]

    def only(self, hooks: Iterable[str]) -> list[str]:
        """The recorded names restricted to ``hooks``, in order."""
        wanted = set(hooks)
        return [name for name in self.names if name in wanted]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
