"""Passphrase hashing and the access features (users, SSH settings)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterd.schema import CATALOGUE, InvalidSetting
from clusterd.schema.access import hash_passphrase, verify_passphrase

FAST = 2**4  # a cheap scrypt cost for tests that hash many times
USERS = CATALOGUE["userconfig"]
SSH = CATALOGUE["sshconfig"]


def test_round_trip_with_default_cost() -> None:
    hashed = hash_passphrase("correct horse battery")
    assert hashed.startswith("scrypt$16384$8$1$")
    assert verify_passphrase("correct horse battery", hashed)
    assert not verify_passphrase("correct horse battery!", hashed)


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=8, max_size=40), st.text(min_size=8, max_size=40))
def test_round_trip(passphrase: str, other: str) -> None:
    hashed = hash_passphrase(passphrase, n=FAST)
    assert verify_passphrase(passphrase, hashed)
    assert verify_passphrase(other, hashed) == (other == passphrase)
    assert USERS.validate_row("u", {"role": "guest", "passphrase_hash": hashed})


def test_salted() -> None:
    assert hash_passphrase("same passphrase", n=FAST) != hash_passphrase("same passphrase", n=FAST)


def test_short_passphrase_rejected() -> None:
    with pytest.raises(ValueError, match="at least 8 characters"):
        hash_passphrase("ironpor")


@pytest.mark.parametrize("n", [0, 1, 3, 2**20])
def test_bad_cost_rejected(n: int) -> None:
    with pytest.raises(ValueError, match="scrypt"):
        hash_passphrase("long enough", n=n)


@pytest.mark.parametrize(
    "stored",
    [
        "ironport1",
        "",
        "scrypt$16384$8$1$AAAA$AAAA",
        # A cost that would need gigabytes to verify.
        "scrypt$1048576$8$1$" + "A" * 22 + "==$" + "A" * 43 + "=",
        # Not a power of two.
        "scrypt$1000$8$1$" + "A" * 22 + "==$" + "A" * 43 + "=",
    ],
)
def test_plain_text_and_malformed_hashes_rejected(stored: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        USERS.validate_row("alice", {"role": "admin", "passphrase_hash": stored})
    assert caught.value.problems == [
        "userconfig row 'alice' field 'passphrase_hash': "
        "passphrase must be stored as a hash; use passwd"
    ]
    assert not verify_passphrase("ironport1", stored)


def test_trailing_newline_in_hash_rejected() -> None:
    hashed = hash_passphrase("long enough", n=FAST)
    with pytest.raises(InvalidSetting):
        USERS.validate_row("alice", {"role": "admin", "passphrase_hash": hashed + "\n"})


def test_user_row() -> None:
    hashed = hash_passphrase("long enough", n=FAST)
    row = USERS.validate_row("alice", {"role": "read-only", "passphrase_hash": hashed})
    assert row == {"full_name": "", "role": "read-only", "passphrase_hash": hashed}
    with pytest.raises(InvalidSetting) as caught:
        USERS.validate_row("alice", {"role": "root", "passphrase_hash": hashed})
    assert caught.value.problems == [
        "userconfig row 'alice' field 'role': "
        "Input should be 'admin', 'operator', 'read-only' or 'guest'"
    ]


def test_no_default_user() -> None:
    assert USERS.factory_value() == {}


@pytest.mark.parametrize(
    "key",
    [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2U=",
        "ssh-rsa AAAAB3NzaC1yc2E= alice@laptop",
        "ecdsa-sha2-nistp384 AAAAE2VjZHNh with a comment",
    ],
)
def test_admin_keys_accepted(key: str) -> None:
    record = SSH.validate_record({"admin_keys": [{"user": "alice", "key": key}]})
    assert record["admin_keys"] == [{"user": "alice", "key": key}]
    assert record["kex_algorithms"][0] == "curve25519-sha256"


@pytest.mark.parametrize(
    "key",
    [
        "ssh-dss AAAAB3NzaC1kc3M=",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!",
        "ssh-ed25519 AAAA\nssh-rsa AAAA",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_admin_keys_rejected(key: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        SSH.validate_record({"admin_keys": [{"user": "alice", "key": key}]})
    assert caught.value.problems == [
        "sshconfig field 'admin_keys.0.key': "
        "not an OpenSSH public key line ('ssh-ed25519 AAAA... comment')"
    ]


def test_algorithms() -> None:
    default = SSH.factory_value()
    assert default["mac_algorithms"] == [
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha2-256",
    ]
    with pytest.raises(InvalidSetting) as caught:
        SSH.validate_record({"kex_algorithms": ["curve25519-sha256", "curve25519-sha256", " "]})
    assert caught.value.problems == ["sshconfig field 'kex_algorithms.2': not a name: ' '"]
    with pytest.raises(InvalidSetting) as caught:
        SSH.validate_record({"kex_algorithms": ["curve25519-sha256", "curve25519-sha256"]})
    assert caught.value.problems == [
        "sshconfig field 'kex_algorithms': 'curve25519-sha256' is listed twice"
    ]
