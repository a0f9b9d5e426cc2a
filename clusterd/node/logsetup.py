"""The daemon's log: safe lines, a bounded file, and no traceback storms.

* Every line goes through ``printable``: a host name, user name or reason that came
  from another party cannot start a forged line or send a terminal escape to whoever
  reads the log (``tail`` in the shell, a terminal, journald).
* The file (``clusterd.log`` in the data directory) rotates at ``log_max_bytes`` and
  keeps ``log_backups`` old files; stderr (journald under systemd) gets the same lines.
* Errors the event loop reports by itself (an ``accept`` that fails because the process
  is out of file descriptors, a callback that raised) are logged once per minute and
  kind with a count (``Throttle``), a traceback only the first time; running out of
  descriptors never gets one.  The soft file-descriptor limit is raised to the hard
  limit at start (``contrib/clusterd.service`` sets ``LimitNOFILE``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import logging.handlers
import resource
from typing import Any

from clusterd.core.text import printable
from clusterd.mesh.transport.limits import Throttle
from clusterd.node.config import DaemonConfig

log = logging.getLogger("clusterd.daemon")
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class SafeFormatter(logging.Formatter):
    """A log line with every control character of its message escaped (tracebacks keep
    their line breaks, nothing else), stamped with this machine's name (``host``)."""

    host = "-"

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        record.host = self.host
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), keep_newlines=True)


def configure(config: DaemonConfig) -> None:
    """Log to stderr and to the rotating file of the data directory."""
    formatter = SafeFormatter("%(asctime)s %(levelname)s %(name)s [%(host)s] %(message)s")
    SafeFormatter.host = config.hostname
    file = logging.handlers.RotatingFileHandler(
        config.log_file, maxBytes=config.log_max_bytes, backupCount=config.log_backups
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(), file]
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=config.log_level, handlers=handlers, force=True)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def set_hostname(name: str) -> None:
    """The name log lines carry, after this machine was renamed."""
    SafeFormatter.host = name


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard limit; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def quiet_loop_errors(loop: asyncio.AbstractEventLoop, throttle: Throttle) -> None:
    """Report what the event loop reports by itself through ``throttle``."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "event loop error"))
        if isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS:
            throttle.warn("descriptors", f"{message}: {exc.strerror} (open files or memory "
                          "exhausted; connections are refused until some close)",
                          logger=log)  # fmt: skip
            return
        if _accept_retry_after_close(context):
            log.debug("accept retry after its listening socket closed: ignored")
            return
        kind = f"loop {type(exc).__name__ if exc else message[:60]}"
        if throttle.warn(kind, f"{message}: {exc!r}" if exc else message, logger=log) and exc:
            log.error("the first of these, in full:", exc_info=exc)

    loop.set_exception_handler(handler)


def _accept_retry_after_close(context: dict[str, Any]) -> bool:
    """asyncio retries ``accept`` a second after running out of descriptors; if the
    listening socket closed in that second (the daemon stopping), the retry finds
    descriptor -1.  Nothing is wrong then: the server is already gone."""
    exc = context.get("exception")
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    return (isinstance(exc, ValueError) and "-1" in str(exc)
            and getattr(callback, "__name__", "") == "_start_serving")  # fmt: skip
