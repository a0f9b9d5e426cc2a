"""The cluster protocol's messages, their registry and their wire framing.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON: one
object whose ``type`` names a registered message.  The registry is append-only: a type
keeps its name and meaning forever and records the protocol version that introduced it,
so a peer speaking an older version can be told what it may receive
(``tests/test_messages.py`` pins the list).

Anything that is not a registered, well-formed message of the negotiated version raises
``ProtocolError``; the caller drops the link and applies nothing.
"""

from __future__ import annotations

import json
import struct
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from clusterd.core.errors import ProtocolError
from clusterd.core.versions import Commit, CommitId, Loss, Seal, Snapshot, Unit, Version, Write

PROTOCOL_MIN = 2  # 2: commits carry their seal (prev, hash, sig); 1 and 2 never link
PROTOCOL_MAX = 2
MAX_FRAME = 64 * 1024 * 1024  # state transfer of a large cluster fits; anything larger is hostile
_HEADER = struct.Struct(">I")

VV = Annotated[
    dict[StrictStr, Annotated[StrictInt, Field(ge=0, lt=1 << 62)]], Field(max_length=1024)
]  # a version vector: one entry per origin (members, bounded), each a commit count


# What a peer says about itself is checked before anything logs it: names are tokens
# (no spaces, no control characters), so a hostile hello cannot forge a log line.
Token = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:+-]{0,253}$")]


Seq = Annotated[StrictInt, Field(ge=1, lt=1 << 62)]  # a commit's number at its origin
Hlc = Annotated[StrictInt, Field(ge=0, lt=1 << 63)]  # a hybrid logical clock reading
Wall = Annotated[float, Field(allow_inf_nan=False)]  # seconds, for people
Hash = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]  # sha256, hex
Sig = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{128}$")]  # Ed25519, hex
# The root of the sender's durable state (``core.unitdigest``): 8 bytes, base64url.
StateRoot = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{11}$")]
# 8 bytes, base64url without padding: the digest of the durable chain heads
# (``clusterd.mesh.witness``).
HeadsDigest = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{11}$")]
# A write: feature, mode, key, value (any JSON; the store validates it), with_reset.
WireWrite = tuple[StrictStr, StrictStr, StrictStr, Any, StrictBool]
# A winning version, and a recorded loss (the version and the commit that beat it).
WireEntry = tuple[StrictStr, StrictStr, StrictStr, Hlc, Token, Seq, Any, StrictBool]
WireLoss = tuple[StrictStr, StrictStr, StrictStr, Hlc, Token, Seq, Any, StrictBool, Token, Seq]
PAYLOAD = ConfigDict(frozen=True, extra="forbid", strict=True)


class CommitBody(BaseModel):
    """A commit on the wire, typed down to its writes; ``writes`` is null for a commit
    whose writes the log dropped (it travels only inside a state transfer).  ``prev``,
    ``hash``, ``sig``: its seal (``clusterd/core/chain.py``; ``hash`` null: a legacy
    commit, without one).  The receiver's store checks it."""

    model_config = PAYLOAD
    origin: Token
    seq: Seq
    hlc: Hlc
    user: StrictStr
    at: Wall
    comment: StrictStr
    context: VV
    writes: tuple[WireWrite, ...] | None
    prev: Hash | None = None
    hash: Hash | None = None
    sig: Sig | None = None

    @classmethod
    def of(cls, c: Commit) -> CommitBody:
        """Ours, to send: built without validation (the receiver validates)."""
        writes = None if c.truncated else tuple(
            (w.unit.feature, w.unit.mode, w.unit.key, w.value, w.with_reset) for w in c.writes
        )  # fmt: skip
        seal = (c.seal.prev, c.seal.hash, c.seal.sig) if c.seal else (None, None, None)
        return cls.model_construct(origin=c.id.origin, seq=c.id.seq, hlc=c.hlc, user=c.user,
                                   at=c.at, comment=c.comment, context=dict(c.context),
                                   writes=writes, prev=seal[0], hash=seal[1],
                                   sig=seal[2])  # fmt: skip

    def commit(self) -> Commit:
        writes = self.writes
        return Commit(
            CommitId(self.origin, self.seq), self.hlc, self.user, self.at, self.comment,
            self.context,
            () if writes is None else tuple(Write(Unit(f, m, k), v, r) for f, m, k, v, r in writes),
            truncated=writes is None,
            seal=None if self.hash is None else Seal(self.prev, self.hash, self.sig),
        )  # fmt: skip


def _version(row: tuple[Any, ...], contexts: dict[CommitId, Any]) -> Version:
    hlc, origin, seq, value, reset = row
    return Version(hlc, origin, seq, value, reset, contexts.get(CommitId(origin, seq), {}))


