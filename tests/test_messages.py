"""The wire protocol's messages: an append-only registry, exact framing, and clear errors.

Whatever bytes a peer sends, decoding yields ``Message`` objects or raises
``ProtocolError`` (code ``malformed``, ``unknown`` or ``oversized``): never anything else.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterd.core.errors import ProtocolError
from clusterd.mesh import messages
from clusterd.mesh.messages import (
    MAX_FRAME,
    REGISTRY,
    Answer,
    FrameReader,
    Goodbye,
    Hello,
    MembershipChange,
    Message,
    Ping,
    Pong,
    Query,
    Relay,
    SyncRequest,
    VersionVector,
    decode_body,
    encode,
    from_dict,
    to_dict,
)

# The registry is append-only: a peer running an older version relies on every name
# keeping its meaning and its version.  A new message type may only be APPENDED here
# (with the protocol version that introduced it); never rename, reorder or remove one.
PINNED_REGISTRY = [
    ("hello", 1),
    ("goodbye", 1),
    ("ping", 1),
    ("pong", 1),
    ("commit", 1),
    ("vv", 1),
    ("sync_request", 1),
    ("sync_response", 1),
    ("state_transfer", 1),
    ("membership", 1),
    ("query", 1),
    ("answer", 1),
    ("relay", 1),
]

COMMIT = {
    "origin": "S001",
    "seq": 3,
    "hlc": 1_800_000_000_000_000,
    "user": "admin",
    "at": 12.5,
    "comment": "é ünïcode",
    "context": {"S000": 2},
    "writes": [["settz", "cluster", "", {"timezone": "UTC"}, False]],
}

EXAMPLES: dict[str, Message] = {
    "hello": Hello(
        node="S000",
        hostname="m0.example.com",
        cluster="prod",
        proto_min=1,
        proto_max=1,
        software="1.0",
        vv={"S000": 4, "S001": 0},
    ),
    "goodbye": Goodbye(code="version", reason="software versions differ"),
    "ping": Ping(seq=7, vv={"S000": 1}, links=("S001", "S002")),
    "pong": Pong(seq=7, vv={}, links=()),
    "commit": from_dict({"type": "commit", "commit": COMMIT}),
    "vv": VersionVector(vv={"S001": 3}),
    "sync_request": SyncRequest(vv={"S000": 1}),
    "sync_response": from_dict(
        {"type": "sync_response", "commits": [COMMIT, COMMIT], "more": True}
    ),
    "state_transfer": from_dict(
        {
            "type": "state_transfer",
            "vv": {"S001": 3},
            "snapshot": {"commits": [COMMIT], "entries": [], "losses": []},
        }
    ),
    "membership": MembershipChange(node="S002", disconnected=True),
    "query": Query(qid=5, kind="digest", args={"mode": None}),
    "answer": Answer(qid=5, ok=True, body=["abc", 1, None, {"x": [1.5]}]),
    "relay": Relay(src="S000", dst="S002", ttl=3, inner={"type": "query", "qid": 1}),
}


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def decode_error(body: bytes | str, version: int = messages.PROTOCOL_MAX) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_body(body.encode() if isinstance(body, str) else body, version)
    return info.value


# -- the registry ------------------------------------------------------------------------


def test_registry_is_append_only() -> None:
    found = [(name, version) for name, (_, version) in REGISTRY.items()]
    assert found[: len(PINNED_REGISTRY)] == PINNED_REGISTRY, (
        "the message registry is append-only: a type keeps its name, place and version "
        "forever; only append new types (and pin them in PINNED_REGISTRY)"
    )
    assert found == PINNED_REGISTRY, (
        "a message type was appended to REGISTRY: append it to PINNED_REGISTRY too"
    )


def test_every_registered_class_carries_its_registry_name() -> None:
    for name, (cls, _) in REGISTRY.items():
        assert cls.model_fields["type"].default == name
        assert EXAMPLES[name].type_name == name
        assert isinstance(EXAMPLES[name], cls)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_type_round_trips_through_the_wire(name: str) -> None:
    msg = EXAMPLES[name]
    [body] = FrameReader().feed(encode(msg))
    assert decode_body(body) == msg
    assert json.loads(body)["type"] == name
    assert from_dict(msg.model_dump()) == msg  # python-mode data validates too


@pytest.mark.parametrize(
    "name",
    list(REGISTRY),
)
def test_from_dict_accepts_decoded_json(name: str) -> None:
    # from_dict's contract: "validate a decoded JSON object"; to_dict's output is one.
    body = encode(EXAMPLES[name])[4:]
    assert from_dict(json.loads(body)) == EXAMPLES[name]
    assert from_dict(to_dict(EXAMPLES[name])) == EXAMPLES[name]


def test_examples_cover_the_registry() -> None:
    assert set(EXAMPLES) == set(REGISTRY)


# -- framing -----------------------------------------------------------------------------

STREAM = [EXAMPLES["hello"], EXAMPLES["ping"], EXAMPLES["sync_response"], EXAMPLES["goodbye"]]
WIRE = b"".join(encode(m) for m in STREAM)


def test_several_frames_in_one_chunk() -> None:
    reader = FrameReader()
    assert [decode_body(b) for b in reader.feed(WIRE)] == STREAM
    assert reader.feed(b"") == []


def test_frames_split_at_every_byte_boundary() -> None:
    for cut in range(len(WIRE) + 1):
        reader = FrameReader()
        bodies = reader.feed(WIRE[:cut]) + reader.feed(WIRE[cut:])
        assert [decode_body(b) for b in bodies] == STREAM, f"split at byte {cut}"


def test_frames_fed_one_byte_at_a_time() -> None:
    reader = FrameReader()
    bodies = [body for i in range(len(WIRE)) for body in reader.feed(WIRE[i : i + 1])]
    assert [decode_body(b) for b in bodies] == STREAM


def test_an_empty_frame_is_a_frame() -> None:
    assert FrameReader().feed(frame(b"") + frame(b"{}")) == [b"", b"{}"]


def test_oversized_header_is_refused_before_the_body_arrives() -> None:
    reader = FrameReader(max_frame=100)
    assert reader.feed(struct.pack(">I", 100)) == []  # exactly the limit: wait for the body
    reader = FrameReader(max_frame=100)
    assert reader.feed(struct.pack(">I", 101)[:2]) == []  # half a header: nothing yet
    with pytest.raises(ProtocolError) as info:
        reader.feed(struct.pack(">I", 101)[2:])
    assert info.value.code == "oversized"
    assert "101" in str(info.value) and "100" in str(info.value)


def test_default_limit_refuses_a_4_gib_header() -> None:
    with pytest.raises(ProtocolError) as info:
        FrameReader().feed(b"\xff\xff\xff\xff")
    assert info.value.code == "oversized"
    assert FrameReader().max_frame == MAX_FRAME


def test_encode_refuses_a_body_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages, "MAX_FRAME", 20)
    with pytest.raises(ProtocolError) as info:
        encode(Goodbye(code="x", reason="a reason well over twenty bytes"))
    assert info.value.code == "oversized"
    assert "goodbye" in str(info.value)


# -- decoding errors ---------------------------------------------------------------------

PING = {"type": "ping", "seq": 1, "vv": {"S000": 1}, "links": ["S001"]}


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ("{not json", "malformed", ["JSON object", "Invalid JSON"]),
        (b"\xff\xfe\x00", "malformed", ["JSON object"]),
        ("", "malformed", ["JSON object"]),
        ("[1, 2]", "malformed", ["JSON object"]),
        ('"ping"', "malformed", ["JSON object"]),
        ("null", "malformed", ["JSON object"]),
        ('{"type": "launch_missiles"}', "unknown", ["unknown message type 'launch_missiles'"]),
        ('{"type": 5}', "unknown", ["unknown message type 5"]),
        ({**PING, "seq": "1"}, "malformed", ["bad ping message", "seq", "integer"]),
        ({**PING, "seq": True}, "malformed", ["bad ping message", "seq"]),
        ({**PING, "vv": {"S000": "1"}}, "malformed", ["bad ping message", "vv.S000"]),
        ({**PING, "links": "S001"}, "malformed", ["bad ping message", "links"]),
        ({**PING, "admin": True}, "malformed", ["bad ping message", "admin", "Extra"]),
        (
            {"type": "ping", "vv": {}, "links": []},
            "malformed",
            ["bad ping message: seq", "required"],
        ),
        (
            {"type": "hello", "node": "S0"},
            "malformed",
            ["bad hello message", "required"],
        ),
        (
            {"type": "relay", "src": "a", "dst": "b", "ttl": 1, "inner": []},
            "malformed",
            ["bad relay message", "inner"],
        ),
    ],
    ids=lambda v: None if isinstance(v, list) else str(v)[:40],
)
def test_bad_frames_raise_protocol_error(
    body: str | bytes | dict[str, Any], code: str, words: list[str]
) -> None:
    raw = json.dumps(body) if isinstance(body, dict) else body
    error = decode_error(raw)
    assert error.code == code, str(error)
    for word in words:
        assert word in str(error), str(error)
    assert error.reason == str(error)
    if isinstance(body, dict):  # the same object, already parsed, fails the same way
        with pytest.raises(ProtocolError) as again:
            from_dict(body)
        assert again.value.code == code


def test_a_frame_without_a_type_is_refused() -> None:
    error = decode_error("{}")
    assert error.code in ("unknown", "malformed")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_a_type_newer_than_the_negotiated_version_is_unknown(name: str) -> None:
    data = EXAMPLES[name].model_dump()
    with pytest.raises(ProtocolError) as info:
        from_dict(data, version=0)
    assert info.value.code == "unknown"
    assert f"{name} is not in protocol version 0" in str(info.value)
    body = encode(EXAMPLES[name])[4:]
    assert decode_error(body, version=0).code == "unknown"
    assert from_dict(data, version=1) == EXAMPLES[name]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # 100 kB: a legal frame size
        b'{"type":"answer","qid":1,"ok":true,"body":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=["unbalanced", "valid-json"],
)
def test_deeply_nested_json_is_a_protocol_error(body: bytes) -> None:
    # The driver only catches ProtocolError: anything else escapes its read loop.
    assert decode_error(body).code == "malformed"


def test_moderately_nested_json_is_refused_cleanly() -> None:
    body = b'{"type":"answer","qid":1,"ok":true,"body":' + b"[" * 300 + b"]" * 300 + b"}"
    assert decode_error(body).code == "malformed"


# -- fuzz ----------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, database=None)


def decode_all(chunks: list[bytes], max_frame: int = MAX_FRAME) -> list[Message]:
    """What a driver does with bytes from a link: frames, then messages."""
    reader = FrameReader(max_frame)
    return [decode_body(body) for chunk in chunks for body in reader.feed(chunk)]


def survives(chunks: list[bytes], max_frame: int = MAX_FRAME) -> None:
    try:
        out = decode_all(chunks, max_frame)
    except ProtocolError as exc:
        assert exc.code in ("malformed", "unknown", "oversized")
        assert str(exc)
    else:
        assert all(isinstance(m, Message) for m in out)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=6), st.integers(0, 80))
def test_fuzz_arbitrary_bytes(chunks: list[bytes], max_frame: int) -> None:
    survives(chunks, max_frame)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_fuzz_arbitrary_bodies_in_valid_frames(bodies: list[bytes]) -> None:
    survives([b"".join(frame(b) for b in bodies)])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    st.sampled_from([*REGISTRY, "nope"]),
    st.dictionaries(
        st.sampled_from(["node", "seq", "vv", "links", "code", "reason", "commit", "qid", "x"]),
        JSON,
    ),
)
def test_fuzz_json_objects_with_a_type(name: str, fields: dict[str, Any]) -> None:
    survives([frame(json.dumps({"type": name, **fields}).encode())])


@FUZZ
@given(st.sampled_from(list(EXAMPLES)), st.data())
def test_fuzz_corrupted_valid_frames(name: str, data: st.DataObject) -> None:
    wire = bytearray(encode(EXAMPLES[name]))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] = data.draw(st.integers(0, 255))
    survives([bytes(wire)])
