"""Faults on real processes: transport delay (``link_delay_ms``) and the netns campaign.

The campaign test is a bounded ``bench/netns_faults.py`` run: 5 members in network
namespaces created for it, ~60 commits, a partition, random loss, a kill -9 and
restart, delay on one member; digests, version vectors, every acknowledged row and
``PRAGMA integrity_check`` are checked.  It needs root, ``ip`` and ``nft`` and is
skipped (saying which) without them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import netns_faults
from clusterd.dev.testbed import Machine, Testbed
from clusterd.mesh.transport.ssh import _LinkChannel
from clusterd.node import config

FEATURE = "unsubscribe"
DEFINE = {"do": "define", "feature": FEATURE, "mode": "cluster", "start": "empty"}


def set_row(name: str) -> dict[str, Any]:
    return {"do": "set_row", "feature": FEATURE, "mode": "cluster", "row": name,
            "value": {"comment": name}}  # fmt: skip


class Chan:
    """A stand-in channel: when each frame reached it."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "a frame written after close"
        self.frames.append((asyncio.get_running_loop().time(), data))

    def close(self) -> None:
        self.closed = True


def channel(delay_ms: float, jitter_ms: float) -> tuple[_LinkChannel, Chan]:
    settings = SimpleNamespace(link_delay_ms=delay_ms, link_jitter_ms=jitter_ms)
    link = _LinkChannel(SimpleNamespace(config=settings))
    link.chan = Chan()
    return link, link.chan


async def test_link_delay_holds_each_frame_and_keeps_the_link_order() -> None:
    loop = asyncio.get_running_loop()
    link, chan = channel(50.0, 100.0)  # up to 150 ms each: reorders if nothing prevents it
    sent = []
    for i in range(40):
        sent.append((loop.time(), b"frame %d" % i))
        link.write(sent[-1][1])
        if i == 0:
            assert chan.frames == []  # nothing leaves at once (each frame's delay: below)
        if i % 4 == 0:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.4)
    assert [data for _, data in chan.frames] == [data for _, data in sent]
    for (wrote, _), (arrived, _) in zip(sent, chan.frames, strict=True):
        assert arrived - wrote >= 0.05 - 0.002  # the event loop's clock resolution


async def test_closing_a_delayed_link_drops_what_it_holds() -> None:
    link, chan = channel(100.0, 0.0)
    link.write(b"first")
    await asyncio.sleep(0.15)
    link.write(b"held")
    link.close()
    await asyncio.sleep(0.2)
    assert [data for _, data in chan.frames] == [b"first"] and chan.closed
    link2, chan2 = channel(100.0, 0.0)
    link2.write(b"held")
    link2._lost(None)  # the connection went away
    await asyncio.sleep(0.2)
    assert chan2.frames == [] and link2._timer is None


async def test_without_delay_a_frame_goes_straight_to_the_channel() -> None:
    link, chan = channel(0.0, 0.0)
    link.write(b"now")
    assert [data for _, data in chan.frames] == [b"now"] and link._timer is None


def test_link_delay_on_real_daemons_delays_commits_and_keeps_them_in_order(
    tmp_path: Path,
) -> None:
    bed = Testbed(tmp_path, 2, ping=0.5)
    slow, other = bed[0], bed[1]
    slow.config = config.save(slow.config, link_delay_ms=200.0, link_jitter_ms=150.0)
    with bed:
        bed.start()
        bed.wait(bed.linked, timeout=30.0, what="links")
        slow.edit(DEFINE)
        bed.wait(bed.converged, timeout=30.0, what="the definition")

        def seen(m: Machine) -> int:
            return int(m.status()["vv"].get(slow.serial, 0))

        for i in range(3):
            target = seen(slow) + 1
            start = time.monotonic()
            slow.edit(set_row(f"one{i}@x.example"))
            bed.wait(lambda: seen(other) >= target, timeout=30.0, what="the commit")  # noqa: B023
            assert time.monotonic() - start >= 0.2
        # A burst: every commit leaves right away, each frame held 200-350 ms; the other
        # member must see them in order (none waiting for an earlier one, ever).
        burst = [f"burst{i:02d}@x.example" for i in range(12)]
        for name in burst:
            slow.edit(set_row(name))
        deadline = time.monotonic() + 30.0
        while True:
            status = other.status()
            assert status["waiting_commits"] == 0, "a commit arrived before an earlier one"
            rows = other.ask({"op": "get", "feature": FEATURE, "mode": "cluster"})["value"]
            have = [name for name in burst if name in rows]
            assert have == burst[: len(have)]
            if len(have) == len(burst) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert have == burst
        assert bed.converged()


def test_five_members_in_namespaces_survive_partition_loss_delay_and_kill(
    tmp_path: Path,
) -> None:
    why = netns_faults.requirements()
    if why:
        pytest.skip(f"netns fault campaign: {why}")
    opts = netns_faults.Options(seed=7, commits=60, members=5, ping=0.5, rate=15.0, round_s=2.0)
    opts.converge_timeout = 60.0
    lines: list[str] = []
    report = netns_faults.run(opts, tmp_path, lines.append)
    progress = "\n".join(lines)
    assert report["ok"], netns_faults.text(report) + "\n" + progress
    assert report["rows_lost"] == 0 and report["rows_acknowledged"] == 60
    assert report["digests_equal"] and report["vv_equal"]
    assert set(report["integrity"].values()) == {"ok"}
    assert report["kills"] >= 1 and all(x["result"] == "ok" for x in report["integrity_after_kill"])
    for kind in ("partition", "loss", "delay", "kill"):
        assert report["faults"].get(kind, 0) >= 1, (kind, report["faults"])
    assert report["converge_s"] is not None
