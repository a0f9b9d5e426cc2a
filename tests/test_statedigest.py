"""The state root on hellos, pings and pongs, and what a receiver makes of it
(``mesh.statedigest``), through the protocol ``Node`` driven by hand."""

from __future__ import annotations

import pytest

from clusterd.core.errors import ProtocolError
from clusterd.core.unitdigest import root_text
from clusterd.mesh.messages import Hello, Ping, Pong, from_dict
from clusterd.mesh.peers import Action
from clusterd.mesh.protocol import FULL_EVERY, Node
from clusterd.mesh.statedigest import StateDiffers, StateDigests
from tests.test_protocol import A, B, T, TinyLog, commit, handshake, node, sends


class RootedLog(TinyLog):
    """A log with a durable state root (None: a write under way)."""

    def __init__(self, root: int | None = 1) -> None:
        super().__init__([commit(A, 1)])
        self.root = root

    def state_root(self) -> int | None:
        return self.root


def differs(actions: list[Action]) -> list[StateDiffers]:
    return [a for a in actions if isinstance(a, StateDiffers)]


Up = tuple[Node, Node, RootedLog, RootedLog, list[Action], list[Action]]


def up(a_root: int | None, b_root: int | None) -> Up:
    la, lb = RootedLog(a_root), RootedLog(b_root)
    a, b = node(0, log=la), node(1, log=lb)
    a.start(0.0)
    b.start(0.0)
    at_b, at_a = handshake(a, 1, b, 2)
    return a, b, la, lb, at_a, at_b


def round_trip(a: Node, b: Node, now: float) -> tuple[Ping, Pong, list[Action], list[Action]]:
    """One ping from a (the smaller serial) and b's pong: (ping, pong, b's, a's)."""
    [ping] = [m for m in sends(a.tick(now)) if isinstance(m, Ping)]
    at_b = b.received(2, ping, now)
    [pong] = [m for m in sends(at_b) if isinstance(m, Pong)]
    return ping, pong, at_b, a.received(1, pong, now)


def test_a_hello_carries_the_root_and_a_log_without_one_sends_none() -> None:
    la = RootedLog(0x0123456789ABCDEF)
    a, b = node(0, log=la), node(1)
    a.start(0.0)
    b.start(0.0)
    assert b.link_opened(2, 0.0, peer=A, outbound=False) == []
    [hello] = sends(a.link_opened(1, 0.0, peer=B, outbound=True))
    assert isinstance(hello, Hello) and hello.sd == root_text(0x0123456789ABCDEF)
    [reply] = [m for m in sends(b.received(2, hello, 0.0)) if isinstance(m, Hello)]
    assert reply.sd is None  # b's TinyLog keeps no root (the pure simulation's)
    assert differs(a.received(1, reply, 0.0)) == []
    _, _, b_acts, a_acts = round_trip(a, b, T.ping_interval)
    assert differs(a_acts) == differs(b_acts) == []


def test_pings_carry_the_root_when_changed_and_every_full_round_only_when_durable() -> None:
    a, b, la, _, _, _ = up(7, 7)
    now, seen = 0.0, []
    for i in range(1, 2 * FULL_EVERY + 1):
        now += T.ping_interval
        if i == 3:
            la.root = None  # a write under way: the durable state is not the vector's
        if i == 4:
            la.root = 8  # written: changed
        if i == 5:
            la.root = 7
        ping, pong, _, _ = round_trip(a, b, now)
        seen.append((i, ping.sd, pong.sd))
    carried = {i: sd for i, sd, _ in seen if sd is not None}
    assert carried == {4: root_text(8), 5: root_text(7), FULL_EVERY: root_text(7),
                       2 * FULL_EVERY: root_text(7)}  # fmt: skip
    pongs = {i for i, _, sd in seen if sd is not None}
    assert pongs == {FULL_EVERY, 2 * FULL_EVERY}  # b's root never changed


