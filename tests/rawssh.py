"""Raw SSH authentication sequences for security tests, with asyncssh's own client.

An attacker does not play by the rules of one user and one method per connection.
``connect(host, port, steps)`` runs the steps in order on ONE connection:

* ``Query(user, key)``: a public-key *query* (no signature) for ``user`` with a public
  key the attacker does not hold the private half of (a member's machine key, a
  PREPJOIN key).  The server answers "OK" or "no"; the client then fails to sign and
  moves on, so the query never completes authentication.
* ``Key(user, private_key)``: a signed public-key login.
* ``Password(user, password)``: a password login.

asyncssh's client sends every public-key attempt as a query first and only signs after
the server's "OK"; it tries public keys before passwords, so steps run in that order
(all key steps, then password steps).  SSH lets the user name change from one attempt
to the next; asyncssh's client keeps one, so the step sets ``_username`` of the
connection before asyncssh builds its request (checked by ``test_rawssh_*``: if a
new asyncssh renames it, these tests fail rather than pass quietly).
Paramiko was not used: its client always signs, so it cannot send a bare query.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.public_key import SSHLocalKeyPair


@dataclass(frozen=True)
class Query:
    user: str
    key: asyncssh.SSHKey  # public key only is used


@dataclass(frozen=True)
class Key:
    user: str
    key: asyncssh.SSHKey  # a private key: the attempt is signed


@dataclass(frozen=True)
class Password:
    user: str
    password: str


Step = Query | Key | Password


class _QueryOnlyPair(SSHLocalKeyPair):
    """A key pair that presents ``public`` and cannot sign: asyncssh sends the query,
    gets PK_OK (or not), fails to sign and tries the next key."""

    def __init__(self, public: asyncssh.SSHKey) -> None:
        throwaway = asyncssh.generate_private_key(public.algorithm.decode())
        super().__init__(throwaway, None, None, None)
        self.public_data = public.public_data

    def sign(self, data: bytes) -> bytes:
        raise ValueError("query only: no private key")


class _Scripted(asyncssh.SSHClient):
    def __init__(self, steps: list[Step]) -> None:
        self.steps: deque[Step] = deque(steps)
        self.conn: asyncssh.SSHClientConnection | None = None
        self.tried: list[Step] = []

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def _as(self, user: str) -> None:
        assert self.conn is not None and hasattr(self.conn, "_username")
        self.conn._username = user

    def public_key_auth_requested(self) -> Any:
        if not self.steps or isinstance(self.steps[0], Password):
            return None
        step = self.steps.popleft()
        self.tried.append(step)
        self._as(step.user)
        if isinstance(step, Query):
            return [_QueryOnlyPair(step.key)]
        return [step.key]

    def password_auth_requested(self) -> str | None:
        while self.steps and not isinstance(self.steps[0], Password):
            self.steps.popleft()  # a key step after a password cannot be sent: skipped
        if not self.steps:
            return None
        step = self.steps.popleft()
        assert isinstance(step, Password)
        self.tried.append(step)
        self._as(step.user)
        return step.password


async def connect(host: str, port: int, steps: list[Step]) -> asyncssh.SSHClientConnection:
    """Run ``steps`` on one connection; raises ``asyncssh.PermissionDenied`` when none
    completes authentication."""
    first = steps[0].user if steps else "nobody"
    conn, _ = await asyncssh.create_connection(
        lambda: _Scripted(list(steps)),
        host,
        port,
        username=first,
        known_hosts=None,
        config=None,
        agent_path=None,
        client_keys=None,
        password=None,
        kbdint_auth=False,
        preferred_auth="publickey,password",
    )
    return conn
