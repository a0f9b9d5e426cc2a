"""A link's frames reach the node in the order they came, though a big one (a state
transfer) is decoded elsewhere (``Member.offload``: the daemon's thread) and the
frames behind it wait.  The offload here runs its jobs when the test says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clusterd.core.errors import ProtocolError
from clusterd.core.versions import Snapshot, Unit, Version
from clusterd.mesh.member import BIG_FRAME, Member
from clusterd.mesh.messages import Message, Ping, StateTransfer, encode
from clusterd.mesh.peers import Action


class Node:
    """What the member hands the protocol, in order."""

    def __init__(self) -> None:
        self.links: dict[int, object] = {}
        self.got: list[Any] = []

    def link_opened(self, link: int, now: float, peer: str, outbound: bool) -> list[Action]:
        self.links[link] = object()
        return []

    def received(self, link: int, msg: Message, now: float) -> list[Action]:
        self.got.append(msg)
        return []

    def link_closed(self, link: int, now: float, reason: str) -> list[Action]:
        del self.links[link]
        return []

    def frame_error(self, link: int, now: float, exc: ProtocolError) -> list[Action]:
        self.got.append(exc)
        del self.links[link]  # (the protocol closes the link)
        return []


class Later:
    """An offload whose jobs run when ``run`` is called."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    def __call__(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        self.jobs.append((job, done))

    def run(self) -> None:
        while self.jobs:
            job, done = self.jobs.pop(0)
            try:
                found = job()
            except Exception as exc:  # as the daemon's offload gives it
                found = exc
            done(found)


def member() -> tuple[Member, Node, Later]:
    node, later = Node(), Later()
    m = Member(node, None, None, lambda: 0.0, later)  # type: ignore[arg-type]
    m.opened(1, None, "S001", outbound=False)  # type: ignore[arg-type]
    return m, node, later


def big_transfer() -> bytes:
    entries = tuple(
        (Unit("unsubscribe", "cluster", f"u{i}@x.example"), Version(i + 1, "S001", 1, {}))
        for i in range(BIG_FRAME // 60)
    )
    frame = encode(StateTransfer.of(Snapshot((), entries, ())))
    assert len(frame) > BIG_FRAME
    return frame


def test_frames_behind_a_big_one_wait_for_it() -> None:
    m, node, later = member()
    big = big_transfer()
    m.data(1, encode(Ping(seq=1)) + big + encode(Ping(seq=2)))
    assert [x.seq for x in node.got] == [1]  # the big one is being decoded
    m.data(1, encode(Ping(seq=3)))  # arrives meanwhile: waits too
    assert len(node.got) == 1
    later.run()
    assert [type(x).__name__ for x in node.got] == ["Ping", "StateTransfer", "Ping", "Ping"]
    assert [x.seq for x in node.got if isinstance(x, Ping)] == [1, 2, 3]
    m.data(1, encode(Ping(seq=4)))  # no big frame pending: straight through
    assert node.got[-1].seq == 4


def test_a_big_frame_that_is_no_message_ends_the_link_and_what_follows_is_dropped() -> None:
    m, node, later = member()
    junk = b'{"type": "ping", "x": "' + b"A" * BIG_FRAME + b'"}'
    m.data(1, len(junk).to_bytes(4, "big") + junk + encode(Ping(seq=2)))
    later.run()
    [error] = node.got
    assert isinstance(error, ProtocolError) and "ping" in str(error)
    assert m.backlog == {}


def test_a_link_closed_while_its_big_frame_is_decoded_gets_nothing_more() -> None:
    m, node, later = member()
    m.data(1, big_transfer() + encode(Ping(seq=2)))
    m.closed(1, "gone")
    later.run()
    assert node.got == [] and m.backlog == {}
