"""Every error clusterd raises, in one tree.

::

    ValueError
     └── InvalidSetting (schema)     bad input: nothing was changed
          ├── UnknownFeature (schema)
          ├── UnknownCommand (schema)
          ├── UnknownMode (clusterd.core.modes)
          ├── LevelNotAllowed
          ├── NotDefined
          ├── TooManyChanges      a session holds as many pending changes as it may
          └── BadCommit           a remote commit that is malformed or out of place
    Exception
     └── ClusterdError
          ├── CommitConflict      pending changes collide with commits made meanwhile
          ├── LifecycleError      create / join / leave in the wrong state
          ├── StoreError          the database failed; the store is unchanged
          ├── ProtocolError       a peer broke the cluster protocol, or an illegal event
          ├── ConfigError         the daemon's configuration file or flags are wrong
          └── TransportError      a link could not be opened (connection, authentication)

Foreign exceptions (SQLAlchemy's) are turned into these at the store's boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterd.core.modes import UnknownMode
from clusterd.schema.feature import UnknownFeature
from clusterd.schema.validation import InvalidSetting

if TYPE_CHECKING:
    from clusterd.core.pending import Conflict

__all__ = [
    "BadCommit",
    "ClusterdError",
    "CommitConflict",
    "ConfigError",
    "InvalidSetting",
    "LevelNotAllowed",
    "LifecycleError",
    "NotDefined",
    "ProtocolError",
    "StoreError",
    "TooManyChanges",
    "TransportError",
    "UnknownFeature",
    "UnknownMode",
]


class LevelNotAllowed(InvalidSetting):
    """Raised when a feature is edited at a level its catalogue entry does not allow."""

    def __init__(self, feature: str, level: str, allowed: str) -> None:
        super().__init__([f"{feature} cannot be defined at {level} level (only at {allowed})"])


class NotDefined(InvalidSetting):
    """Raised when an edit needs the feature (or a row) to be defined at the mode."""


class TooManyChanges(InvalidSetting):
    """Raised when an edit would take a session past the pending changes it may hold."""

    def __init__(self, limit: int) -> None:
        super().__init__([f"a session may hold {limit:,} pending changes at most: commit "
                          "or clear them before more edits"])  # fmt: skip


class BadCommit(InvalidSetting):
    """Raised when a remote commit is malformed, invalid, or not ready to apply."""


class ClusterdError(Exception):
    """Raised for failures that are not the caller's bad input."""

    code: str | None = None  # for programs: what went wrong, in a word (control answers)


class SessionExpired(ClusterdError):
    """A web session the node does not know (any more): log in again."""

    code = "expired"


class CommitConflict(ClusterdError):
    """Raised when pending changes collide with commits made since they were read."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        units = ", ".join(str(c.unit) for c in conflicts[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        super().__init__(f"changed by another commit since you read them: {units}{more}")

    def __reduce__(self) -> tuple[type[CommitConflict], tuple[list[Conflict]]]:
        """Rebuilt from its conflicts (a shell worker gets it from the node)."""
        return (CommitConflict, (self.conflicts,))


class LifecycleError(ClusterdError):
    """Raised when create, join or leave is asked in a state that does not allow it."""


class StoreError(ClusterdError):
    """Raised when the database fails; the transaction was rolled back."""


class ProtocolError(ClusterdError):
    """Raised when a frame breaks the cluster protocol (malformed, oversized, unknown or
    out of order), or an event is illegal in the state it arrives in.  ``code`` is short
    and machine-readable; the link carrying the frame is dropped, nothing is applied."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ConfigError(ClusterdError):
    """Raised when the daemon's configuration file or command line is wrong."""


class TransportError(ClusterdError):
    """Raised when a link to a peer cannot be opened; ``kind`` names the alert
    (``connection failure`` or ``authentication error``)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
