"""The transport contract: how the client reaches a DataFn server.

One small abstract class with one core method, like httpx's transports. Transports are
registered by name with ``datafn_register_transports`` (``"http"`` is built in);
``factory(remote, config)`` returns one, and the ``sync.transport`` setting selects it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Transport"]


class Transport(ABC):
    """Sends one request of the wire protocol and returns the decoded response body.

    Implementations raise :class:`~datafn.errors.TransportError` when the server cannot be
    reached, times out or answers something that is not JSON; they do not interpret the
    envelope (the engine does, with :func:`datafn.protocol.parse_envelope`).
    """

    @abstractmethod
    async def request(self, endpoint: str, payload: Any) -> Any:
        """POST ``payload`` to ``{remote}/{endpoint}`` (GET when ``payload`` is None) and return
        the decoded JSON body (an envelope)."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Release connections."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
