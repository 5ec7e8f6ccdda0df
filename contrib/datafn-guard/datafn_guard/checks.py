"""The checks of the guard: each one names itself and says why it refused, with a JSON path.

Every check raises :class:`GuardVeto`, a :class:`datafn.Veto` that also carries the name of
the rule that fired (``phases``, ``resources``, ``require-credentials``, ``max-payload-bytes``,
``max-batch-size``, ``schema``, or the import path of a user rule). Policy refusals have the
code ``FORBIDDEN``; payloads that do not fit the schema have the server's own code for the
same refusal (``DFQL_INVALID``, ``DFQL_UNKNOWN_RESOURCE``, ``DFQL_UNKNOWN_FIELD``). On the server
the veto becomes that error envelope, with the path.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from datafn import ConfigError, SyncContext, ValidationFailed, Veto
from datafn.schema import MAX_DEPTH, Schema, check_json_value

__all__ = ["GuardVeto", "Rule", "load_rule", "resource_refs"]

_RULE_ARGS = ("phase", "payload", "context")


class GuardVeto(Veto):
    """A refusal of the guard: ``rule`` is the check that fired, ``why`` its reason."""

    def __init__(self, rule: str, why: str, *, code: str = "FORBIDDEN", path: str = "$") -> None:
        super().__init__(f"rule {rule!r}: {why}", code=code, path=path)
        self.rule = rule
        self.why = why


@dataclass(frozen=True)
class Rule:
    """A user-written check loaded from ``rules = ["package.module:function"]``.

    The function accepts any of ``phase``, ``payload`` and ``context`` (by name), may be a
    coroutine, and answers ``None`` or ``True`` to let the payload through; ``False``, a
    string (the reason) or a :class:`datafn.Veto` — returned or raised — refuses it. Any
    other exception refuses it too: the guard is fail-closed.
    """

    name: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]

    async def check(self, phase: str, payload: Any, context: SyncContext) -> None:
        values = {"phase": phase, "payload": payload, "context": context}
        try:
            answer = self.function(**{name: values[name] for name in self.argnames})
            if inspect.isawaitable(answer):
                answer = await answer
        except Veto as veto:
            answer = veto
        except Exception as exc:
            raise GuardVeto(self.name, f"the rule failed: {type(exc).__name__}: {exc}") from exc
        if answer is None or answer is True:
            return
        if isinstance(answer, Veto):
            raise GuardVeto(self.name, answer.reason, code=answer.code, path=answer.path)
        if answer is False:
            raise GuardVeto(self.name, "refused")
        if isinstance(answer, str):
            raise GuardVeto(self.name, answer)
        raise GuardVeto(
            self.name,
            f"the rule returned {type(answer).__name__}; expected None, a bool, a str or a Veto",
        )


def load_rule(path: str, *, key: str, project_dir: Path | None) -> Rule:
    """Import ``package.module:function`` (or ``package.module.function``).

    The project folder is put on ``sys.path`` first, so a ``policies.py`` beside
    pyproject.toml can be named ``policies:my_rule``. Errors are ConfigError naming ``key``.
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"expected 'package.module:function', got {path!r}", key=key)
    if project_dir is not None and str(project_dir) not in sys.path:
        sys.path.append(str(project_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", key=key
        ) from exc
    function = module
    for part in attr.split("."):
        try:
            function = getattr(function, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}", key=key) from None
    if not callable(function):
        raise ConfigError(f"{path!r} is not callable", key=key)
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        argnames = _RULE_ARGS
    else:
        unknown = [name for name in parameters if name not in _RULE_ARGS]
        if unknown:
            raise ConfigError(
                f"{path!r} takes {unknown[0]!r}; a rule accepts phase, payload and context",
                key=key,
            )
        argnames = tuple(name for name in _RULE_ARGS if name in parameters)
    return Rule(path, function, argnames)


def resource_refs(phase: str, payload: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    """Every resource a wire payload names, with the JSON path where it is named."""
    if phase in ("push", "clone_up"):
        for index, mutation in enumerate(_list(payload.get("mutations"))):
            if isinstance(mutation, dict):
                yield mutation.get("resource"), f"mutations[{index}].resource"
    elif phase == "pull":
        for name in _dict(payload.get("cursors")):
            if not (isinstance(name, str) and name.startswith(("__datafn_", "join_"))):
                yield name, f"cursors.{name}"  # (the others are feed cursors, not resources)
    elif phase == "clone":
        for index, name in enumerate(_list(payload.get("tables"))):
            yield name, f"tables[{index}]"
        page = payload.get("page")
        if isinstance(page, dict) and "table" in page:
            yield page["table"], "page.table"
    elif phase == "reconcile":
        for index, name in enumerate(_list(payload.get("resources"))):
            yield name, f"resources[{index}]"
        for form in ("digest", "fetch"):  # the content forms name one resource each
            spec = payload.get(form)
            if isinstance(spec, dict) and "resource" in spec:
                yield spec["resource"], f"{form}.resource"
    elif phase == "seed":
        for name in _dict(payload.get("data")):
            yield name, f"data.{name}"


def unnamed_scope(phase: str, payload: dict[str, Any]) -> str | None:
    """The path of a payload that asks for every synced resource without naming any (the
    global-cursor pull ``{clientId, cursor}``, a clone without ``tables`` nor ``page``), or
    None. The server tells which resources those are in ``SyncContext.resources``."""
    if phase == "pull" and "cursor" in payload and "cursors" not in payload:
        return "cursor"
    if phase == "clone" and payload.get("tables") is None and payload.get("page") is None:
        return "tables"
    return None


def check_unnamed_allowed(
    what: str,
    allowed: list[str],
    phase: str,
    payload: dict[str, Any],
    resources: tuple[str, ...],
    side: str,
) -> None:
    """Refuse a payload of :func:`unnamed_scope` when one of the resources it is served
    (``resources``, from the context) is not allowed; fail-closed when none are known."""
    path = unnamed_scope(phase, payload)
    if path is None:
        return
    if not resources:
        raise GuardVeto(
            what,
            f"the {phase} asks for every synced resource without naming them, and the "
            "context does not say which (SyncContext.resources is empty)",
            path=path,
        )
    refused = [name for name in dict.fromkeys(resources) if name not in allowed]
    if refused:
        raise GuardVeto(
            what,
            f"the {phase} asks for every synced resource, and "
            f"{', '.join(map(repr, refused))} {'is' if len(refused) == 1 else 'are'} not "
            f"allowed on the {side} side (allowed: {', '.join(allowed) or 'none'}); name the "
            "resources instead",
            path=path,
        )


def check_allowed(what: str, allowed: list[str] | None, value: Any, path: str, side: str) -> None:
    if allowed is not None and value not in allowed:
        raise GuardVeto(
            what,
            f"{_show(value)} is not allowed on the {side} side "
            f"(allowed: {', '.join(allowed) or 'none'})",
            path=path,
        )


def check_payload_size(payload: Any, limit: int) -> None:
    try:
        size = len(orjson.dumps(payload))
    except TypeError as exc:
        raise GuardVeto("schema", f"the payload is not JSON: {exc}", code="DFQL_INVALID") from exc
    if size > limit:
        raise GuardVeto("max-payload-bytes", f"the payload is {size} bytes, more than {limit}")


def check_batch_size(phase: str, payload: dict[str, Any], limit: int) -> None:
    if phase in ("push", "clone_up"):
        count = len(_list(payload.get("mutations")))
        if count > limit:
            raise GuardVeto(
                "max-batch-size",
                f"{count} mutations in one request, more than {limit}",
                path="mutations",
            )
    elif phase == "seed":
        count = sum(len(_list(records)) for records in _dict(payload.get("data")).values())
        if count > limit:
            raise GuardVeto(
                "max-batch-size", f"{count} records in one seed, more than {limit}", path="data"
            )


def check_schema(phase: str, payload: dict[str, Any], schema: Schema) -> None:
    """No prototype keys anywhere, no unknown resources, records that fit their resource."""
    try:
        check_json_value(payload, path="", max_depth=MAX_DEPTH + 8)
        for name, path in resource_refs(phase, payload):
            schema.resource(name, path=path)
        if phase in ("push", "clone_up"):
            for index, mutation in enumerate(_list(payload.get("mutations"))):
                if not isinstance(mutation, dict):
                    continue
                spec = schema.resource(mutation.get("resource"), f"mutations[{index}].resource")
                record = mutation.get("record")
                operation = mutation.get("operation")
                if record is not None and operation != "delete":
                    spec.validate_record(
                        record, partial=operation == "merge", path=f"mutations[{index}].record"
                    )
                condition = mutation.get("if")
                if isinstance(condition, dict):
                    for key in condition:
                        if key != "id" and spec.field(key) is None:
                            raise ValidationFailed(
                                f"unknown field {key!r} of resource {spec.name!r}",
                                code="DFQL_UNKNOWN_FIELD",
                                path=f"mutations[{index}].if.{key}",
                            )
        elif phase == "seed":
            for name, records in _dict(payload.get("data")).items():
                spec = schema.resource(name, f"data.{name}")
                for index, record in enumerate(_list(records)):
                    spec.validate_record(record, path=f"data.{name}[{index}]")
    except ValidationFailed as exc:
        # the server's own code for the same refusal (DFQL_UNKNOWN_RESOURCE, …): a policy may
        # refuse more, never answer a refusal the server makes with another code
        raise GuardVeto("schema", exc.message, code=exc.code, path=exc.path) from None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else type(value).__name__
