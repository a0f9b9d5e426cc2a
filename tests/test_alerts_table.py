"""docs/alerts.md's table of alert kinds is what the mailer uses: each kind listed there
has that class and severity (``clusterd.node.alertmail``), which decide who gets it."""

from __future__ import annotations

import re
from pathlib import Path

from clusterd.node.alertmail import alert_class, recipients, severity

TABLE = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


def rows() -> list[tuple[str, str, str]]:
    found = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[1] not in ("clustering", "system"):
            continue
        found += [(kind, cells[1], cells[2]) for kind in re.findall(r"`([^`]+)`", cells[0])]
    return found


def test_every_kind_in_the_table_has_its_class_and_severity() -> None:
    listed = rows()
    kinds = {k for k, _, _ in listed}
    assert {"fork", "history went back", "corruption", "divergence", "bad commit"} <= kinds
    for kind, cls, sev in listed:
        assert (alert_class(kind), severity(kind)) == (cls, sev), kind


def test_a_corruption_reaches_whoever_wants_critical_system_alerts() -> None:
    rows_ = {
        "ops@example.com": {"classes": ["system"], "severities": ["critical"]},
        "net@example.com": {"classes": ["clustering"], "severities": ["critical"]},
        "all@example.com": {"classes": ["all"], "severities": ["warning"]},
    }
    assert recipients(rows_, "corruption") == ["ops@example.com"]
    assert recipients(rows_, "fork") == ["net@example.com"]
    assert recipients(rows_, "divergence") == ["all@example.com"]
