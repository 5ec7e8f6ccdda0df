"""What the ASGI server logs about clients: credentials redacted, clients' mistakes brief.

At ``--log-level debug`` the WebSocket library logs every header of an upgrade request, the
``Authorization`` header included; uvicorn logs an ERROR with a traceback for every text frame
that is not UTF-8, although that is the client's mistake and the socket is closed with 1007
as it should be. :func:`install_log_filters` adds a filter to the ``uvicorn.error`` logger
that redacts the value of every credential header (``authorization``, ``cookie``, …) and turns
the UTF-8 error into one WARNING line without a traceback. It is idempotent; ``datafn serve``
(:func:`~datafn.server.serve.uvicorn_server`) installs it.
"""

from __future__ import annotations

import logging

from datafn.config import _SECRET_HEADERS, _SECRET_KEY_RE

__all__ = ["ClientLogFilter", "install_log_filters"]

REDACTED = "<redacted>"

_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


class ClientLogFilter(logging.Filter):
    """Redacts credential headers in log records and shortens clients' protocol errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # "< %s: %s" (name, value): the header lines of a WebSocket handshake
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str):
            name = args[0].lower()
            if name in _SECRET_HEADERS or _SECRET_KEY_RE.search(name):
                record.args = (args[0], REDACTED)
        if record.msg == _INVALID_UTF8:
            record.msg = (
                "a client sent a WebSocket text frame that is not UTF-8; "
                "its connection is closed with 1007"
            )
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_filters(logger_names: tuple[str, ...] = ("uvicorn.error",)) -> None:
    """Add a :class:`ClientLogFilter` to each logger, once."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientLogFilter) for f in logger.filters):
            logger.addFilter(ClientLogFilter())
