"""Bounds on what one HTTP connection may cost ``datafn serve``: header bytes and read time.

uvicorn's fast parser (httptools) puts no bound on the size of a request's headers, and the
cost of a long header grows with the square of its length; nor does uvicorn time out a client
that opens a connection and sends a request slowly, or not at all. :func:`http_protocol`
builds the uvicorn HTTP protocol ``datafn serve`` runs, which adds both bounds:

* **max-header-bytes**: the request line and headers of one request; past it the request is
  answered ``431`` with a ``LIMIT_EXCEEDED`` envelope and the connection is closed.
* **read-timeout**: the time from a connection's opening (or a request's first byte) to the
  last byte of the request, body included; past it the request is answered ``408`` with a
  ``LIMIT_EXCEEDED`` envelope (or, when nothing was received, the connection is just closed).

Idle keep-alive connections are closed by uvicorn after ``keep-alive-timeout``; the number of
connections is bounded by uvicorn's ``limit_concurrency`` (``max-connections``). Without
httptools, uvicorn's h11 protocol is used with its own header bound and no read timeout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

__all__ = ["http_protocol"]

log = logging.getLogger("datafn.server")


def _answer(status: int, reason: str, message: str, details: dict[str, Any]) -> bytes:
    """A complete HTTP/1.1 answer with an error envelope, closing the connection."""
    body = orjson.dumps(
        {
            "ok": False,
            "error": {
                "code": "LIMIT_EXCEEDED",
                "message": message,
                "details": {"path": "$", **details},
            },
        }
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def http_protocol(*, max_header_bytes: int, read_timeout: float) -> Any:
    """The uvicorn HTTP protocol class (or name) with the bounds of the module docstring."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency of datafn
        log.warning("httptools is not installed: requests are read without a read timeout")
        return "h11"

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """httptools with a bound on header bytes and on the time to read a request."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._awaiting_headers = True  # no request, or one whose headers are incomplete
            self._raw_header_bytes = 0  # bytes received while awaiting headers
            self._header_bytes = 0  # bytes of the request line and headers parsed
            self._request_bytes = 0
            self._too_large = False
            self._read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_read_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_read_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._too_large:
                return
            if self._awaiting_headers:
                self._raw_header_bytes += len(data)
            self._request_bytes += len(data)
            super().data_received(data)
            # Headers that end within the data were measured by the parser's callbacks;
            # headers that do not are measured in bytes received, after the parser has seen
            # them (so the body of a chunk is never counted as headers): at most one chunk is
            # parsed beyond the bound, and a header that never ends costs no more than that.
            if self._awaiting_headers and self._raw_header_bytes > max_header_bytes:
                self._too_large = True
            if self._too_large and not self.transport.is_closing():
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    f"the request line and headers exceed {max_header_bytes} bytes",
                    {"limit": max_header_bytes},
                )

        def on_message_begin(self) -> None:
            if self._too_large:
                return
            super().on_message_begin()
            self._awaiting_headers = True
            self._header_bytes = 0
            if self._read_timer is None:
                self._arm_read_timer()

        def on_url(self, url: bytes) -> None:
            self._header_bytes += len(url)
            if not self._too_large:
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_bytes += len(name) + len(value) + 4
            if not self._too_large:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._header_bytes > max_header_bytes:
                self._too_large = True  # refused once the parser returns; no task starts
            if self._too_large:
                return
            self._awaiting_headers = False
            self._raw_header_bytes = 0
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._too_large:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._too_large:
                return
            self._disarm_read_timer()  # the request is read; handling it takes what it takes
            self._awaiting_headers = True
            self._raw_header_bytes = 0
            self._request_bytes = 0
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            if self._too_large:
                return
            self._disarm_read_timer()  # the WebSocket protocol has its own pings
            super().handle_websocket_upgrade()

        def _arm_read_timer(self) -> None:
            self._disarm_read_timer()
            self._read_timer = self.loop.call_later(read_timeout, self._read_timed_out)

        def _disarm_read_timer(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and cycle.response_started and not cycle.response_complete:
                return  # answering already, before the whole body came (e.g. a 413)
            if self._request_bytes == 0 and (cycle is None or cycle.response_complete):
                log.debug("closing a connection that sent no request in %g s", read_timeout)
                self.transport.close()
                return
            log.debug("closing a connection whose request took longer than %g s", read_timeout)
            self._refuse(
                408,
                "Request Timeout",
                f"the request was not received within {read_timeout:g} s",
                {"timeout": read_timeout},
            )

        def _refuse(self, status: int, reason: str, message: str, details: dict[str, Any]) -> None:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # the application may be waiting for the body: it now reads a disconnect,
                # and whatever it answers is dropped
                cycle.disconnected = True
                cycle.message_event.set()
            if cycle is None or not cycle.response_started:
                self.transport.write(_answer(status, reason, message, details))
            self.transport.close()

    return BoundedHttpToolsProtocol
