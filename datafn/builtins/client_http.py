"""Built-in plugin: the ``http`` transport (httpx), and its ``[tool.datafn.http]`` settings.

``POST {remote}/{endpoint}`` with a JSON body (``GET`` for ``status``); connection failures,
timeouts and bodies that are not JSON become :class:`~datafn.errors.TransportError`. The
timeout is ``sync.request-timeout``; ``[tool.datafn.http]`` adds a bearer ``token``, extra
``headers`` and the largest answer read (``max-response-bytes``).

Requests go straight to one pooled httpx transport (keep-alive connections), without
``httpx.AsyncClient``'s layer of cookies, redirects and auth flows, which the protocol does not
use: that takes a quarter off the client's time per request. What that layer did that matters
here is done once, for the one remote: the proxy from the environment (``HTTPS_PROXY``,
``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and Basic credentials written in the URL.

Opening a client costs nothing here: httpx is imported and the pooled transport created on the
first request. Only an ``https://`` remote gets the default TLS context (which loads the
certificate authorities, the slowest part of creating a transport); the origin of an
``http://`` remote is never reached over TLS, so its transport gets a context that trusts no
certificate: were TLS to that origin ever attempted, it would fail rather than go unverified.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

import datafn
from datafn.client.transport import Transport
from datafn.config import Config, SettingsRegistry, check_remote_url, mask_url
from datafn.errors import TransportError, ValidationFailed
from datafn.plugin import hookimpl
from datafn.registry import Registry

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = ["HttpSettings", "HttpTransport", "environment_proxy"]

#: Default of ``max-response-bytes``. A clone page or a pull page is at most 1 000 records by
#: default; with records of up to 256 KB it fits.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


class HttpSettings(BaseModel):
    """``[tool.datafn.http]``: credentials, headers and bounds of the http transport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str | None = Field(None, description="sent as `Authorization: Bearer <token>`")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    max_response_bytes: int = Field(
        MAX_RESPONSE_BYTES,
        ge=1024 * 1024,
        description="a larger answer fails with LIMIT_EXCEEDED (it is not retried)",
    )


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url`` (``<scheme>_proxy``, then ``all_proxy``),
    or None when there is none or ``no_proxy`` covers the host."""
    import urllib.request

    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy


class HttpTransport(Transport):
    """The DataFn protocol over HTTP with one pooled httpx transport.

    :param transport: an httpx transport to use instead of the network
        (``httpx.MockTransport(handler)``, ``httpx.ASGITransport(app)``).
    :param max_response_bytes: the largest answer read (default: ``max-response-bytes``).
    """

    def __init__(
        self,
        remote: str,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        self.remote = remote.rstrip("/")
        # refused here, as the configuration refuses it, not on the first request
        from_config = config is not None and (config.sync.remote or "").rstrip("/") == self.remote
        check_remote_url(
            self.remote,
            key=config._user_key(("sync", "remote"))
            if config is not None and from_config
            else "remote",
        )
        section = HttpSettings()
        if config is not None:
            timeout = timeout or config.sync.request_timeout
            try:
                section = config.section("http")
            except Exception:
                section = HttpSettings()
        self.max_response_bytes = max_response_bytes or section.max_response_bytes
        self._section = section
        self._extra_headers = dict(headers or {})
        self._timeout = timeout or 30.0
        self._transport: httpx.AsyncBaseTransport | None = transport
        self._ready = False

    def _prepare(self) -> httpx.AsyncBaseTransport:
        """Headers, timeouts and (unless one was given) the pooled transport, on first use."""
        import httpx

        url = httpx.URL(self.remote)
        self._headers = httpx.Headers(
            {
                "user-agent": f"datafn/{datafn.__version__}",
                "accept": "application/json",
                "accept-encoding": "gzip, deflate",
            }
        )
        if url.username or url.password:
            basic = base64.b64encode(f"{url.username}:{url.password}".encode()).decode()
            self._headers["authorization"] = f"Basic {basic}"
        self._headers.update(self._section.headers)
        if self._section.token:
            self._headers["authorization"] = f"Bearer {self._section.token}"
        self._headers.update(self._extra_headers)
        self._post_headers = self._headers.copy()
        self._post_headers["content-type"] = "application/json"
        self._extensions = {"timeout": httpx.Timeout(self._timeout).as_dict()}
        if self._transport is None:
            self._transport = httpx.AsyncHTTPTransport(
                verify=True if url.scheme == "https" else _trust_nothing(),
                proxy=environment_proxy(url),
            )
        self._ready = True
        return self._transport

    async def request(self, endpoint: str, payload: Any) -> Any:
        import httpx

        url = f"{self.remote}/{endpoint}"
        try:
            transport = self._transport if self._ready else self._prepare()
            if payload is None:
                request = httpx.Request(
                    "GET", url, headers=self._headers, extensions=self._extensions
                )
            else:
                request = httpx.Request(
                    "POST",
                    url,
                    content=orjson.dumps(payload),
                    headers=self._post_headers,
                    extensions=self._extensions,
                )
        except (httpx.InvalidURL, UnicodeError) as exc:  # one the construction check let through
            raise TransportError(f"cannot call {mask_url(url)}: invalid URL: {exc}") from None
        assert transport is not None
        status = 0
        try:
            response = await transport.handle_async_request(request)
            status = response.status_code
            try:
                content = await self._read(response, url)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise _failure(url, status, exc) from exc
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            hint = f"; {_NO_ROUTE_HINT}" if status == 404 else ""
            raise TransportError(
                f"{url} answered HTTP {response.status_code} with a body that is not JSON{hint}",
                http_status=response.status_code,
            ) from None
        if status == 404:
            return _not_found(body, request.method, url, self.remote)
        return body

    async def _read(self, response: httpx.Response, url: str) -> bytes:
        """The body, decoded; an answer above ``max_response_bytes`` is refused."""
        limit = self.max_response_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_big(url, limit)
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise _too_big(url, limit)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()


def _trust_nothing() -> ssl.SSLContext:
    """A TLS context that verifies certificates and host names but trusts no authority."""
    import ssl

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


_NO_ROUTE_HINT = (
    "is the base path of the remote right? (datafn serve's default: http://host:8787/datafn)"
)


def _not_found(body: Any, method: str, url: str, remote: str) -> Any:
    """A 404 answer, with the URL that was called and, when the server says it (a datafn
    server does, in ``details.basePath``), the base path its routes are under."""
    url = mask_url(url)
    error = body.get("error") if isinstance(body, dict) and body.get("ok") is False else None
    if not isinstance(error, dict):
        raise TransportError(
            f"{method} {url} answered HTTP 404 with no DataFn envelope; {_NO_ROUTE_HINT}",
            http_status=404,
        )
    details = error.get("details")
    base = details.get("basePath") if isinstance(details, dict) else None
    if isinstance(base, str) and base.startswith("/"):
        import httpx

        expected = httpx.URL(remote).copy_with(path=base, query=None, fragment=None)
        message = (
            f"no such route: {method} {url}; the server's DataFn routes are under {base}, "
            f"so the remote should be {mask_url(str(expected))}"
        )
    else:
        message = f"{error.get('message', 'not found')} ({method} {url})"
    return {**body, "error": {**error, "message": message}}


def _failure(url: str, status: int, exc: httpx.HTTPError) -> TransportError:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return TransportError(f"{url} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.DecodingError):
        return TransportError(
            f"{url} answered HTTP {status} with a body that cannot be decoded: {exc}",
            http_status=status,
        )
    return TransportError(f"cannot reach {url}: {type(exc).__name__}: {exc}")


def _too_big(url: str, limit: int) -> ValidationFailed:
    """Not a transport failure: the same answer would come again, so it is not retried."""
    return ValidationFailed(
        f"{url} answered with more than {limit} bytes ([tool.datafn.http] max-response-bytes)",
        code="LIMIT_EXCEEDED",
        details={"limit": limit},
    )


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add("http", HttpSettings)


@hookimpl(trylast=True)
def datafn_register_transports(registry: Registry[Any]) -> None:
    registry.add("http", HttpTransport, description="httpx, JSON over HTTP")
