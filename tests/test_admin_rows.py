"""What a machine writes about itself into membership when it creates or joins."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clusterd.node import identity
from clusterd.node.admin import Admin


def row(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config = identity.init(tmp_path / "m", "m.example.com", "SER-M", overrides)
    holder: Any = SimpleNamespace(config=config)
    return Admin(holder).my_row(ccs=bool(overrides.get("ccs_enabled")))


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])
def test_a_wildcard_listen_address_is_not_advertised(tmp_path: Path, listen: str) -> None:
    assert row(tmp_path, listen=listen)["address"] is None  # members resolve the name


def test_a_specific_address_is_advertised_unless_told_not_to(tmp_path: Path) -> None:
    assert row(tmp_path / "a", listen="127.0.0.7")["address"] == "127.0.0.7"
    assert row(tmp_path / "b", listen="127.0.0.7", advertise_address=False)["address"] is None


def test_ccs_row_and_keys_without_comments(tmp_path: Path) -> None:
    found = row(tmp_path, ccs_enabled=True, ccs_port=2299)
    assert found["transport"] == "ccs" and found["ccs_port"] == 2299
    for key in ("host_key", "machine_key"):
        assert found[key].startswith("ssh-ed25519 ") and len(found[key].split()) == 2
