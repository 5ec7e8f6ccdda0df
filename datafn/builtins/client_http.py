"""Built-in plugin: the ``http`` transport (httpx), and its ``[tool.datafn.http]`` settings.

``POST {remote}/{endpoint}`` with a JSON body (``GET`` for ``status``); connection failures,
timeouts and bodies that are not JSON become :class:`~datafn.errors.TransportError`. The
timeout is ``sync.request-timeout``; ``[tool.datafn.http]`` adds a bearer ``token`` and extra
``headers``.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from datafn.client.transport import Transport
from datafn.config import Config, SettingsRegistry
from datafn.errors import TransportError
from datafn.plugin import hookimpl
from datafn.registry import Registry

__all__ = ["HttpSettings", "HttpTransport"]

_JSON = {"content-type": "application/json"}


class HttpSettings(BaseModel):
    """``[tool.datafn.http]``: credentials and headers of the http transport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str | None = Field(None, description="sent as `Authorization: Bearer <token>`")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")


class HttpTransport(Transport):
    """The DataFn protocol over HTTP with one pooled ``httpx.AsyncClient``.

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
        self._client = httpx.AsyncClient(
            transport=transport, timeout=timeout or 30.0, headers=all_headers
        )

    async def request(self, endpoint: str, payload: Any) -> Any:
        url = f"{self.remote}/{endpoint}"
        try:
            if payload is None:
                response = await self._client.get(url)
            else:
                response = await self._client.post(
                    url, content=orjson.dumps(payload), headers=_JSON
                )
        except httpx.TimeoutException as exc:
            raise TransportError(f"{url} timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise TransportError(
                f"{url} answered HTTP {response.status_code} with a body that is not JSON",
                http_status=response.status_code,
            ) from None

    async def aclose(self) -> None:
        await self._client.aclose()


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add("http", HttpSettings)


@hookimpl(trylast=True)
def datafn_register_transports(registry: Registry[Any]) -> None:
    registry.add("http", HttpTransport, description="httpx, JSON over HTTP")
