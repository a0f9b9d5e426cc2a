"""Shell worker processes: each admin session's shell runs in a process of its own.

The node keeps the SSH server and authentication.  Each admin session (a shell or
one command) goes to a worker forked from a zygote process that has the shell's
libraries loaded (``clusterd.shellworker``), as OpenSSH's privilege separation and
PostgreSQL's backends do.  One socket pair per session carries frames
(``clusterd.node.workerwire``):
- the channel's bytes, both ways, with flow control and the terminal's size;
- the calls the shell makes of the API (``Calls``), each checked here against the
  login this node authenticated, never against what the worker says;
- every batch the store makes durable, so the worker's read-only image of the store
  follows without reading the database again.

The link loop relays bytes and answers calls.  prompt_toolkit, completion, rendering
and the commands' own work run in the workers (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from clusterd.core.errors import ClusterdError, ProtocolError
from clusterd.core.merge import Outcome
from clusterd.core.pending import Pending, PendingWrite
from clusterd.node.api import require_write
from clusterd.node.redact import redact
from clusterd.node.workerwire import Frames, frame
from clusterd.trust.logins import AdminLogin

if TYPE_CHECKING:
    from clusterd.node.api import ClusterAPI

log = logging.getLogger("clusterd.shell")
ZYGOTE = "clusterd.shellworker"
BIG_BATCH = 100  # commits in one batch above which workers read the store again
SOCKET_HIGH_WATER = 64 * 1024  # bytes for a worker not read yet: then the channel waits


class Zygote:
    """The process that forks workers: started once, the shell's imports done there.

    The first is forked from the node before its event loop and threads start, so it
    shares the libraries the node loaded (copy-on-write) and loads only the shell.
    One that died is replaced by a fresh interpreter (``python -m``): the node has
    threads by then, and forking a threaded process is not safe."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def _start(self, fork: bool) -> None:
        ours, theirs = socket.socketpair()
        if fork:
            pid = os.fork()
            if pid == 0:  # the zygote; only ever leaves through os._exit
                code = 0
                try:
                    ours.close()
                    importlib.import_module(ZYGOTE).zygote(theirs.detach())
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            self.pid = pid
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", ZYGOTE, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True,
            )  # fmt: skip
            self.pid = self.proc.pid
        theirs.close()
        self.sock = ours

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def start(self, *, fork: bool = False) -> None:
        if not self._alive():
            self.close(wait=0.0)
            self._start(fork)

    def spawn(self) -> socket.socket:
        """A new worker's end of its socket pair (the worker has the other)."""
        self.start()
        ours, theirs = socket.socketpair()
        try:
            assert self.sock is not None
            socket.send_fds(self.sock, [b"w"], [theirs.fileno()])
        except OSError:  # the zygote died since: once more with a new one
            self.close(wait=0.0)
            self.start()
            assert self.sock is not None
            socket.send_fds(self.sock, [b"w"], [theirs.fileno()])
        finally:
            theirs.close()
        return ours

    def close(self, wait: float = 0.5) -> None:
        """End the zygote: end of file on its socket, then (after ``wait`` seconds, none
        on the event loop) SIGKILL."""
        if self.sock is not None:
            self.sock.close()  # the zygote ends at end of file
            self.sock = None
        deadline = time.monotonic() + wait
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._alive() and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
        self.pid = self.proc = None


class Workers:
    """The shell factory of a daemon whose shells run in worker processes."""

    def __init__(self) -> None:
        self.zygote = Zygote()
        self.relays: set[ShellRelay] = set()

    def start(self) -> None:
        """Before the event loop and its threads: the zygote is forked from here."""
        self.zygote.start(fork=True)

    def close(self) -> None:
        for relay in list(self.relays):
            relay.stop()
        self.zygote.close()

    def __call__(
        self, api: ClusterAPI, login: AdminLogin, chan: Any, command: str | None
    ) -> ShellRelay:
        return ShellRelay(self, api, login, chan, command)

    def applied(self, outcomes: list[Outcome]) -> None:
        """A durable batch: every worker's image takes it (encoded once for all).  A
        large one (a page of a catch-up) is not pickled here: the workers read the
        store again, on their own CPU."""
        if self.relays:
            self._to_all(("reload",) if len(outcomes) > BIG_BATCH else ("outcomes", outcomes))

    def replaced(self) -> None:
        """The store was replaced (a state transfer): every worker reads it again."""
        self._to_all(("reload",))

    def _to_all(self, message: tuple[Any, ...]) -> None:
        data = frame(message)
        for relay in self.relays:
            relay.send_bytes(data)


