"""Built-in plugin: bearer-token authentication from ``[tool.datafn.server] tokens``.

``tokens = {"<token>" = "<subject>"}`` maps each accepted token to the subject it
authenticates. While the map is empty this plugin stays out of the way (requests are
anonymous unless another plugin authenticates them); once tokens are configured, a request
without ``Authorization: Bearer <token>``, or with an unknown token, is refused with 401.
``namespace-template = "user:{subject}"`` puts each subject in its own namespace (default: every
request in ``datafn``). Both hooks run last, so a deployment's own plugin takes precedence.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from datafn.context import Identity
from datafn.errors import ProtocolError
from datafn.plugin import hookimpl


def _settings() -> Any:
    from datafn.server.app import current_server  # not at import: clients never need it

    server = current_server()
    return server.settings if server is not None else None


_cache: dict[int, tuple[Mapping[str, str], dict[bytes, str]]] = {}


def _digests(tokens: Mapping[str, str]) -> dict[bytes, str]:
    key = id(tokens)
    cached = _cache.get(key)
    if cached is None or cached[0] is not tokens:
        digests = {hashlib.sha256(t.encode()).digest(): s for t, s in tokens.items()}
        _cache[key] = cached = (tokens, digests)
    return cached[1]


def _unauthorized(message: str) -> ProtocolError:
    return ProtocolError(message, code="FORBIDDEN", http_status=401)


@hookimpl(trylast=True)
def datafn_authenticate(headers: dict[str, str], action: str) -> Identity | None:
    settings = _settings()
    tokens = settings.tokens if settings is not None else None
    if not tokens:
        return None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing bearer token")
    digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
    for known, subject in _digests(tokens).items():
        if hmac.compare_digest(known, digest):
            return Identity(subject, {"auth": "bearer"})
    raise _unauthorized("invalid bearer token")


@hookimpl(trylast=True)
def datafn_resolve_namespace(identity: Identity | None) -> str | None:
    settings = _settings()
    template: str | None = settings.namespace_template if settings is not None else None
    if not template or identity is None:
        return None
    return template.replace("{subject}", identity.subject)
