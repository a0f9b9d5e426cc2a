"""Frames between the node and a shell worker process (``clusterd.node.workers``).

A frame is a 4-byte big-endian length and a pickle of one tuple whose first item
names it.  The node trusts what it sends its own worker.  It reads a worker's frames
with ``NodeUnpickler``, which builds nothing but plain data and the core's value
types: a worker that an admin's input subverted cannot make the node run code.

Node to worker: ``start``, ``data``, ``eof``, ``writable``, ``size``, ``stop``,
``logout``, ``outcomes`` (a batch the store applied), ``reload`` (the store was
replaced), ``ok`` / ``err`` (answers to calls).
Worker to node: ``write``, ``exit``, ``pause``, ``log``, ``call``.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

from clusterd.core.errors import ProtocolError

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
PLAIN = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
         "float", "bool", "complex", "NoneType"}  # fmt: skip
CORE = "clusterd.core."


def frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class NodeUnpickler(pickle.Unpickler):
    """Plain data and the classes of ``clusterd.core`` (pure value types, no I/O)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in PLAIN:
            return super().find_class(module, name)
        if module.startswith(CORE):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"a worker may not send {module}.{name}")


class Frames:
    """Whole frames out of a byte stream, as it arrives."""

    def __init__(self, *, from_worker: bool) -> None:
        self.buffer = bytearray()
        self.from_worker = from_worker

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        self.buffer += data
        found = []
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            if size > MAX_FRAME:
                raise ProtocolError("worker", f"a worker frame of {size:,} bytes")
            if len(self.buffer) < HEADER.size + size:
                break
            body = bytes(self.buffer[HEADER.size : HEADER.size + size])
            del self.buffer[: HEADER.size + size]
            found.append(self._load(body))
        return found

    def _load(self, body: bytes) -> tuple[Any, ...]:
        try:
            if self.from_worker:
                message = NodeUnpickler(io.BytesIO(body)).load()
            else:
                message = pickle.loads(body)
        except Exception as exc:
            raise ProtocolError("worker", f"an unreadable worker frame: {exc}") from None
        if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
            raise ProtocolError("worker", "a worker frame that is not a named tuple")
        return message
