"""History features: ``confirm``, the pending confirmed commits (docs/history.md, 5).

One row per ``commit confirmed`` not yet confirmed, keyed ``ORIGIN:SEQ`` (the commit
that wrote it), at cluster level, written in that same commit: every member learns the
deadline and what to undo with the commit itself.  Internal: cluster operations and
commits write it (``clusterd.core.confirm``), never a feature editor.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field

from clusterd.schema.feature import CLUSTER_ONLY, Feature, Kind
from clusterd.schema.fields import Model

MAX_UNDO = 10_000  # units a confirmed commit may write (and versions it keeps to undo)


class Pending(Model):
    """A confirmed commit waiting for ``confirm``: rolled back at ``deadline`` (wall
    seconds) unless confirmed.  ``hlc``: its stamp; ``writes``: what it wrote
    (``[feature, mode, key, value, with_reset]``); ``before``: the versions it
    replaced (``[feature, mode, key, [hlc, origin, seq, value, with_reset] | null]``)."""

    deadline: float
    minutes: Annotated[int, Field(ge=1, le=65535)]
    # rolled back at once if a member loses a link, or a target fails to apply it
    probe: Literal["links", "targets", "links,targets"] | None = None
    user: Annotated[str, Field(max_length=64)]
    hlc: int
    writes: Annotated[list[list[Any]], Field(max_length=MAX_UNDO)]
    before: Annotated[list[list[Any]], Field(max_length=MAX_UNDO)]


CONFIRM = Feature(
    command="confirm",
    title="Pending confirmed commits",
    kind=Kind.TABLE,
    model=Pending,
    levels=CLUSTER_ONLY,
    default={},
    internal=True,
    row_name=re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}:[0-9]{1,18}\Z"),
    row_name_hint="the commit's id, ORIGIN:SEQ",
    description="commit confirmed adds a row; confirm, or the shell's commit, removes them",
    secrets=("writes", "before"),  # values of other features, secrets among them: never shown
)

HISTORY_FEATURES = [CONFIRM]