class SnapshotBody(BaseModel):
    """The whole replicated state on the wire: the log, the winners, the losses."""

    model_config = PAYLOAD
    commits: tuple[CommitBody, ...]
    entries: tuple[WireEntry, ...]
    losses: tuple[WireLoss, ...]

    @classmethod
    def of(cls, snap: Snapshot) -> SnapshotBody:
        def version(v: Version) -> tuple[Any, ...]:
            return (v.hlc, v.origin, v.seq, v.value, v.with_reset)

        return cls.model_construct(
            commits=tuple(CommitBody.of(c) for c in snap.commits),
            entries=tuple((*u, *version(v)) for u, v in snap.entries),
            losses=tuple((*x.unit, *version(x.loser), x.by.origin, x.by.seq) for x in snap.losses),
        )

    def version_vector(self) -> dict[str, int]:
        """``Snapshot.version_vector`` of what it holds, without building it."""
        vv: dict[str, int] = {}
        for c in self.commits:
            vv[c.origin] = max(vv.get(c.origin, 0), c.seq)
        return vv

    def snapshot(self) -> Snapshot:
        commits = tuple(c.commit() for c in self.commits)
        contexts = {c.id: c.context for c in commits}
        return Snapshot(
            commits,
            tuple((Unit(*e[:3]), _version(e[3:], contexts)) for e in self.entries),
            tuple(
                Loss(Unit(*x[:3]), _version(x[3:8], contexts), CommitId(x[8], x[9]))
                for x in self.losses
            ),
        )


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @property
    def type_name(self) -> str:
        """The registry name (every subclass has a literal ``type`` field)."""
        return str(self.__dict__["type"])


class FlagStamp(BaseModel):
    """The sender's winning write of the receiver's DISCONNECT flag."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    hlc: Annotated[StrictInt, Field(ge=0, lt=1 << 63)]
    origin: Token
    disconnected: StrictBool


class Hello(Message):
    """First frame on a link, both ways: who I am and what I speak.

    The one message every version must read, to refuse a peer of another version with
    the reason: so it ignores fields it does not know (``flag`` came after version 1's
    first release; an older peer ignores it)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)
    type: Literal["hello"] = "hello"
    node: Token
    hostname: Token
    cluster: Token
    proto_min: StrictInt
    proto_max: StrictInt
    software: Token
    vv: VV
    flag: FlagStamp | None = None  # the receiver's DISCONNECT flag as the sender has it
    sd: StateRoot | None = None  # the sender's durable state root (``mesh.statedigest``)
    hd: HeadsDigest | None = None  # the sender's durable chain heads (at ``vv``)


class Goodbye(Message):
    """Last frame on a link: why it is being closed (``code`` is machine-readable)."""

    type: Literal["goodbye"] = "goodbye"
    code: StrictStr
    reason: StrictStr


class Ping(Message):
    """Liveness and anti-entropy, sent by the member with the smaller serial of a link.

    ``vv`` (the sender's version vector) and ``links`` (its live links: the route
    table's input) are null when unchanged since the sender's last ping or pong on this
    link, so an idle link carries a few bytes per round whatever the cluster's size.
    ``hd``: the digest of the sender's durable chain heads, with the vector it describes
    (``clusterd.mesh.witness``); ``sd``: the root of its durable state, by the same rule
    (``clusterd.mesh.statedigest``).  Null fields are not encoded (``encode``)."""

    type: Literal["ping"] = "ping"
    seq: StrictInt
    vv: VV | None = None
    links: tuple[StrictStr, ...] | None = None
    hd: HeadsDigest | None = None
    sd: StateRoot | None = None


class Pong(Message):
    type: Literal["pong"] = "pong"
    seq: StrictInt
    vv: VV | None = None
    links: tuple[StrictStr, ...] | None = None
    hd: HeadsDigest | None = None
    sd: StateRoot | None = None


DROP_NULLS = (Ping, Pong)  # sent every round: a null field is left out, not encoded


class CommitMsg(Message):
    """A commit, sent by its origin straight to every member it can reach."""

    type: Literal["commit"] = "commit"
    commit: CommitBody


class VersionVector(Message):
    """The sender's version vector, unprompted (after it took a state transfer)."""

    type: Literal["vv"] = "vv"
    vv: VV


class SyncRequest(Message):
    """Send me what I lack: the requester's version vector."""

    type: Literal["sync_request"] = "sync_request"
    vv: VV


class SyncResponse(Message):
    """Commits the requester lacked, in log order; ``more`` until the last batch."""

    type: Literal["sync_response"] = "sync_response"
    commits: tuple[CommitBody, ...]
    more: StrictBool


