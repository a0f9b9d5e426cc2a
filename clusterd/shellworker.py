"""The shell worker processes (``clusterd.node.workers`` is the node's side).

``python -m clusterd.shellworker FD`` is the zygote: it loads the shell's libraries
once, then forks one worker per admin session that the node sends it (a socket, over
``FD``).  A worker reads its store image from the database once, then follows the
batches the node sends; it runs the shell (``cli.serve.ShellChannel``) on a channel
whose bytes the node relays, and asks the node (``RemoteAPI``) for everything else:
status, the members, commits, membership operations.  Like ``__main__``, this module
puts the program together, so it may import the front end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.core.errors import ClusterdError, StoreError
from clusterd.core.merge import apply, is_applied
from clusterd.node.workerwire import Frames, frame
from clusterd.trust.logins import AdminLogin, role_in

if TYPE_CHECKING:  # loaded by the zygote once its priority is lowered (``zygote``)
    from clusterd.core.versions import Commit
    from clusterd.store.session import Session
    from clusterd.store.store import Store

CHUNK = 256 * 1024
WORKER_NICE = 19  # scheduling priority below the node's (docs/architecture.md)
LAST_WORDS = 5.0  # s a worker waits, once its shell ended, for the node to say stop


class Link:
    """The worker's end of its socket: frames out, frames in, calls and their answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = Frames(from_worker=False)
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.answers: dict[int, tuple[Any, ...]] = {}
        self.held: list[tuple[Any, ...]] = []  # before the session took over
        self.handler: Callable[[tuple[Any, ...]], None] = self.held.append
        # Once the session's loop runs, frames go out without blocking it: what the
        # socket does not take waits here (the node stops reading us while our client
        # reads nothing), and the loop still hears the node meanwhile.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.out = bytearray()
        self._writer = False

    def send(self, message: tuple[Any, ...]) -> None:
        if self.loop is None:  # (before the session: nothing else to do meanwhile)
            with contextlib.suppress(OSError):
                self.sock.sendall(frame(message))
            return
        self.out += frame(message)
        self._flush()

    def run_on(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sock.setblocking(False)

    def _flush(self) -> None:
        try:
            while self.out:
                del self.out[: self.sock.send(self.out)]
        except BlockingIOError:
            pass
        except OSError:
            self.out.clear()  # the node went away: the reader says so
        if self.loop is not None and bool(self.out) != self._writer:
            fd = self.sock.fileno()
            (self.loop.add_writer(fd, self._flush) if self.out else self.loop.remove_writer(fd))
            self._writer = bool(self.out)

    def drain(self, timeout: float | None = None) -> None:
        """Block until every frame is out (a call's question must reach the node)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.out:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            select.select([], [self.sock], [], left)
            self._flush()

    def _read(self) -> bool:
        """Read what is there (nothing, if another reader took it since the event loop
        saw it ready); False at end of file (the node went away)."""
        if not select.select([self.sock], [], [], 0)[0]:
            return True
        try:
            data = self.sock.recv(CHUNK)
        except OSError:
            data = b""
        if not data:
            return False
        for message in self.frames.feed(data):
            self._dispatch(message)
        return True

    def first(self) -> tuple[Any, ...]:
        while not self.held:
            if not self._read():
                raise SystemExit(0)
        return self.held.pop(0)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        if message[0] in ("ok", "err"):
            future = self.waiting.pop(message[1], None)
            if future is None:
                self.answers[message[1]] = message
            elif not future.done():
                if message[0] == "ok":
                    future.set_result(message[2])
                else:
                    future.set_exception(message[2])
            return
        self.handler(message)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Ask the node and wait (this process serves one session: nobody else waits)."""
        cid = next(self.ids)
        self.send(("call", cid, name, args, kwargs))
        self.drain()
        while cid not in self.answers:
            select.select([self.sock], [], [])
            if not self._read():
                raise ClusterdError("the node went away")
        answer = self.answers.pop(cid)
        if answer[0] == "err":
            raise answer[2]
        return answer[2]

    async def acall(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Ask the node; other work goes on meanwhile (questions that take seconds)."""
        return await self._asked(lambda cid: ("call", cid, name, args, kwargs))

    async def acall_as(self, token: str | None, name: str, *args: Any, **kwargs: Any) -> Any:
        """``acall`` for one web session (``clusterd.node.web``: the node answers with
        that session's login; None: before one, to log in)."""
        return await self._asked(lambda cid: ("call", cid, name, args, kwargs, token))

    async def _asked(self, question: Callable[[int], tuple[Any, ...]]) -> Any:
        cid = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[cid] = future
        self.send(question(cid))
        return await future


class RemoteAdmin:
    """The membership operations, carried out by the node."""

    SYNC = ("listing", "prepjoin_print")
    ASYNC = (
        "connstatus",
        "probe",
        "join",
        "remove",
        "set_ccs",
        "create",
        "group_op",
        "set_disconnected",
    )  # (a change: the node answers once it is durable)

    def __init__(self, link: Link) -> None:
        self._link = link

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in self.SYNC:
            return lambda *a, **k: self._link.call("admin." + name, *a, **k)
        if name in self.ASYNC:
            return lambda *a, **k: self._link.acall("admin." + name, *a, **k)
        raise AttributeError(name)


class RemoteAPI:
    """``clusterd.node.api.ClusterAPI`` as a worker's shell sees it: reads of the store
    from this process's image, everything else asked of the node."""

    def __init__(self, link: Link, store: Store, serial: str, max_pending: int) -> None:
        self._link = link
        self.store = store
        self._serial = serial
        self.admin = RemoteAdmin(link)
        self._max_pending = max_pending

    def __getattr__(self, name: str) -> Any:  # the plain questions: the node answers
        if name in ("config", "disconnected", "former_names", "logins"):
            return self._link.call(name)
        if name in ("peer_status", "progress", "members", "link", "sessions", "targets"):
            return lambda *a: self._link.call(name, *a)
        if name in ("status", "check_passphrase", "hash_passphrase", "ask", "node_checks",
                    "lookup", "chain_check"):  # fmt: skip
            return lambda *a: self._link.acall(name, *a)
        raise AttributeError(name)

    @property
    def handshake_timeout(self) -> float:
        return float(self._link.call("timing")[0])

    @property
    def timeout(self) -> float:
        return float(self._link.call("timing")[1])

    # -- read from the image of the store, as the node reads its store ------------------

    @property
    def hostname(self) -> str:
        """This machine's name as the image says (it follows a rename)."""
        for name, row in layers.machines(self.store.state).items():
            if row.get("serial") == self._serial:
                return name
        return self.store.hostname  # standalone

    def effective(self, feature: str) -> layers.Resolved:
        state = self.store.state
        return layers.resolve(state, self.store.catalogue[feature],
                              layers.chain(state, self.hostname))  # fmt: skip

    def users(self) -> dict[str, Any]:
        return self.effective("userconfig").value or {}

    def role(self, login: AdminLogin) -> str | None:
        """For what the shell shows and offers; the node checks every change itself."""
        return role_in(self.effective, login)

    def session(self, user: str, *, bounded: bool = True) -> Session:
        from clusterd.store.session import Session

        return Session(self.store, user, self._max_pending if bounded else None)

    async def commit(
        self,
        session: Session,
        comment: str,
        *,
        role: str,
        on_conflict: str = "keep",
        passwd_of: str | None = None,
        confirm: int | None = None,
        confirming: bool = False,
        probe: str | None = None,
    ) -> Commit | None:
        made = await self._link.acall("commit", session.pending.saved(), comment, on_conflict,
                                      passwd_of, confirm, confirming, probe)  # fmt: skip
        session.pending.clear()
        return made  # type: ignore[no-any-return]

    async def target_rollback(self, user: str, role: str, name: str, back: int) -> Any:
        return await self._link.acall("target_rollback", name, back)  # (the node's rules)

    def target_force(self, user: str, role: str, name: str) -> Any:
        return self._link.call("target_force", name)

    def admit(self, shell: Any) -> str | None:
        return None  # the node counted this session in before it started us

    def leave(self, shell: Any) -> None:
        pass


class Channel:
    """The SSH channel as the shell sees it: its bytes go through the node."""

    def __init__(self, link: Link, info: dict[str, Any]) -> None:
        self.link = link
        self.size = info["size"]
        self.term = info["term"]
        self.peername = info["peername"]
        self.status: int | None = None

    def write(self, data: bytes) -> None:
        self.link.send(("write", bytes(data)))

    def write_stderr(self, data: bytes) -> None:
        self.link.send(("stderr", bytes(data)))

    def exit(self, status: int) -> None:
        if self.status is None:
            self.status = status
            self.link.send(("exit", status))

    def pause_reading(self) -> None:
        self.link.send(("pause", True))

    def resume_reading(self) -> None:
        self.link.send(("pause", False))

    def get_terminal_size(self) -> tuple[int, int, int, int]:
        return (self.size[0], self.size[1], 0, 0)

    def get_terminal_type(self) -> str | None:
        return self.term  # type: ignore[no-any-return]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peername if name == "peername" else default


class ToNode(logging.Handler):
    """The worker's log lines go to the node's log."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += " | " + logging.Formatter().formatException(record.exc_info)
        self.link.send(("log", record.levelno, record.name, text))


def image(link: Link, info: dict[str, Any]) -> Store:
    """A worker's read-only image of the store: read from the database once (``follow``
    keeps it current), or the node's, while the database is down."""
    from clusterd.node.seal import MachineSealer
    from clusterd.store.store import Store

    config = info["config"]
    where = {
        "origin": config.serial,
        "hostname": info["hostname"],
        "readonly": True,
        "sealer": MachineSealer(),
    }  # (it verifies seals for commitdetail; signs none)
    try:
        return Store(config.database_url, **where)
    except StoreError:  # the database is down: the node's image (it changes nothing then)
        return Store(config.database_url, **where, image=link.call("state"))


def follow(store: Store, link: Link, message: tuple[Any, ...]) -> bool:
    """The node's frames that keep the image current (a durable batch; the store
    replaced); False for any other."""
    match message:
        case ("outcomes", outcomes):
            for out in outcomes:
                if not is_applied(store.state, out.commit.id):
                    apply(store.state, out)
            return True
        case ("reload",):
            try:
                store.reload()
            except StoreError:  # the database is down: the node's image
                store.state = link.call("state")
            return True
    return False


async def _serve(link: Link, info: dict[str, Any]) -> None:
    from clusterd.cli.serve import ShellChannel

    config = info["config"]
    store = image(link, info)
    api = RemoteAPI(link, store, config.serial, config.max_pending_changes)
    chan = Channel(link, info)
    shell = ShellChannel(api, info["login"], chan, info["command"])  # type: ignore[arg-type]
    ended = asyncio.Event()

    def handle(message: tuple[Any, ...]) -> None:
        if follow(store, link, message):
            return
        match message:
            case ("data", data):
                shell.feed(data)
            case ("eof",):
                shell.eof()
            case ("writable", yes):
                shell.writable(yes)
            case ("size", size):
                chan.size = size
            case ("stop",):
                shell.stop()
                ended.set()
            case ("logout", why):
                shell.logout(why)

    held, link.held = link.held, []
    link.handler = handle
    for message in held:
        handle(message)
    loop = asyncio.get_running_loop()
    link.run_on(loop)

    def readable() -> None:
        if not link._read():
            loop.remove_reader(link.sock.fileno())
            shell.stop()
            ended.set()

    loop.add_reader(link.sock.fileno(), readable)
    shell.start()
    if shell.task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([shell.task, loop.create_task(ended.wait())],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    with contextlib.suppress(TimeoutError):  # the node has read all we said: it says stop
        await asyncio.wait_for(ended.wait(), LAST_WORDS)
    link.drain(LAST_WORDS)
    store.close()


def connect(fd: int, quiet: str) -> tuple[Link, tuple[Any, ...]]:
    """A worker's link to the node on ``fd``, its log going there (``quiet``: a library
    whose INFO lines are left out), and the node's ``start`` frame."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    link = Link(sock)
    logging.basicConfig(level=logging.INFO, handlers=[ToNode(link)], force=True)
    logging.getLogger(quiet).setLevel(logging.WARNING)
    start = link.first()
    if start[0] != "start":
        raise SystemExit(2)
    return link, start


def session(fd: int) -> None:
    """One admin session, in a process of its own (forked by the zygote)."""
    link, start = connect(fd, "asyncssh")
    try:
        asyncio.run(_serve(link, start[1]))
    except Exception:
        logging.getLogger("clusterd.shell").exception("the shell worker failed")
        Channel(link, start[1]).exit(3)


def _reap(_signum: int, _frame: Any) -> None:
    """Collect every worker that ended."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def zygote(fd: int) -> None:
    """Fork a worker for each socket the node sends; end when the node goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when we end
    signal.signal(signal.SIGCHLD, _reap)  # (their CPU time then counts as ours: bench/)
    control = socket.socket(fileno=fd)
    os.nice(WORKER_NICE)  # the links' process first when both want the CPU, imports too
    import clusterd.cli.serve  # (once, for every worker)
    import clusterd.store.store  # noqa: F401

    gc.freeze()  # what is loaded now stays shared with every worker
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(control, 16, 8)
        except OSError:
            break
        if not message:
            break
        for worker_fd in fds:
            if os.fork() == 0:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                code = 0
                try:
                    session(worker_fd)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 0
                except BaseException:
                    code = 1
                finally:
                    logging.shutdown()
                    os._exit(code)
            os.close(worker_fd)


if __name__ == "__main__":
    zygote(int(sys.argv[1]))
