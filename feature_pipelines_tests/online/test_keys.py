"""Key layout: unambiguous entity encoding, one hash tag per entity, vectorised == scalar."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines.online.keys import OnlineKeyError, entity_part, hash_key, hash_keys, hash_keys_for_rows, key_slot

TRICKY = st.text(alphabet=st.sampled_from(list("ab|%{}:7C\x00é ")), max_size=6)


def test_layout() -> None:
    assert hash_key("fp:prod", "route_delay_stats", ("JFK", "LAX")) == "fp:prod:route_delay_stats:{JFK|LAX}"
    assert hash_key("fp", "aircraft", (42,)) == "fp:aircraft:{42}"


@settings(max_examples=200, deadline=None)
@given(st.tuples(TRICKY, TRICKY), st.tuples(TRICKY, TRICKY))
def test_entity_encoding_is_injective(a: tuple[str, str], b: tuple[str, str]) -> None:
    if a != b:
        assert entity_part(a) != entity_part(b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(TRICKY, st.integers(-(2**63), 2**63 - 1)), max_size=20))
def test_vectorised_keys_equal_scalar_keys(rows: list[tuple[str, int]]) -> None:
    frame = pl.DataFrame(rows, schema={"origin": pl.String, "n": pl.Int64}, orient="row")
    vectorised = hash_keys(frame, prefix="fp", view="v", entity_keys=["origin", "n"])
    assert vectorised == [k.encode() for k in hash_keys_for_rows("fp", "v", rows)]


@settings(max_examples=100, deadline=None)
@given(TRICKY, TRICKY)
def test_hash_tag_is_the_whole_entity_part(origin: str, dest: str) -> None:
    """Braces inside values are escaped, so the tag spans the entity and all views share it."""
    part = entity_part((origin, dest))
    key_a = hash_key("fp:prod", "route_delay_stats", (origin, dest))
    key_b = hash_key("fp:prod", "route_weather", (origin, dest))
    assert "{" not in part and "}" not in part
    assert key_a.endswith("{" + part + "}")
    if part:
        assert key_slot(key_a) == key_slot(key_b) == key_slot("{" + part + "}")


def test_bad_names_and_values_are_refused() -> None:
    with pytest.raises(OnlineKeyError, match="view"):
        hash_key("fp", "a:b", ("x",))
    with pytest.raises(OnlineKeyError, match="prefix"):
        hash_key("fp{x}", "v", ("x",))
    with pytest.raises(OnlineKeyError, match=r"'v'.*null"):
        hash_key("fp", "v", ("x", None))
    frame = pl.DataFrame({"origin": ["JFK", None], "dest": ["LAX", "SFO"]})
    with pytest.raises(OnlineKeyError, match=r"'v'.*row 1.*origin=None, dest='SFO'"):
        hash_keys(frame, prefix="fp", view="v", entity_keys=["origin", "dest"])
    with pytest.raises(OnlineKeyError, match=r"'v'.*'flag'.*Boolean"):
        hash_keys(pl.DataFrame({"flag": [True]}), prefix="fp", view="v", entity_keys=["flag"])
    with pytest.raises(OnlineKeyError, match=r"missing"):
        hash_keys(pl.DataFrame({"origin": ["JFK"]}), prefix="fp", view="v", entity_keys=["origin", "dest"])