class StateTransfer(Message):
    """The whole replicated state, when the log no longer holds what was asked."""

    type: Literal["state_transfer"] = "state_transfer"
    vv: VV
    snapshot: SnapshotBody

    @classmethod
    def of(cls, snap: Snapshot) -> StateTransfer:
        body = SnapshotBody.of(snap)
        return cls.model_construct(vv=body.version_vector(), snapshot=body)


class MembershipChange(Message):
    """The sender was administratively disconnected (or reconnected)."""

    type: Literal["membership"] = "membership"
    node: StrictStr
    disconnected: StrictBool


class Query(Message):
    """A question for the receiver's daemon (digests, connection status ...)."""

    type: Literal["query"] = "query"
    qid: StrictInt
    kind: StrictStr
    args: dict[StrictStr, Any]


class Answer(Message):
    type: Literal["answer"] = "answer"
    qid: StrictInt
    ok: StrictBool
    body: Any


class Relay(Message):
    """A message for ``dst`` carried through a member that has a link to it."""

    type: Literal["relay"] = "relay"
    src: StrictStr
    dst: StrictStr
    ttl: StrictInt
    inner: dict[StrictStr, Any]


# name -> (class, protocol version that introduced it).  Append only.
REGISTRY: dict[str, tuple[type[Message], int]] = {
    "hello": (Hello, 1),
    "goodbye": (Goodbye, 1),
    "ping": (Ping, 1),
    "pong": (Pong, 1),
    "commit": (CommitMsg, 1),
    "vv": (VersionVector, 1),
    "sync_request": (SyncRequest, 1),
    "sync_response": (SyncResponse, 1),
    "state_transfer": (StateTransfer, 1),
    "membership": (MembershipChange, 1),
    "query": (Query, 1),
    "answer": (Answer, 1),
    "relay": (Relay, 1),
}

AnyMessage = Annotated[
    Union[  # noqa: UP007 - a discriminated union needs the Union form
        Hello,
        Goodbye,
        Ping,
        Pong,
        CommitMsg,
        VersionVector,
        SyncRequest,
        SyncResponse,
        StateTransfer,
        MembershipChange,
        Query,
        Answer,
        Relay,
    ],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(AnyMessage)
RELAYABLE = (CommitMsg, Query, Answer)


def to_dict(msg: Message) -> dict[str, Any]:
    return msg.model_dump(mode="json")


def _invalid(exc: PydanticValidationError, data: Any) -> ProtocolError:
    first = exc.errors()[0]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        name = data.get("type") if isinstance(data, dict) else None
        return ProtocolError("unknown", f"unknown message type {name!r}")
    if len(first["loc"]) <= 1 and first["type"] != "missing":
        return ProtocolError("malformed", f"a frame must hold a JSON object: {first['msg']}")
    where = ".".join(str(p) for p in first["loc"][1:]) or "message"
    return ProtocolError("malformed", f"bad {first['loc'][0]} message: {where}: {first['msg']}")


def _checked(msg: Message, version: int) -> Message:
    if REGISTRY[msg.type_name][1] > version:
        raise ProtocolError("unknown", f"{msg.type_name} is not in protocol version {version}")
    return msg


def from_dict(data: Any, version: int = PROTOCOL_MAX) -> Message:
    """Validate a decoded JSON object as a message of protocol ``version``."""
    try:  # through JSON: what came off the wire (lists for tuples) validates the same
        return _checked(_ADAPTER.validate_json(json.dumps(data)), version)
    except PydanticValidationError as exc:
        raise _invalid(exc, data) from None
    except (TypeError, ValueError, RecursionError):
        raise ProtocolError("malformed", "a message must be plain JSON data") from None


def encode(msg: Message) -> bytes:
    body = msg.model_dump_json(exclude_none=isinstance(msg, DROP_NULLS)).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError("oversized", f"{msg.type_name} of {len(body)} bytes")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes, version: int = PROTOCOL_MAX) -> Message:
    try:
        return _checked(_ADAPTER.validate_json(body), version)
    except PydanticValidationError as exc:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        raise _invalid(exc, data) from None
    except RecursionError:
        raise ProtocolError("malformed", "frame nested too deeply") from None


class FrameReader:
    """Sans-I/O frame splitter: feed bytes, get complete frame bodies."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > self.max_frame:
                raise ProtocolError(
                    "oversized", f"frame of {size} bytes exceeds the {self.max_frame} limit"
                )
            end = _HEADER.size + size
            if len(self._buf) < end:
                break
            frames.append(bytes(self._buf[_HEADER.size : end]))
            del self._buf[:end]
        return frames
