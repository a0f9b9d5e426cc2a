"""The node's side of the web interface (``docs/web.md``): its socket, its process, its
sessions.

The node binds the HTTPS socket at start and hands it to one web worker process
(``clusterd.web.worker``) with one end of a socket pair; the worker serves HTTP and
keeps an image of the store (the frames of the shell workers: ``outcomes``,
``reload``).  The node authenticates: a login's passphrase is checked here, as an SSH
login's is, and the session (a random token, a CSRF token, an expiry) is the node's.
Every call the worker makes names its session, and is answered with that session's
login and its role as it is now (``clusterd.node.workers.Calls``); an unknown or
expired session is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import logging
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from clusterd.core.errors import ClusterdError, ConfigError, ProtocolError, SessionExpired
from clusterd.mesh.members import key_text
from clusterd.node.config import DaemonConfig, web_address
from clusterd.node.workers import SOCKET_HIGH_WATER, Calls
from clusterd.node.workerwire import Frames, frame
from clusterd.trust.logins import AdminLogin

if TYPE_CHECKING:
    from clusterd.core.merge import Outcome
    from clusterd.node.daemon import Daemon

log = logging.getLogger("clusterd.web")
WORKER = "clusterd.webworker"
RESTART = 1.0  # s before a web worker that ended is started again
MAX_SESSIONS = 1000  # at once; the oldest goes when a login would pass this
CHALLENGE_SECONDS = 60.0  # a key login's challenge is good for this long
CHALLENGE_PREFIX = b"clusterd web login "  # what is signed: this, then the challenge


def bind(config: DaemonConfig) -> socket.socket:
    """The HTTPS socket, bound and listening (``ConfigError``: one line that says why)."""
    assert config.web_listen is not None
    host, port = web_address(config.web_listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"web_listen {config.web_listen}: {exc.strerror or exc}; choose "
                          "another port, or stop what holds it") from None  # fmt: skip
    sock.set_inheritable(True)
    return sock


def certificate(config: DaemonConfig) -> tuple[Path, Path]:
    """The certificate and key files the web interface serves: the admin's, or this
    machine's own (made once, for its name and listening address, kept in the data
    directory; the key 0600)."""
    if config.web_cert is not None and config.web_key is not None:
        return config.web_cert, config.web_key
    cert, key = config.data_dir / "web.crt", config.data_dir / "web.key"
    if cert.exists() and key.exists():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, config.hostname)])
    names: list[x509.GeneralName] = [x509.DNSName(config.hostname)]
    assert config.web_listen is not None
    names.append(x509.IPAddress(ipaddress.ip_address(web_address(config.web_listen)[0])))
    now = datetime.datetime.now(datetime.UTC)
    made = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(private, hashes.SHA256()))  # fmt: skip
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    key.chmod(0o600)
    cert.write_bytes(made.public_bytes(serialization.Encoding.PEM))
    return cert, key


@dataclass
class WebSession:
    token: str
    login: AdminLogin
    csrf: str
    source: str
    expires: float  # monotonic
    since: float = field(default_factory=time.time)


class SessionCalls(Calls):
    """A ``Calls`` for one web session: answers go to the web worker's socket."""

    def __init__(self, web: Web, session: WebSession) -> None:
        # (Calls reads its relay's api, login and send_bytes: this object has them)
        self.relay = self  # type: ignore[assignment]
        self.api = web.daemon.api
        self.login = session.login
        self._web = web

    def send_bytes(self, data: bytes) -> None:
        self._web.send_bytes(data)