class ShellRelay(asyncio.Protocol):
    """The node's side of one admin session in a worker: the SSH channel here, the shell
    there."""

    def __init__(
        self, workers: Workers, api: ClusterAPI, login: AdminLogin, chan: Any, command: str | None
    ) -> None:
        self.workers = workers
        self.api = api
        self.login = login
        self.user = login.user
        self.chan = chan
        self._command = command
        self.command = None if command is None else redact(command)
        peer = chan.get_extra_info("peername") or ("?", 0)
        self.source = f"{peer[0]}:{peer[1]}"
        self.since = time.time()
        self.transport: asyncio.Transport | None = None
        self.frames = Frames(from_worker=True)
        self.early: list[bytes] = []  # what came before the worker's socket was ready
        self.size: tuple[int, int] = (0, 0)
        self.ended = False
        self.holds: set[str] = set()  # why the channel is not read: "worker", "socket"
        self.calls = Calls(self)

    def __repr__(self) -> str:
        return f"<ShellRelay {self.user}@{self.source} {self.command or 'shell'}>"

    # -- ShellIO: what the SSH server tells us -------------------------------------------

    def start(self) -> None:
        refusal = self.api.admit(self)
        if refusal is not None:
            self._end(refusal, 1)
            return
        try:
            sock = self.workers.zygote.spawn()
        except OSError as exc:
            log.error("%s: no shell worker: %s", self.user, exc)
            self.api.leave(self)
            self._end("Error: the shell could not start here (logged).", 3)
            return
        self.workers.relays.add(self)
        self._hold("socket", True)  # the channel is read once the worker can be told
        asyncio.get_running_loop().create_task(self._connect(sock))

    async def _connect(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=SOCKET_HIGH_WATER)
        chan = self.chan
        width, height = chan.get_terminal_size()[:2]
        self.size = (width, height)
        store = self.api.store
        info = {
            "config": self.api.config,
            "login": self.login,
            "command": self._command,
            "term": chan.get_terminal_type(),
            "size": self.size,
            "peername": chan.get_extra_info("peername"),
            "hostname": store.hostname,
        }
        self.send(("start", info))
        for data in self.early:
            self.send_bytes(data)
        self.early.clear()
        self._hold("socket", False)

    def feed(self, data: bytes) -> None:
        self._resized()
        self.send(("data", data))

    def eof(self) -> None:
        self.send(("eof",))

    def writable(self, yes: bool) -> None:
        """The client reads our output again, or stopped: the worker is told (it reads
        no new line meanwhile) and its output waits in its socket, not in our memory."""
        self.send(("writable", yes))
        if self.transport is not None and not self.transport.is_closing():
            (self.transport.resume_reading if yes else self.transport.pause_reading)()

    def stop(self) -> None:
        """The channel closed, or the daemon stops: the worker ends."""
        self._closed()

    def logout(self, why: str) -> None:
        log.info("%s: shell closed: %s", self.user, why)
        self.send(("logout", why))

    def _resized(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            width, height = self.chan.get_terminal_size()[:2]
            if (width, height) != self.size:
                self.size = (width, height)
                self.send(("size", self.size))

    # -- to the worker --------------------------------------------------------------------

    def send(self, message: tuple[Any, ...]) -> None:
        self.send_bytes(frame(message))

    def send_bytes(self, data: bytes) -> None:
        if self.transport is None:
            if not self.ended:
                self.early.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    # -- from the worker ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.frames.feed(data)
        except ProtocolError as exc:
            log.error("%s: shell worker: %s; session ended", self.user, exc)
            self._end("Error: internal error (logged)", 3)
            return
        for message in messages:
            self._received(message)

    def _received(self, message: tuple[Any, ...]) -> None:
        match message:
            case ("write", bytes() as data):
                with contextlib.suppress(OSError, RuntimeError):
                    self.chan.write(data)
            case ("stderr", bytes() as data):  # a one-command call's notes
                with contextlib.suppress(OSError, RuntimeError):
                    self.chan.write_stderr(data)
            case ("exit", int() as status):
                self._end("", status)
            case ("pause", bool() as pause):
                self._hold("worker", pause)
            case ("log", int() as level, str() as name, str() as text):
                logging.getLogger(name).log(level, "%s", text)
            case ("call", int() as cid, str() as name, tuple() as args, dict() as kwargs):
                self.calls.handle(cid, name, args, kwargs)
            case _:
                log.error("%s: shell worker sent %r: ignored", self.user, message[0])

    # -- flow control: the channel is read only while neither the worker (its input is
    # full) nor its socket (the worker is not reading) holds it -------------------------

    def pause_writing(self) -> None:
        self._hold("socket", True)

    def resume_writing(self) -> None:
        self._hold("socket", False)

    def _hold(self, why: str, on: bool) -> None:
        before = bool(self.holds)
        (self.holds.add if on else self.holds.discard)(why)
        if bool(self.holds) != before:
            with contextlib.suppress(OSError, RuntimeError):
                (self.chan.pause_reading if self.holds else self.chan.resume_reading)()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended:
            log.error("%s: shell worker ended without an exit status", self.user)
            self._end("Error: internal error (logged)", 3)

    def _end(self, text: str, status: int) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if text:
                self.chan.write((text + "\n").encode())
            self.chan.exit(status)
        self._closed()

    def _closed(self) -> None:
        """The session is over: the worker is told to go (it waits for this, so that it
        never closes its end while its last frames are unread here)."""
        if self.ended:
            return
        self.send(("stop",))
        self.ended = True
        self.early.clear()
        self.workers.relays.discard(self)
        self.api.leave(self)
        if self.transport is not None:
            transport = self.transport
            asyncio.get_running_loop().call_later(0.5, transport.close)  # the stop first


Handler = Callable[..., Any]


class Calls:
    """The API calls a worker may make, answered with this session's login and role."""

    def __init__(self, relay: ShellRelay) -> None:
        self.relay = relay
        self.api = relay.api
        self.login = relay.login

    def handle(self, cid: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        handler = getattr(self, "call_" + name.replace(".", "_"), None)
        if handler is None:
            self._answer(cid, None, ClusterdError(f"no call {name!r}"))
            return
        try:
            result = handler(*args, **kwargs)
        except Exception as exc:
            self._answer(cid, None, self._error(name, exc))
            return
        if isinstance(result, Awaitable):
            asyncio.get_running_loop().create_task(self._later(cid, name, result))
        else:
            self._answer(cid, result, None)

    async def _later(self, cid: int, name: str, result: Awaitable[Any]) -> None:
        try:
            self._answer(cid, await result, None)
        except Exception as exc:
            self._answer(cid, None, self._error(name, exc))

    def _error(self, name: str, exc: Exception) -> Exception:
        if isinstance(exc, ClusterdError):
            return exc
        log.exception("%s: %s failed", self.login.user, name)
        return ClusterdError("internal error (logged)")

    def _answer(self, cid: int, value: Any, error: Exception | None) -> None:
        try:
            data = frame(("ok", cid, value) if error is None else ("err", cid, error))
        except Exception:  # an error that does not pickle: its words
            data = frame(("err", cid, ClusterdError(str(error or "unpicklable answer"))))
        self.relay.send_bytes(data)

    def _role(self) -> str:
        role = self.api.role(self.login)
        if role is None:
            raise ClusterdError(f"user {self.login.user!r} no longer exists in this cluster")
        return role

    def _write(self, what: str) -> str:
        """The login's user, once its role allows a change (as the role is now)."""
        require_write(self.login.user, self._role(), what)
        return self.login.user

    # -- this machine ---------------------------------------------------------------------

    def call_config(self) -> Any:
        return self.api.config

    def call_disconnected(self) -> bool:
        return self.api.disconnected

    def call_timing(self) -> tuple[float, float]:
        return self.api.handshake_timeout, self.api.timeout

    def call_former_names(self) -> dict[str, str]:
        return dict(self.api.former_names)

    def call_state(self) -> Any:
        """The store's image, for a worker that cannot read the database."""
        return self.api.store.state

    async def call_status(self) -> dict[str, Any]:
        return await self.api.status()

    def call_peer_status(self) -> list[dict[str, Any]]:
        return self.api.peer_status()

    def call_progress(self) -> dict[str, Any]:
        return self.api.progress()

    def call_members(self) -> dict[str, Any]:
        return self.api.members()

    def call_link(self, serial: str) -> Any:
        peer = self.api.link(serial)
        return peer

    def call_sessions(self) -> list[dict[str, Any]]:
        return self.api.sessions()

    def call_logins(self) -> list[dict[str, Any]]:
        return list(self.api.logins)

    async def call_check_passphrase(self, user: str, passphrase: str) -> bool:
        if user != self.login.user and self._role() != "admin":
            raise ClusterdError("only an admin may check another user's passphrase")
        return await self.api.check_passphrase(user, passphrase)

    async def call_hash_passphrase(self, passphrase: str) -> str:
        return await self.api.hash_passphrase(passphrase)

    # -- changing -------------------------------------------------------------------------

    async def call_commit(
        self,
        saved: dict[tuple[str, str], dict[str, PendingWrite]],
        comment: str,
        on_conflict: str,
        passwd_of: str | None,
        confirm: int | None = None,
        confirming: bool = False,
        probe: str | None = None,
    ) -> Any:
        """A worker's pending changes, committed here as if made here: every value
        validated again (the worker's word that it checked them counts for nothing)."""
        session = self.api.session(self.login.user, bounded=False)
        pending = Pending()
        pending.restore({mode: {key: PendingWrite(pw.value, pw.base) for key, pw in rows.items()}
                         for mode, rows in saved.items()})  # fmt: skip
        session.pending = pending
        return await self.api.commit(session, comment, role=self._role(), on_conflict=on_conflict,
                                     passwd_of=passwd_of, confirm=confirm,
                                     confirming=confirming, probe=probe)  # fmt: skip

    async def call_install_preview(self, writes: list[Any]) -> dict[str, Any]:
        return await self.api.install_preview(writes)

    def call_targets(self) -> dict[str, Any]:
        return self.api.targets()

    async def call_target_rollback(self, name: str, back: int) -> dict[str, Any]:
        return await self.api.target_rollback(self.login.user, self._role(), name, back)

    def call_target_force(self, name: str) -> dict[str, Any]:
        return self.api.target_force(self.login.user, self._role(), name)

    async def call_ask(self, serial: str, kind: str, args: dict[str, Any], timeout: float) -> Any:
        return await self.api.ask(serial, kind, args, timeout)

    async def call_node_checks(self, asked: dict[str, Any]) -> dict[str, Any]:
        return await self.api.node_checks(asked)

    async def call_chain_check(self) -> dict[str, Any]:
        return await self.api.chain_check()

    async def call_lookup(self, name_or_address: str, reverse: bool) -> Any:
        return await self.api.lookup(name_or_address, reverse)

    # -- membership operations ------------------------------------------------------------

    def call_admin_listing(self) -> dict[str, Any]:
        return self.api.admin.listing()

    def call_admin_prepjoin_print(self) -> dict[str, Any]:
        return self.api.admin.prepjoin_print()

    async def call_admin_connstatus(self) -> dict[str, Any]:
        return await self.api.admin.connstatus()

    async def call_admin_probe(self, address: str, port: int) -> dict[str, Any]:
        self._write("probe a member")
        return await self.api.admin.probe(address, port)

    async def call_admin_create(self, name: str, user: str) -> dict[str, Any]:
        return await self.api.admin.create(name, self._write("create a cluster"))

    async def call_admin_join(self, **request: Any) -> dict[str, Any]:
        self._write("join a cluster")
        return await self.api.admin.join(**request)

    async def call_admin_group_op(self, op: str, args: dict[str, Any], user: str) -> dict[str, Any]:
        return await self.api.admin.group_op(op, args, self._write(f"change the cluster ({op})"))

    async def call_admin_remove(self, machine: str, user: str) -> dict[str, Any]:
        return await self.api.admin.remove(machine, self._write("change the cluster (remove)"))

    async def call_admin_set_disconnected(
        self, machine: str, flag: bool, user: str
    ) -> dict[str, Any]:
        by = self._write("change the cluster (disconnect)")
        return await self.api.admin.set_disconnected(machine, flag, by)

    async def call_admin_set_ccs(self, enabled: bool, user: str) -> dict[str, Any]:
        return await self.api.admin.set_ccs(enabled, self._write("change the cluster (ccs)"))
