"""Real daemons with the web interface on, and a small HTTPS client for its JSON API
(the web tests: ``test_web_api.py``, ``test_web_browser.py``)."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterd.dev.testbed import Machine, Testbed, free_port
from tests.test_security_roles import add_users


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    """The JSON API of one member, as a script uses it (a bearer token), or as a page's
    script would (the cookie, and the CSRF header unless ``csrf=False``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.token: str | None = None
        self.csrf: str | None = None
        self.cookie: str | None = None

    def request(self, method: str, path: str, body: Any = None, *, bearer: bool = True,
                csrf: bool = True, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=30)
        sent = dict(headers or {})
        if self.token and bearer:
            sent["Authorization"] = f"Bearer {self.token}"
        elif self.cookie:
            sent["Cookie"] = self.cookie
            if csrf and self.csrf:
                sent["X-CSRF-Token"] = self.csrf
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            reply = conn.getresponse()
            text = reply.read()
            found = dict(reply.getheaders())
        finally:
            conn.close()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text.decode(errors="replace")
        return Answer(reply.status, parsed, {k.lower(): v for k, v in found.items()})

    def login(self, user: str, passphrase: str) -> Answer:
        answer = self.request("POST", "/api/v1/login", {"user": user, "passphrase": passphrase})
        if answer.status == 200:
            self.token, self.csrf = answer.body["token"], answer.body["csrf"]
            self.cookie = answer.headers["set-cookie"].split(";")[0]
        return answer

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)

    def edit(self, feature: str, mode: str, **edit: Any) -> Answer:
        return self.post(f"/api/v1/features/{feature}/edit?mode={mode}", edit)


@dataclass
class WebBed:
    bed: Testbed
    ports: dict[int, int]  # member index -> its web port
    keys: dict[str, Path]  # user -> key file (rita: read-only, gus: guest, opal: operator)

    def url(self, i: int) -> str:
        return f"https://127.0.0.1:{self.ports[i]}"

    def client(self, i: int) -> Client:
        return Client(self.ports[i])

    @property
    def machines(self) -> list[Machine]:
        return self.bed.machines


@contextmanager
def web_cluster(tmp_path: Path, n: int = 3, web: tuple[int, ...] = (0, 1),
                before: Callable[[Testbed], None] | None = None,
                **each_extra: Any) -> Iterator[WebBed]:  # fmt: skip
    """``n`` members, the web interface on those of ``web``; a group Paris holding the
    last member; users rita (read-only), gus (guest) and opal (operator).  ``before``
    prepares the machines' directories before they start."""
    ports = {i: free_port() for i in web}
    each = {i: {"web_listen": f"127.0.0.1:{port}", **each_extra} for i, port in ports.items()}
    with Testbed(tmp_path, n, each=each) as bed:
        if before is not None:
            before(bed)
        bed.start()
        bed.wait(bed.linked, what="linked")
        m0 = bed.machines[0]
        keys = add_users(m0, tmp_path, {"rita": "read-only", "gus": "guest", "opal": "operator"})
        m0.op("addgroup", group="Paris")
        m0.op("setgroup", machine=bed.machines[-1].hostname, group="Paris")
        bed.wait(bed.converged, what="users and groups everywhere")
        yield WebBed(bed, ports, keys)
