"""The web worker process (``clusterd.node.web`` is the node's side; ``docs/web.md``).

``python -m clusterd.webworker WIRE LISTEN``: ``WIRE`` is this process's end of its
socket pair with the node, ``LISTEN`` the HTTPS socket the node bound.  It keeps an
image of the store (``clusterd.shellworker.follow``), serves the application of
``clusterd.web.app`` with uvicorn over TLS, and asks the node (naming the browser's
session) for everything else.  It ends when the node goes away.  Like the other
entry points, this module puts the program together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

from clusterd.shellworker import WORKER_NICE, Link, connect, follow, image


async def serve(link: Link, info: dict[str, Any], listener: socket.socket) -> None:
    import uvicorn

    from clusterd.web.app import build
    from clusterd.web.context import Context

    store = image(link, info)
    ctx = Context(store, link.acall_as, info)
    config = uvicorn.Config(build(ctx), ssl_certfile=info["cert"], ssl_keyfile=info["key"],
                            log_config=None, access_log=False, lifespan="off",
                            server_header=False, proxy_headers=False,
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()

    def handle(message: tuple[Any, ...]) -> None:
        if follow(store, link, message):
            for told in list(ctx.changed):
                told()
        elif message[0] == "stop":
            server.should_exit = True

    held, link.held = link.held, []
    link.handler = handle
    for message in held:
        handle(message)
    link.run_on(loop)

    def readable() -> None:
        if not link._read():  # the node went away: so do we
            loop.remove_reader(link.sock.fileno())
            server.should_exit = True

    loop.add_reader(link.sock.fileno(), readable)
    await server.serve(sockets=[listener])
    store.close()


def main(wire: int, listen: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when we end
    os.nice(WORKER_NICE)  # the links' process first when both want the CPU
    link, start = connect(wire, "uvicorn.error")
    listener = socket.socket(fileno=listen)
    try:
        asyncio.run(serve(link, start[1], listener))
    except Exception:
        logging.getLogger("clusterd.web").exception("the web worker failed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