class Web(asyncio.Protocol):
    """The web interface of a daemon: its worker process, and the sessions."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.sock = bind(daemon.config)
        self.cert, self.key = certificate(daemon.config)
        self.sessions: dict[str, WebSession] = {}
        self.challenges: dict[str, tuple[AdminLogin, float]] = {}  # key logins under way
        self.calls: dict[str, SessionCalls] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.frames = Frames(from_worker=True)
        self.stopping = False
        self.started = 0  # workers started (status)

    # -- the worker process ---------------------------------------------------------------

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER, str(theirs.fileno()), str(self.sock.fileno())],
            pass_fds=[theirs.fileno(), self.sock.fileno()], stdin=subprocess.DEVNULL,
            close_fds=True,
        )  # fmt: skip
        theirs.close()
        self.started += 1
        self.frames = Frames(from_worker=True)
        await asyncio.get_running_loop().create_unix_connection(lambda: self, sock=ours)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=SOCKET_HIGH_WATER)
        c = self.daemon.config
        self.send(("start", {"config": c, "hostname": c.hostname, "cert": str(self.cert),
                             "key": str(self.key)}))  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.stopping:
            return
        log.error("the web worker ended; starting another in %.0f s", RESTART)
        loop = asyncio.get_running_loop()
        loop.call_later(RESTART, lambda: loop.create_task(self._restart()))

    async def _restart(self) -> None:
        self._reap()
        if not self.stopping:
            await self.start()

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0)

    def close(self) -> None:
        self.stopping = True
        if self.transport is not None:
            self.transport.close()
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
            if self.proc.poll() is None:
                self.proc.kill()
        self.sock.close()

    # -- frames -----------------------------------------------------------------------------

    def send(self, message: tuple[Any, ...]) -> None:
        self.send_bytes(frame(message))

    def send_bytes(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def applied(self, outcomes: list[Outcome]) -> None:
        self.send(("reload",) if len(outcomes) > 100 else ("outcomes", outcomes))

    def replaced(self) -> None:
        self.send(("reload",))

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.frames.feed(data)
        except ProtocolError as exc:
            log.error("web worker: %s; restarting it", exc)
            if self.transport is not None:
                self.transport.close()
            return
        for message in messages:
            self._received(message)

    def _received(self, message: tuple[Any, ...]) -> None:
        match message:
            case ("log", int() as level, str() as name, str() as text):
                logging.getLogger(name).log(level, "%s", text)
            case ("call", int() as cid, str() as name, tuple() as args, dict() as kwargs,
                  str() | None as token):  # fmt: skip
                self._call(cid, name, args, kwargs, token)
            case _:
                log.error("web worker sent %r: ignored", message[0])

    def _call(self, cid: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              token: str | None) -> None:  # fmt: skip
        if token is None:  # before a session: logging in, and the image of the store
            if name in ("login", "login_challenge", "login_key"):
                asyncio.get_running_loop().create_task(self._login(cid, name, *args, **kwargs))
            elif name == "state":  # (the database is down: the worker reads ours)
                self.send(("ok", cid, self.daemon.store.state))
            else:
                self.send(("err", cid, ClusterdError(f"{name}: log in first")))
            return
        session = self.sessions.get(token)
        if session is None or session.expires < time.monotonic():
            self._forget(token)
            self.send(("err", cid, SessionExpired("the session expired: log in again")))
            return
        session.expires = time.monotonic() + self.daemon.config.web_session_minutes * 60
        if name == "logout":
            self._forget(token)
            self.send(("ok", cid, True))
            return
        self.calls[token].handle(cid, name, args, kwargs)

    def _forget(self, token: str) -> None:
        self.sessions.pop(token, None)
        self.calls.pop(token, None)

    # -- logging in ---------------------------------------------------------------------------

    async def _login(self, cid: int, how: str, *args: Any) -> None:
        try:
            words = [str(a) for a in args]
            if how == "login":
                answer: Any = await self.login(*words)
            elif how == "login_challenge":
                answer = self.challenge(*words)
            else:
                answer = self.key_login(*words)
        except (ClusterdError, TypeError) as exc:
            self.send(("err", cid, ClusterdError(str(exc))))
            return
        self.send(("ok", cid, answer))

    def challenge(self, user: str, key: str, source: str) -> str:
        """A key login's first step: a fresh challenge for ``user``'s public ``key`` (one
        of the cluster's admin keys for that user, as for SSH), to sign within a minute."""
        login = self.daemon.auth.admin_key_login(user, key_text(key))
        if login is None:
            self.daemon.auth.failed(source, f"web login: key not accepted for user {user!r}")
            raise ClusterdError("wrong user or key")
        now = time.monotonic()
        self.challenges = {c: v for c, v in self.challenges.items() if v[1] > now}
        if len(self.challenges) >= MAX_SESSIONS:
            raise ClusterdError("too many key logins under way; try again in a minute")
        made = secrets.token_urlsafe(32)
        self.challenges[made] = (login, now + CHALLENGE_SECONDS)
        return made

    def key_login(self, challenge: str, signature: str, source: str) -> dict[str, Any]:
        """A key login's second step: the challenge signed with the key's private half."""
        login, expires = self.challenges.pop(challenge, (None, 0.0))
        if login is None or expires < time.monotonic():
            raise ClusterdError("no such challenge (or it expired): ask another")
        try:
            key = asyncssh.import_public_key(login.key)
            ok = key.verify(CHALLENGE_PREFIX + challenge.encode(), base64.b64decode(signature))
        except (ValueError, asyncssh.KeyImportError):
            ok = False
        if not ok:
            self.daemon.auth.failed(source, f"web login: bad key signature for {login.user!r}")
            raise ClusterdError("the signature does not match the key")
        return self._session(login, source)

    async def login(self, user: str, passphrase: str, source: str) -> dict[str, Any]:
        """A session for ``user`` if the passphrase is right (the SSH login's checks and
        lockout); ``ClusterdError`` says why not, without saying whether the user exists."""
        auth = self.daemon.auth
        host = source.rpartition(":")[0] or source
        blocked = auth.blocked(host)
        if blocked:
            auth.failed(source, f"web login: {blocked}")
            raise ClusterdError(blocked)
        role, why = await auth.check_passphrase(user, passphrase)
        if role is None:
            auth.failed(source, f"web login: {why}", counts=True)
            raise ClusterdError("wrong user or passphrase")
        return self._session(AdminLogin(user, "passphrase"), source)

    def _session(self, login: AdminLogin, source: str) -> dict[str, Any]:
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.since)
            self._forget(oldest.token)
        token = secrets.token_urlsafe(32)
        expires = time.monotonic() + self.daemon.config.web_session_minutes * 60
        session = WebSession(token, login, secrets.token_urlsafe(24), source, expires)
        self.sessions[token] = session
        self.calls[token] = SessionCalls(self, session)
        self.daemon.logins.append({"at": time.time(), "source": f"web {source}", "ok": True,
                                   "user": login.user})  # fmt: skip
        role = self.daemon.auth.role(login)
        log.info("web login: %s from %s (%s, %s)", login.user, source, role, login.method)
        return {"token": token, "csrf": session.csrf, "user": login.user, "role": role,
                "minutes": self.daemon.config.web_session_minutes}  # fmt: skip

    def status(self) -> dict[str, Any]:
        c = self.daemon.config
        return {"listen": c.web_listen, "sessions": len(self.sessions),
                "worker": self.proc is not None and self.proc.poll() is None,
                "started": self.started}  # fmt: skip
