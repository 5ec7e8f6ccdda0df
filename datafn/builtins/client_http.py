"""Built-in plugin: the ``http`` transport (httpx), and its ``[tool.datafn.http]`` settings.

``POST {remote}/{endpoint}`` with a JSON body (``GET`` for ``status``); connection failures,
timeouts and bodies that are not JSON become :class:`~datafn.errors.TransportError`. The
timeout is ``sync.request-timeout``; ``[tool.datafn.http]`` adds a bearer ``token`` and extra
``headers``.

Requests go straight to one pooled httpx transport (keep-alive connections): the protocol needs
none of what ``httpx.AsyncClient`` adds on top (cookies, redirects, auth flows, environment
proxies), and skipping it takes a quarter off the client's time per request.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

import datafn
from datafn.client.transport import Transport
from datafn.config import Config, SettingsRegistry
from datafn.errors import TransportError
from datafn.plugin import hookimpl
from datafn.registry import Registry

__all__ = ["HttpSettings", "HttpTransport"]

#: The largest answer read (a clone page of ``maxLimit`` records fits many times over).
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


class HttpSettings(BaseModel):
    """``[tool.datafn.http]``: credentials and headers of the http transport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str | None = Field(None, description="sent as `Authorization: Bearer <token>`")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")


class HttpTransport(Transport):
    """The DataFn protocol over HTTP with one pooled httpx transport.

    :param transport: an httpx transport to use instead of the network
        (``httpx.MockTransport(handler)``, ``httpx.ASGITransport(app)``).
    """

    def __init__(
        self,
        remote: str,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.remote = remote.rstrip("/")
        all_headers: dict[str, str] = {}
        if config is not None:
            timeout = timeout or config.sync.request_timeout
            try:
                section: HttpSettings = config.section("http")
            except Exception:
                section = HttpSettings()
            all_headers.update(section.headers)
            if section.token:
                all_headers["authorization"] = f"Bearer {section.token}"
        all_headers.update(headers or {})
        self._headers = httpx.Headers(
            {"user-agent": f"datafn/{datafn.__version__}", "accept": "application/json"}
        )
        self._headers.update(all_headers)
        self._post_headers = self._headers.copy()
        self._post_headers["content-type"] = "application/json"
        self._extensions = {"timeout": httpx.Timeout(timeout or 30.0).as_dict()}
        self._transport = transport or httpx.AsyncHTTPTransport()

    async def request(self, endpoint: str, payload: Any) -> Any:
        url = f"{self.remote}/{endpoint}"
        if payload is None:
            request = httpx.Request("GET", url, headers=self._headers, extensions=self._extensions)
        else:
            request = httpx.Request(
                "POST",
                url,
                content=orjson.dumps(payload),
                headers=self._post_headers,
                extensions=self._extensions,
            )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                content = await _read(response, url)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise TransportError(f"{url} timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise TransportError(
                f"{url} answered HTTP {response.status_code} with a body that is not JSON",
                http_status=response.status_code,
            ) from None

    async def aclose(self) -> None:
        await self._transport.aclose()


async def _read(response: httpx.Response, url: str) -> bytes:
    """The body, decoded; an answer above :data:`MAX_RESPONSE_BYTES` is refused."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise TransportError(
            f"{url} answered with {declared} bytes, more than {MAX_RESPONSE_BYTES}",
            http_status=response.status_code,
        )
    chunks = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise TransportError(
                f"{url} answered with more than {MAX_RESPONSE_BYTES} bytes",
                http_status=response.status_code,
            )
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add("http", HttpSettings)


@hookimpl(trylast=True)
def datafn_register_transports(registry: Registry[Any]) -> None:
    registry.add("http", HttpTransport, description="httpx, JSON over HTTP")