def test_same_commits_and_another_root_is_said_once_on_both_sides_then_cleared() -> None:
    a, b, _, lb, at_a, at_b = up(7, 9)
    assert differs(at_a) == [StateDiffers(B, True)]  # from b's hello
    assert differs(at_b) == [StateDiffers(A, True)]  # from a's hello
    now = 0.0
    for _ in range(2 * FULL_EVERY):
        now += T.ping_interval
        _, _, b_acts, a_acts = round_trip(a, b, now)
        assert differs(a_acts) == differs(b_acts) == []  # said once
    lb.root = 7  # b repaired (or rejoined)
    now += T.ping_interval
    _, pong, b_acts, a_acts = round_trip(a, b, now)
    assert pong.sd == root_text(7)  # changed: sent
    assert differs(b_acts) == [StateDiffers(A, False)]  # a's 7, heard with its hello
    assert differs(a_acts) == [StateDiffers(B, False)]
    now += T.ping_interval
    _, _, b_acts, a_acts = round_trip(a, b, now)
    assert differs(a_acts) == differs(b_acts) == []


def test_different_vectors_are_lag_not_divergence_until_they_meet() -> None:
    la, lb = RootedLog(7), RootedLog(9)
    lb.add(commit(A, 2))  # b holds one more commit
    a, b = node(0, log=la), node(1, log=lb)
    a.start(0.0)
    b.start(0.0)
    at_b, at_a = handshake(a, 1, b, 2)
    assert differs(at_a) == differs(at_b) == []
    la.add(commit(A, 2))  # a catches up, its root unchanged (as corruption would leave it)
    _, _, b_acts, a_acts = round_trip(a, b, T.ping_interval)
    assert differs(a_acts) == [StateDiffers(B, True)]  # b's root, heard with its hello
    assert differs(b_acts) == []  # a's root was heard at a's older vector


def test_no_root_while_writing_means_no_comparison() -> None:
    a, b, la, _, at_a, at_b = up(None, 9)
    assert differs(at_a) == differs(at_b) == []
    la.root = 7
    _, _, b_acts, a_acts = round_trip(a, b, T.ping_interval)
    assert differs(a_acts) == [StateDiffers(B, True)]
    assert differs(b_acts) == [StateDiffers(A, True)]  # a's ping carried its new root


@pytest.mark.parametrize("sd", ["", "short", "A" * 12, "AAAAAAAAAA=", 5])
def test_a_malformed_root_is_a_protocol_error(sd: object) -> None:
    for kind in ("ping", "pong"):
        with pytest.raises(ProtocolError):
            from_dict({"type": kind, "seq": 1, "vv": None, "links": None, "sd": sd})
    hello = {"type": "hello", "node": A, "hostname": "h", "cluster": "c", "proto_min": 2,
             "proto_max": 2, "software": "1", "vv": {}, "sd": sd}  # fmt: skip
    with pytest.raises(ProtocolError):
        from_dict(hello)


def test_old_frames_without_the_field_still_read() -> None:
    ping = from_dict({"type": "ping", "seq": 1, "vv": None, "links": None})
    assert isinstance(ping, Ping) and ping.sd is None


def test_forget_drops_a_removed_peer() -> None:
    s = StateDigests()
    assert s.to_send(B, 1, "AAAAAAAAAAA", full=False) == "AAAAAAAAAAA"
    assert s.to_send(B, 1, "AAAAAAAAAAA", full=False) is None
    assert s.to_send(B, 2, "AAAAAAAAAAA", full=False) == "AAAAAAAAAAA"  # a new link
    s.heard_from(B, "AAAAAAAAAAB", {}, {}, "AAAAAAAAAAA")
    assert s.told
    s.forget(B)
    assert not (s.sent or s.heard or s.told)


def test_a_new_link_says_a_standing_divergence_again() -> None:
    s, vv = StateDigests(), {A: 1}
    assert s.heard_from(B, "AAAAAAAAAAB", vv, vv, "AAAAAAAAAAA") == [StateDiffers(B, True)]
    assert s.heard_from(B, "AAAAAAAAAAB", vv, vv, "AAAAAAAAAAA") == []
    again = s.heard_from(B, "AAAAAAAAAAB", vv, vv, "AAAAAAAAAAA", hello=True)
    assert again == [StateDiffers(B, True)]
    assert s.heard_from(B, None, vv, vv, "AAAAAAAAAAB") == [StateDiffers(B, False)]
