"""The signatures of the commit chain: this machine's key signs, members' keys verify.

The store hashes and decides (``clusterd.core.chain``); it imports no cryptography, so
the node gives it a ``MachineSealer``.  Signatures are Ed25519 (the machine keys
``clusterd init`` makes) over the 32 bytes of a commit's hash: 25 µs to sign and 82 µs
to verify on the reference machine, so every commit is signed and every commit from a
peer verified, in the store's writer thread.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from clusterd.core.errors import ConfigError

MAX_KEYS = 4096  # parsed public keys kept (members' keys: a handful)


class MachineSealer:
    """Signs with the machine key at ``private_key`` (None: verifies only, as a worker's
    image of the store does); verifies with OpenSSH public key lines."""

    def __init__(self, private_key: Path | None = None) -> None:
        self._key: Ed25519PrivateKey | None = None
        if private_key is not None:
            try:
                key = load_ssh_private_key(private_key.read_bytes(), None)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"machine key {private_key}: {exc}") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError(f"machine key {private_key}: not an Ed25519 key: commits "
                                  "are signed with Ed25519")  # fmt: skip
            self._key = key
        self._public: dict[str, Ed25519PublicKey | None] = {}
        self._lock = threading.Lock()  # (the writer thread and a checking thread)

    def __repr__(self) -> str:
        return f"<MachineSealer {'signs' if self._key else 'verifies only'}>"

    def sign(self, digest: bytes) -> str | None:
        return None if self._key is None else self._key.sign(digest).hex()

    def verify(self, key: str, digest: bytes, sig: str) -> bool | None:
        public = self._parsed(key)
        if public is None:
            return None
        try:
            public.verify(bytes.fromhex(sig), digest)
        except (InvalidSignature, ValueError):
            return False
        return True

    def _parsed(self, key: str) -> Ed25519PublicKey | None:
        with self._lock:
            if key in self._public:
                return self._public[key]
        try:
            found = load_ssh_public_key(key.encode())
        except (ValueError, UnicodeError, UnsupportedAlgorithm):
            found = None
        public = found if isinstance(found, Ed25519PublicKey) else None
        with self._lock:
            if len(self._public) >= MAX_KEYS:
                self._public.clear()
            self._public[key] = public
        return public
