"""Validation is idempotent on committed values (docs/history.md, "Risks and limits"):
a peer checks each write of a commit again (``check_commit``) and hashes the canonical
bytes, so a value that validates once must validate again to the same canonical JSON,
or a good commit would be refused.  A property over the whole catalogue: values made
from each feature's example, its leaves changed (case, spaces, a trailing dot, the
catalogue's help examples, any text or number) and optional fields added."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from clusterd.core.chain import canonical_json
from clusterd.schema import CATALOGUE, InvalidSetting
from clusterd.schema.fields import Hint
from tests.test_schema import VALID, row_models, validate


def _hints(annotation: Any, found: set[str]) -> None:
    """The help examples of ``annotation`` and of every model it holds, into ``found``."""
    if isinstance(annotation, Hint):
        found.update(annotation.examples)
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for field in annotation.model_fields.values():
            for meta in field.metadata:
                _hints(meta, found)
            _hints(field.annotation, found)
        return
    for arg in typing.get_args(annotation):
        _hints(arg, found)
    for meta in getattr(annotation, "__metadata__", ()):
        _hints(meta, found)


def _examples() -> list[str]:
    found: set[str] = set()
    for feature in CATALOGUE:
        _hints(feature.model, found)
    return sorted(found)


EXAMPLES = _examples()
NUMBERS = st.one_of(st.integers(-2, 70_000), st.sampled_from([0, 1, 25, 65_535, 65_536]))
TEXT = st.one_of(st.sampled_from(EXAMPLES), st.text(max_size=12))
LEAF = st.one_of(TEXT, NUMBERS, st.booleans(), st.none())


def _string(value: str) -> st.SearchStrategy[Any]:
    changed = st.sampled_from([value.upper(), value.title(), f" {value} ", value + ".",
                               value.lower(), f"{value}\n"])  # fmt: skip
    return _mostly(value, changed, changed, TEXT)


def _mostly(value: Any, *changed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value`` about half the time (so that most values stay valid), else a change."""
    kept = st.just(value)
    return st.one_of(*[kept] * len(changed), *changed)


def variants(value: Any) -> st.SearchStrategy[Any]:
    """Values shaped like ``value``, each leaf perhaps changed."""
    if isinstance(value, dict):
        return st.fixed_dictionaries({k: variants(v) for k, v in value.items()})
    if isinstance(value, list):
        items = st.one_of(*(variants(x) for x in value)) if value else LEAF
        return _mostly(value, st.lists(items, max_size=3))
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return _mostly(value, NUMBERS)
    if isinstance(value, float):
        return _mostly(value, st.floats(-1.0, 1e9), NUMBERS)
    if isinstance(value, str):
        return _string(value)
    return st.just(value)


def _values(command: str) -> st.SearchStrategy[dict[str, Any]]:
    """The example of ``command`` changed, with some of its model's other fields."""
    _row, example = VALID[command]
    fields = {name for model in row_models(CATALOGUE[command].model)
              for name in model.model_fields}  # fmt: skip
    others = sorted(fields - set(example))
    more = (
        st.just({})
        if not others
        else _mostly(
            {}, st.sampled_from(others).flatmap(lambda name: st.fixed_dictionaries({name: LEAF}))
        )
    )  # (one more field at most: a value of any kind is most often refused)
    return st.tuples(variants(example), more).map(lambda pair: {**pair[1], **pair[0]})


def test_the_examples_are_found() -> None:
    assert "mx1.example.com" in EXAMPLES and len(EXAMPLES) > 20


@pytest.mark.parametrize("command", sorted(VALID))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_valid_value_validates_again_to_the_same_canonical_json(
    command: str, data: st.DataObject
) -> None:
    row, _example = VALID[command]
    value = data.draw(_values(command), label="value")
    try:
        once = validate(command, row, value)
    except InvalidSetting:
        event("refused")
        return
    event("valid")
    twice = validate(command, row, once)
    assert twice == once
    assert canonical_json(twice) == canonical_json(once)
