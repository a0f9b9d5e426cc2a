"""One admin session's pending changes and the edits it makes.

Sessions never share state: each has its own ``Pending`` and reads the store through
its own ``View``.  Nothing is visible to others until ``commit``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clusterd.core import layers, membership
from clusterd.core.confirm import Asked
from clusterd.core.edits import Editor, Start
from clusterd.core.errors import LifecycleError
from clusterd.core.modes import Mode
from clusterd.core.pending import Conflict, Pending, View
from clusterd.core.versions import JSON, Commit

if TYPE_CHECKING:
    from clusterd.store.store import Store


class Session:
    def __init__(self, store: Store, user: str, limit: int | None = None) -> None:
        self.store = store
        self.user = user
        self.pending = Pending(limit)

    def __repr__(self) -> str:
        return f"<Session {self.user}@{self.store.hostname} pending={len(self.pending)}>"

    @property
    def view(self) -> View:
        return self.store.view(self.pending)

    @property
    def edit(self) -> Editor:
        return Editor(self.view, self.store.catalogue, self.store.hostname)

    def conflicts(self) -> list[Conflict]:
        return self.pending.conflicts(self.store.state)

    def commit(
        self,
        comment: str,
        on_conflict: str | None = None,
        confirm: Asked | None = None,
    ) -> Commit | None:
        """Commit every pending change.  A ``sethostname`` that names a machine anew
        renames it in the same commit (``membership.rename_machine``); standalone, this
        store then belongs to the new name.  A refused commit leaves the pending changes
        as they were."""
        saved = self.pending.saved()
        renames = membership.renamed_in(self.pending)
        standalone = layers.cluster_name(self.store.state) is None
        try:
            for old, new in renames:
                if standalone and old != self.store.hostname:
                    raise LifecycleError(f"no machine {old!r} here (this is {self.store.hostname})")
                membership.rename_machine(self.view, self.store.catalogue, old, new,
                                          by=self.user, at=time.time())  # fmt: skip
            if standalone and renames:
                self.store.hostname = renames[-1][1]  # its own mode is the new one now
            return self.store.commit(self.pending, user=self.user, comment=comment,
                                     on_conflict=on_conflict, confirm=confirm)  # fmt: skip
        except BaseException:
            if standalone and renames:
                self.store.hostname = renames[0][0]
            self.pending.restore(saved)
            raise

    def clear(self) -> int:
        """Discard every pending change; returns how many there were."""
        count = len(self.pending)
        self.pending.clear()
        return count

    # -- edits: see clusterd.core.edits.Editor ----------------------------------------------

    def define(self, command: str, mode: Mode, start: Start) -> Any:
        return self.edit.define(command, mode, start)

    def set_record(self, command: str, mode: Mode, data: Mapping[str, Any]) -> JSON:
        return self.edit.set_record(command, mode, data)

    def set_row(self, command: str, mode: Mode, name: str, data: Mapping[str, Any]) -> JSON:
        return self.edit.set_row(command, mode, name, data)

    def delete_row(self, command: str, mode: Mode, name: str) -> None:
        self.edit.delete_row(command, mode, name)

    def undefine(self, command: str, mode: Mode) -> None:
        self.edit.undefine(command, mode)

    def copy(self, command: str, src: Mode, dst: Mode) -> None:
        self.edit.copy(command, src, dst)

    def move(self, command: str, src: Mode, dst: Mode) -> None:
        self.edit.move(command, src, dst)

    def prepjoin_new(self, hostname: str, serial: str, machine_key: str) -> JSON:
        return self.edit.prepare(hostname, serial, machine_key)

    def prepjoin_delete(self, hostname: str) -> None:
        self.edit.unprepare(hostname)

    def copy_to_all_groups(self, command: str, src: Mode) -> list[Mode]:
        return self.edit.copy_to_all_groups(command, src)
