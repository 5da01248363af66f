"""Memory queries equal a brute-force oracle over what the reader may read; text ranks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mesh import Identity, Replica
from crdt_mesh.services.memory import (
    FederatedMemoryError,
    Memory,
    MemoryBoard,
    MemoryPrivacyLevel,
)
from tests.conftest import ReplicaFactory

TAGS = ["alpha", "beta", "gamma", "delta"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _oracle(memories: list[Memory], tags: list[str] | None, privacy: str | None) -> list[Memory]:
    """The documented semantics, written out the slow way."""
    kept = []
    for m in memories:
        if privacy is not None and m.privacy.value != privacy:
            continue
        if tags is not None and not set(tags) & set(m.tags):
            continue
        kept.append(m)
    score = (lambda m: len(set(tags) & set(m.tags))) if tags else (lambda m: 0)
    return sorted(kept, key=lambda m: (-score(m), -m.updated_at, str(m.ref)))


@settings(max_examples=25, deadline=None)
@given(
    stored=st.lists(
        st.tuples(
            st.sampled_from(["private", "public"]),
            st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
        ),
        min_size=1,
        max_size=12,
    ),
    tags=st.none() | st.lists(st.sampled_from(TAGS), min_size=1, max_size=3, unique=True),
    privacy=st.none() | st.sampled_from(["private", "public"]),
    limit=st.integers(1, 15),
)
def test_a_filtered_query_is_the_oracle_over_readable_memories(
    tmp_path_factory: pytest.TempPathFactory,
    stored: list[tuple[str, list[str]]],
    tags: list[str] | None,
    privacy: str | None,
    limit: int,
) -> None:
    replica = Replica.open(tmp_path_factory.mktemp("m"), Identity.generate())
    board = MemoryBoard(replica, clock=Clock())
    try:
        for i, (level, memory_tags) in enumerate(stored):
            board.store(f"memory number {i}", level, tags=memory_tags)
        hits = board.query(tags=tags, privacy=privacy, limit=limit)
        expected = _oracle(board.memories(), tags, privacy)[:limit]
        assert [h.memory.ref for h in hits] == [m.ref for m in expected]
        assert len(board.memories()) == len(stored)
    finally:
        board.close()
        replica.close()


def test_text_queries_rank_by_bm25_and_leave_out_what_matches_nothing(
    make_replica: ReplicaFactory,
) -> None:
    board = MemoryBoard(make_replica(), clock=Clock())
    board.store("User prefers morning meetings", "public", tags=["scheduling"])
    board.store("deploy failed on friday: disk full", "public", tags=["ops"])
    board.store("the deploy pipeline runs nightly", "private")
    hits = board.query(text="deploy failures on friday", mode="lexical")
    assert hits[0].memory.content == "deploy failed on friday: disk full"
    assert all(h.score > 0 for h in hits) and len(hits) == 2
    public = board.query(text="morning", privacy="public", mode="lexical")
    assert [h.memory.content for h in public] == ["User prefers morning meetings"]
    assert board.query(text="the a of", mode="lexical") == []  # stopwords only: nothing matches


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda b: b.store(""), "content"),
        (lambda b: b.store("x", "secret"), "privacy"),
        (lambda b: b.store("x", "team"), "channel"),
        (lambda b: b.store("x", "team", channel="nowhere"), "unknown"),
        (lambda b: b.store("x", "encrypted"), "a channel, or its readers"),
        (lambda b: b.store("x", "public", readers=[]), "readers"),
        (lambda b: b.store("x", tags="one"), "tags"),
        (lambda b: b.store("x", tags=["has space"]), "tags"),
        (lambda b: b.store("x", "private", channel="a"), "no channel"),
        (lambda b: b.store("x", "public", channel="bad topic"), "channel"),
        (lambda b: b.follow(tags=["has space"]), "tags"),
        (lambda b: b.follow(channels="alpha"), "channels"),
        (lambda b: b.query(limit=0), "limit"),
        (lambda b: b.query(channels="alpha"), "channels"),
        (lambda b: b.create_channel("bad name"), "channel"),
    ],
)
def test_a_refused_call_names_what_is_wrong_and_writes_nothing(
    make_replica: ReplicaFactory, call: object, says: str
) -> None:
    replica = make_replica()
    board = MemoryBoard(replica)
    before = replica.heads(include_local=True)
    with pytest.raises(FederatedMemoryError, match=says):
        call(board)  # type: ignore[operator]
    assert replica.heads(include_local=True) == before
    assert MemoryPrivacyLevel.PUBLIC.value == "public"


def test_semantic_and_hybrid_queries_find_meaning_the_words_miss(
    make_replica: ReplicaFactory,
) -> None:
    board = MemoryBoard(make_replica(), clock=Clock())
    board.store("User prefers morning meetings", "public", tags=["scheduling"])
    board.store("deploy failed on friday: disk full", "public", tags=["ops"])
    board.store("the cat sleeps on the keyboard", "private")
    question = "when does the user like to meet?"
    semantic = board.query(text=question, mode="semantic")
    assert semantic[0].memory.content == "User prefers morning meetings"
    hybrid = board.query(text=question)  # hybrid: the default with the model installed
    assert hybrid[0].memory.content == "User prefers morning meetings"
    assert len(board.query(text="deploy failures", mode="hybrid", limit=1)) == 1
    with pytest.raises(FederatedMemoryError, match="mode"):
        board.query(text=question, mode="fuzzy")


def test_the_embedding_model_loads_from_its_wheel_without_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from crdt_mesh.services.memory import rules

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedding model tried to reach the network")

    monkeypatch.setattr(rules, "_EMBEDDER", None)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    import logging
    import sys

    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    monkeypatch.delitem(sys.modules, "wordllama", raising=False)  # imported afresh
    vectors = rules.embed(["morning meetings", "disk full"])
    assert vectors.shape == (2, 256)
    assert (root.level, list(root.handlers)) == before  # the app's logging untouched


def test_the_two_stage_semantic_ranking_of_large_corpora_finds_what_exact_cosine_finds(
    make_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crdt_mesh.services.memory import search
    from crdt_mesh.services.memory.rules import embed, searchable_text

    words = [
        "deploy",
        "build",
        "disk",
        "memory",
        "network",
        "latency",
        "invoice",
        "budget",
        "meeting",
        "user",
    ]
    rng = random.Random(5)
    board = MemoryBoard(make_replica(), clock=Clock())
    for _ in range(400):
        board.store(" ".join(rng.choice(words) for _ in range(6)), "public", tags=["x"])
    exact = {}
    shown = board.memories()
    matrix = embed([searchable_text(m) for m in shown])
    questions = ["disk latency", "the budget meeting", "a user of the network"]
    for question in questions:
        order = matrix @ embed([question])[0]
        exact[question] = {
            shown[i].ref for i in sorted(range(len(shown)), key=lambda i: -order[i])[:5]
        }
    monkeypatch.setattr(search, "TWO_STAGE_FROM", 100)  # two stages from 100 memories
    monkeypatch.setattr(search, "_SHORTLIST", 1)  # (the depth: 205 of the 400)
    monkeypatch.setattr(search, "_SHORTLIST_AT_LEAST", 100)
    board.ranker = search.Ranker()
    for question in questions:
        found = {h.memory.ref for h in board.query(text=question, mode="semantic", limit=5)}
        assert len(found & exact[question]) >= 4, question
    filtered = board.query(text="disk latency", mode="semantic", limit=5, tags=["x"])
    assert len(filtered) == 5  # the shortlist of chosen rows, too


def test_without_the_search_extra_a_semantic_query_names_it(
    make_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from crdt_mesh.services.memory import rules

    monkeypatch.setattr(rules, "_EMBEDDER", None)
    monkeypatch.setitem(sys.modules, "wordllama", None)  # as if not installed
    board = MemoryBoard(make_replica(), clock=Clock())
    board.store("User prefers morning meetings", "public")
    with pytest.raises(FederatedMemoryError, match=r"crdt_mesh\[search\]"):
        board.query(text="meet", mode="semantic")
    hits = board.query(text="morning")  # the default falls back to lexical
    assert [h.memory.content for h in hits] == ["User prefers morning meetings"]


def test_what_a_query_shows_follows_updates_forgets_and_arrivals(
    make_replica: ReplicaFactory,
) -> None:
    """Views are kept between queries: every change must show in the next one."""
    alice, bob = make_replica(), make_replica()
    board, other = MemoryBoard(alice, clock=Clock()), MemoryBoard(bob, clock=Clock())
    first = board.store("disk alert on node seven", "public", tags=["ops"])
    assert [h.memory.ref for h in board.query(tags=["ops"])] == [first.ref]
    assert board.query(text="disk alert", mode="lexical")[0].memory.ref == first.ref
    board.update(first.ref, tags=["infra"])
    assert board.query(tags=["ops"]) == []
    assert [h.memory.tags for h in board.query(tags=["infra"])] == [("infra",)]
    theirs = other.store("disk alert on node nine", "public", tags=["infra"])
    alice.ingest(bob.missing_from(alice.heads())).raise_first()
    assert {h.memory.ref for h in board.query(tags=["infra"])} == {first.ref, theirs.ref}
    assert len(board.query(text="disk alert node", mode="lexical")) == 2
    board.forget(first.ref)
    assert [h.memory.ref for h in board.query(tags=["infra"])] == [theirs.ref]
    assert [h.memory.ref for h in board.query(text="disk alert", mode="semantic")] == [theirs.ref]


def test_a_group_document_of_someone_else_does_not_drop_what_the_board_keeps(
    make_replica: ReplicaFactory,
) -> None:
    """Anyone may make a group document of its own: it costs no re-reading here, while a
    change to the group a memory is of does."""
    from crdt_mesh.services.memory.rules import channel_document

    alice, mallory = make_replica(), make_replica()
    board, hostile = MemoryBoard(alice, clock=Clock()), MemoryBoard(mallory, clock=Clock())
    board.create_channel("alpha")
    board.store("a team note", "team", channel="alpha")
    board.store("a public note", "public")
    board.memories()
    reads: list[object] = []
    original = board._read
    board._read = lambda *a: reads.append(a) or original(*a)  # type: ignore[method-assign]
    hostile.create_channel("alpha")  # the same name, another admin
    alice.ingest(mallory.missing_from(alice.heads())).raise_first()
    assert len(board.memories()) == 2 and reads == []
    alice.set_members(channel_document(alice.peer_id, "alpha"), add=[mallory.peer_id])
    assert len(board.memories()) == 2 and len(reads) == 1  # only the team memory again
