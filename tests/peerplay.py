"""Playing a stopped member ``b`` on a real SSH link to a running member ``a``, with
``b``'s machine key: what the process tests of forged commits and of a peer's garbage
answers share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncssh

from clusterd.core import layers
from clusterd.dev.testbed import Machine
from clusterd.mesh.messages import PROTOCOL_MAX, Hello
from clusterd.mesh.transport.ssh import PEER_USER, SUBSYSTEM


@asynccontextmanager
async def link_as(b: Machine, a: Machine) -> AsyncIterator[asyncssh.SSHClientProcess[bytes]]:
    """The member link subsystem on ``a``, logged in as ``b``'s machine."""
    key = asyncssh.read_private_key(b.config.machine_key)
    async with asyncssh.connect(a.config.listen, a.config.ssh_port, username=PEER_USER,
                                client_keys=[key], known_hosts=None, agent_path=None,
                                config=None) as conn:  # fmt: skip
        yield await conn.create_process(subsystem=SUBSYSTEM, encoding=None)


def hello_as(b: Machine, a: Machine, **fields: Any) -> Hello:
    """A hello as the stopped ``b``, at ``a``'s version vector (``fields``: ``hd``,
    ``sd``, ...)."""
    store = b.store()
    try:
        cluster = layers.cluster_id(store.state) or ""
    finally:
        store.close()
    status = a.status()
    return Hello(node=b.serial, hostname=b.hostname, cluster=cluster, proto_min=PROTOCOL_MAX,
                 proto_max=PROTOCOL_MAX, software=status["software"], vv=status["vv"],
                 **fields)  # fmt: skip
