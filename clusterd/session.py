"""One admin session's pending changes and the edits it makes.

Sessions never share state: each has its own ``Pending`` and reads the store through
its own ``View``.  Nothing is visible to others until ``commit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clusterd.edits import Editor
from clusterd.pending import Conflict, Pending, View
from clusterd.versions import Commit

if TYPE_CHECKING:
    from clusterd.store import Store


class Session:
    def __init__(self, store: Store, user: str) -> None:
        self.store = store
        self.user = user
        self.pending = Pending()

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

    def commit(self, comment: str, on_conflict: str | None = None) -> Commit | None:
        return self.store.commit(
            self.pending, user=self.user, comment=comment, on_conflict=on_conflict
        )

    def clear(self) -> int:
        """Discard every pending change; returns how many there were."""
        count = len(self.pending)
        self.pending.clear()
        return count

    def __getattr__(self, name: str) -> Any:
        # define / set_record / set_row / delete_row / undefine / copy / move / ...
        return getattr(self.edit, name)
