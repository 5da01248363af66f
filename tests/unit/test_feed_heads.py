"""FeedHeads keeps its per-document author index in step with the dict."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh import DocumentId, Identity, Policy
from crdt_mesh.replica.records import FeedHeads, Head

DOCS = [DocumentId(Policy.OPEN, name) for name in ("a", "b", "c")]
PEERS = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(4)]
feeds = st.tuples(st.sampled_from(DOCS), st.sampled_from(PEERS))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), feeds),
        st.tuples(st.just("pop"), feeds),
        st.tuples(st.just("del"), feeds),
        st.tuples(st.just("update"), feeds),
        st.tuples(st.just("copy"), feeds),
    ),
    max_size=40,
)


@given(operations)
def test_the_author_index_matches_the_keys(
    ops: list[tuple[str, tuple[DocumentId, object]]],
) -> None:
    heads = FeedHeads()
    for op, feed in ops:
        if op == "set":
            heads[feed] = Head(1, b"x" * 32)  # type: ignore[index]
        elif op == "pop":
            heads.pop(feed, None)  # type: ignore[arg-type]
        elif op == "del" and feed in heads:
            del heads[feed]  # type: ignore[arg-type]
        elif op == "update":
            heads.update({feed: Head(2, b"y" * 32)})  # type: ignore[dict-item]
        elif op == "copy":
            heads = FeedHeads(heads)
    for doc in DOCS:
        expected = sorted((a for d, a in heads if d == doc), key=lambda p: p.key)
        assert heads.authors_of(doc) == expected


def test_a_head_holds_each_field_it_is_built_with_and_stays_frozen() -> None:
    """Head's constructor is written by hand (one head is made per entry admitted):
    each argument lands in its own field, by position or by name."""
    import dataclasses

    import pytest

    head = Head(7, b"i" * 32)
    assert (head.seq, head.id, head.frozen) == (7, b"i" * 32, False)
    named = Head(id=b"j" * 32, frozen=True, seq=9)
    assert (named.seq, named.id, named.frozen) == (9, b"j" * 32, True)
    assert Head(7, b"i" * 32) == head and hash(Head(7, b"i" * 32)) == hash(head)
    assert dataclasses.replace(head, frozen=True) == Head(7, b"i" * 32, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.seq = 8  # type: ignore[misc]
