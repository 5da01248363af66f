"""Task negotiation over replicas: the Contract Net steps, the rules, the audit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh import Identity, NotWritable, Replica
from crdt_mesh.services.tasks import (
    Bid,
    NegotiationError,
    TaskBoard,
    TaskCoordinationMode,
    TaskRef,
    TaskState,
    select,
)
from crdt_mesh.services.tasks.board import MAX_FOLLOWERS
from tests.helpers import Clock, sync, sync_as_peers

NEEDS = {"capabilities": ["code-review", "typescript"], "estimated_duration": 3600}
CAN = ["code-review", "typescript", "python"]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[list[TaskBoard], Clock]]:
    clock = Clock()
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(Replica.open(tmp_path / f"r{i}", Identity.generate()))
            for i in range(5)
        ]
        yield [TaskBoard(r, clock=clock) for r in replicas], clock


def _sync(boards: list[TaskBoard]) -> None:
    sync(*(b.replica for b in boards))


def test_announce_bid_award_execute(net: tuple[list[TaskBoard], Clock]) -> None:
    (a, b, c, d, e), clock = net
    boards = net[0]
    ann = a.announce(
        "task-123",
        NEEDS,
        deadline=clock.now + 7200,
        negotiation={"bid_timeout": 30, "min_bidders": 2, "selection_criteria": ["price"]},
    )
    _sync(boards)
    assert b.view(ann.ref).state is TaskState.ANNOUNCED  # type: ignore[union-attr]
    b.bid("task-123", price=12.0, availability=0.9, eta=1800, capabilities=CAN)
    c.bid(ann.ref, price=10.0, availability=0.5, eta=3600, capabilities=CAN)
    with pytest.raises(NegotiationError, match="missing capabilities: typescript"):
        d.bid(ann.ref, price=1.0, capabilities=["code-review"])
    with pytest.raises(NegotiationError, match="made already"):
        b.bid(ann.ref, price=11.0, capabilities=CAN)
    with pytest.raises(NegotiationError, match="own task"):
        a.bid(ann.ref, price=1.0, capabilities=CAN)
    with pytest.raises(NegotiationError, match="unknown task"):
        b.bid("no-such-task", price=1.0, capabilities=CAN)
    _sync(boards)
    assert a.view(ann.ref).state is TaskState.BIDDING  # type: ignore[union-attr]

    with pytest.raises(NegotiationError, match="only"):
        b.close(ann.ref)
    view = a.close(ann.ref)
    assert view.award == c.me  # cheapest
    _sync(boards)
    for board in boards:
        seen = board.view(ann.ref)
        assert seen is not None and seen.award == c.me and seen.audit_ok
        assert seen.state is TaskState.AWARDED
    with pytest.raises(NegotiationError, match="closed"):
        e.bid(ann.ref, price=1.0, capabilities=CAN)
    with pytest.raises(NegotiationError, match="not awarded to this peer"):
        b.accept(ann.ref)
    with pytest.raises(NegotiationError, match="awarded: cannot write result"):
        c.complete(ann.ref, "done")
    assert c.accept(ann.ref).state is TaskState.ACCEPTED
    assert c.report_progress(ann.ref, {"done": 0.5}).state is TaskState.IN_PROGRESS
    assert c.complete(ann.ref, {"review": "LGTM"}).state is TaskState.COMPLETED
    _sync(boards)
    final = a.conclude(ann.ref, TaskState.COMPLETED)
    _sync(boards)
    assert {board.view(ann.ref).state for board in boards} == {TaskState.COMPLETED}  # type: ignore[union-attr]
    assert final.result["output"] == {"review": "LGTM"}


def test_a_malicious_peer_cannot_forge_alter_or_award(net: tuple[list[TaskBoard], Clock]) -> None:
    (a, b, mallory, observer, _), clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS, negotiation={"selection_criteria": ["price"]})
    _sync(boards)
    b.bid(ann.ref, price=50.0, capabilities=CAN)
    mallory.bid(ann.ref, price=60.0, capabilities=CAN)
    _sync(boards)

    # 1. overwrite a rival's bid: the rival's section is the rival's alone
    rival = mallory.replica.document(ann.ref.offers(b.me))
    with pytest.raises(NotWritable), rival.transaction():
        rival.array("bids").append({"price": 999.0})

    # 2. award a task it did not announce: written in its own section, read by nobody
    own = mallory.replica.document(ann.ref.section(mallory.me))
    with own.transaction():
        own.map("task")["award"] = {"winner": str(mallory.me), "at": clock.now}
        own.map("task")["close"] = {"bidders": {str(mallory.me): "x"}, "at": clock.now}
    _sync(boards)
    view = observer.view(ann.ref)
    assert view is not None and view.award is None and not view.closed
    assert any("ignored" in note and mallory.me.short in note for note in view.ignored)

    # 3. bid after the close, bypassing the API
    a.close(ann.ref)
    mallory.replica.document(ann.ref.offers(mallory.me)).array("bids").append(
        {"price": 1.0, "availability": 1.0, "eta": 0.0, "capabilities": CAN}
    )
    _sync(boards)
    view = observer.view(ann.ref)
    assert view is not None and view.award == b.me and view.audit_ok
    assert [r.reason for r in view.rejected if r.bidder == mallory.me] == [
        "duplicate bid ignored (the first counts)"
    ]
    with pytest.raises(NegotiationError, match="closed"):
        observer.bid(ann.ref, price=0.5, capabilities=CAN)


def test_a_late_bid_is_rejected_with_its_reason(net: tuple[list[TaskBoard], Clock]) -> None:
    (a, b, c, observer, _), _clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS)
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)
    _sync(boards)
    a.close(ann.ref)
    # c never heard of the close: its replica lets it bid; everyone else rejects the bid
    c_section = c.replica.document(ann.ref.offers(c.me))
    with c_section.transaction():
        c_section.array("bids").append(
            {"price": 1.0, "availability": 1.0, "eta": 0.0, "capabilities": CAN, "at": 0.0}
        )
    _sync(boards)
    view = observer.view(ann.ref)
    assert view is not None and view.award == b.me and view.audit_ok
    assert [(r.bidder, r.reason) for r in view.rejected] == [(c.me, "bid after the close")]


def test_an_award_against_the_rules_is_flagged(net: tuple[list[TaskBoard], Clock]) -> None:
    (a, b, c, observer, _), _clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS, negotiation={"selection_criteria": ["price"]})
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)
    c.bid(ann.ref, price=9.0, capabilities=CAN)
    _sync(boards)
    # the announcer closes honestly but awards its friend, the dearer bidder
    view = a.view(ann.ref)
    assert view is not None
    section = a.replica.document(ann.ref.section(a.me))
    with section.transaction():
        section.map("task")["close"] = {"bidders": {str(x.bidder): x.digest for x in view.bids}}
        section.map("task")["award"] = {"winner": str(c.me)}
    _sync(boards)
    audited = observer.view(ann.ref)
    assert audited is not None and audited.award == c.me and audited.expected_winner == b.me
    assert not audited.audit_ok and "does not follow from the rules" in audited.problems[0]
    with pytest.raises(NegotiationError, match="fails this replica's audit"):
        c.accept(ann.ref)  # the winner by fiat cannot act on it


@pytest.mark.parametrize(
    ("requirements", "names"),
    [
        ({"estimatedDuration": 3600}, r"requirements\['estimatedDuration'\].*'estimated_duration'"),
        ({"priority": "urgent"}, r"requirements\['priority'\].*'urgent'"),
        ({"estimated_duration": -1}, r"requirements\['estimated_duration'\]"),
        ({"estimated_duration": "1h"}, r"requirements\['estimated_duration'\]"),
        ({"capabilities": "code-review"}, r"requirements\['capabilities'\]"),
        ({"capabilities": ["ok", ""]}, r"requirements\['capabilities'\]"),
        ({"Team": "a"}, r"requirements\['Team'\]: keys are snake_case"),
        ({"budget": object()}, r"plain values"),
    ],
)
def test_malformed_requirements_are_refused_naming_the_key_and_nothing_is_written(
    net: tuple[list[TaskBoard], Clock], requirements: dict[str, object], names: str
) -> None:
    (a, *_), _clock = net
    before = a.replica.heads()
    with pytest.raises(NegotiationError, match=names):
        a.announce("t", requirements)
    assert a.replica.heads() == before and a.tasks() == []


def test_known_requirements_and_the_applications_own_are_kept(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, *_), _clock = net
    needs = {**NEEDS, "priority": "high", "repo_url": "https://example.org/x"}
    ann = a.announce("t", needs)
    assert ann.requirements == {**needs, "estimated_duration": 3600.0}


def test_a_close_among_some_bids_refuses_the_others_on_every_replica(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, b, c, observer, _), _clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS, negotiation={"selection_criteria": ["price"]})
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)  # the cheaper one, left out
    c.bid(ann.ref, price=9.0, capabilities=CAN)
    _sync(boards)
    a.close(ann.ref, among=[c.me])
    _sync(boards)
    for board in (a, c, observer):
        view = board.view(ann.ref)
        assert view is not None and view.award == c.me and view.audit_ok, view
        assert [(r.bidder, r.reason) for r in view.rejected] == [
            (b.me, "refused by the decider: not among the bids selected from")
        ]
    c.accept(ann.ref)


def test_a_close_among_bids_the_decider_does_not_hold_is_refused(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, b, _c, d, _), _clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS)
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)
    _sync(boards)
    with pytest.raises(NegotiationError, match="holds no acceptable bid of"):
        a.close(ann.ref, among=[d.me])
    with pytest.raises(NegotiationError, match="at least one bid"):
        a.close(ann.ref, among=[])
    assert a.view(ann.ref).closed is False  # type: ignore[union-attr]


def test_the_deciders_reputation_scores_are_pinned_so_every_replica_audits_the_same(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, b, c, observer, _), _clock = net
    boards = net[0]
    trusted = {c.me: 1.0}
    a.reputation = lambda peer: trusted.get(peer, 0.0)  # only the decider has a provider
    ann = a.announce("t", NEEDS, negotiation={"selection_criteria": ["reputation", "price"]})
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)
    c.bid(ann.ref, price=9.0, capabilities=CAN)
    _sync(boards)
    a.close(ann.ref)
    _sync(boards)
    for board in (a, b, c, observer):
        view = board.view(ann.ref)
        assert view is not None and view.award == c.me, view
        assert view.audit_ok and view.expected_winner == c.me, view.problems
    c.accept(ann.ref)  # the winner's own replica (neutral provider) agrees


def test_pinned_scores_out_of_range_or_missing_are_flagged(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, b, c, observer, _), _clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS, negotiation={"selection_criteria": ["reputation"]})
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)
    c.bid(ann.ref, price=9.0, capabilities=CAN)
    _sync(boards)
    view = a.view(ann.ref)
    assert view is not None
    section = a.replica.document(ann.ref.section(a.me))
    with section.transaction():
        section.map("task")["close"] = {
            "bidders": {str(x.bidder): x.digest for x in view.bids},
            "scores": {str(c.me): 7.0},  # out of [0, 1]; b's is missing
        }
        section.map("task")["award"] = {"winner": str(c.me)}
    _sync(boards)
    audited = observer.view(ann.ref)
    assert audited is not None and not audited.audit_ok
    assert any("reputation" in p for p in audited.problems), audited.problems


def test_sealed_bids_are_secret_until_the_close_then_auditable(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, b, c, observer, _), _clock = net
    boards = net[0]
    ann = a.announce(
        "auction", NEEDS, mode=TaskCoordinationMode.P2P_AUCTIONED,
        negotiation={"selection_criteria": ["price"]},
    )  # fmt: skip
    _sync(boards)
    assert b.bid(ann.ref, price=30.0, capabilities=CAN) is None
    assert c.bid(ann.ref, price=20.0, capabilities=CAN) is None
    _sync(boards)
    before = observer.view(ann.ref)
    assert before is not None and before.bids == () and before.sealed == 2
    sealed = observer.replica.document(ann.ref.offers(b.me)).array("bids").to_py()[0]
    assert set(sealed) == {"sealed", "commitment", "capabilities", "at"}  # no price in sight
    with pytest.raises(ValueError):
        observer.replica.identity.unseal(bytes.fromhex(sealed["sealed"]))
    with pytest.raises(NegotiationError, match="decider"):
        observer.sealed_bids(ann.ref)
    assert sorted(x.price for x in a.sealed_bids(ann.ref)) == [20.0, 30.0]

    a.close(ann.ref)
    late = boards[4]  # bids sealed, around the API, after the close: rejected as late
    late_section = late.replica.document(ann.ref.offers(late.me))
    with late_section.transaction():
        late_section.array("bids").append(
            {"sealed": a.me.seal(b"x").hex(), "commitment": "00", "capabilities": CAN, "at": 0.0}
        )
    _sync(boards)
    after = observer.view(ann.ref)
    assert after is not None and after.audit_ok and after.award == c.me
    assert sorted(x.price for x in after.bids) == [20.0, 30.0]
    assert [(r.bidder, r.reason) for r in after.rejected] == [(late.me, "bid after the close")]

    # an announcer that "opens" a bid as something else is caught by the commitment
    section = a.replica.document(ann.ref.section(a.me))
    close = section.map("task").to_py()["close"]
    plain, nonce = close["opened"][str(b.me)]
    offer = cbor2.loads(bytes.fromhex(plain))
    forged = cbor2.dumps({**offer, "price": 10.0}, canonical=True)  # 30 -> 10: now it wins
    close["opened"][str(b.me)] = [forged.hex(), nonce]
    with section.transaction():
        section.map("task")["close"] = close
    _sync(boards)
    caught = observer.view(ann.ref)
    assert caught is not None and any("does not match its sealed bid" in p for p in caught.problems)


@pytest.mark.parametrize("mode", [TaskCoordinationMode.CENTRALIZED, TaskCoordinationMode.HYBRID])
def test_in_coordinated_modes_only_the_coordinator_awards(
    net: tuple[list[TaskBoard], Clock], mode: TaskCoordinationMode
) -> None:
    (a, b, c, coordinator, observer), _clock = net
    boards = net[0]
    with pytest.raises(NegotiationError, match="coordinator"):
        a.announce("nobody", NEEDS, mode=mode)
    ann = a.announce(
        "c", NEEDS, mode=mode, coordinator=coordinator.me,
        negotiation={"selection_criteria": ["availability"]},
    )  # fmt: skip
    _sync(boards)
    b.bid(ann.ref, price=1.0, availability=0.2, capabilities=CAN)
    c.bid(ann.ref, price=9.0, availability=0.9, capabilities=CAN)
    _sync(boards)
    with pytest.raises(NegotiationError, match="only"):
        a.close(ann.ref)
    # the announcer's own "award" is not the coordinator's: ignored, and said so
    section = a.replica.document(ann.ref.section(a.me))
    with section.transaction():
        section.map("task")["award"] = {"winner": str(b.me)}
    coordinator.close(ann.ref)
    _sync(boards)
    view = observer.view(ann.ref)
    assert view is not None and view.award == c.me and view.audit_ok
    assert any(note.startswith(f"award by {a.me.short} ignored") for note in view.ignored)


def test_too_few_bids_or_a_passed_deadline_expire_the_task(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, b, _, observer, _), clock = net
    boards = net[0]
    lonely = a.announce("lonely", NEEDS, negotiation={"min_bidders": 2})
    silent = a.announce("silent", NEEDS, deadline=clock.now + 100)
    _sync(boards)
    b.bid(lonely.ref, price=3.0, capabilities=CAN)
    _sync(boards)
    closed = a.close(lonely.ref)
    assert closed.state is TaskState.EXPIRED and closed.award is None
    _sync(boards)
    assert observer.view(lonely.ref).state is TaskState.EXPIRED  # type: ignore[union-attr]
    clock.now += 101
    assert observer.view(silent.ref).state is TaskState.EXPIRED  # type: ignore[union-attr]
    with pytest.raises(NegotiationError, match="window"):
        b.bid(silent.ref, price=1.0, capabilities=CAN)


def test_a_parent_completes_when_its_subtasks_do(net: tuple[list[TaskBoard], Clock]) -> None:
    (a, b, c, observer, _), _clock = net
    boards = net[0]
    parent = a.announce("feature", {"capabilities": []})
    _sync(boards)
    b.bid(parent.ref, price=100.0)
    _sync(boards)
    a.close(parent.ref)
    _sync(boards)
    b.accept(parent.ref)
    with pytest.raises(NegotiationError, match="split"):
        c.announce("part", {"capabilities": []}, parent=parent.ref)
    parts = [b.announce(f"part-{i}", {"capabilities": []}, parent=parent.ref) for i in range(2)]
    _sync(boards)
    for part in parts:
        c.bid(part.ref, price=10.0)
    _sync(boards)
    for part in parts:
        b.close(part.ref)
    _sync(boards)
    for part in parts:
        c.accept(part.ref)
        c.complete(part.ref, "ok")
    _sync(boards)
    view = observer.view(parent.ref)
    assert view is not None and set(view.subtasks) == {p.ref for p in parts}
    assert view.state is TaskState.COMPLETED


# -- selection is deterministic, whatever the delivery order ---------------------------------


offers = st.lists(
    st.tuples(
        st.floats(0.5, 100, allow_nan=False).map(lambda x: round(x, 2)),
        st.floats(0, 1).map(lambda x: round(x, 2)),
        st.floats(0, 10_000).map(lambda x: round(x)),
    ),
    min_size=1,
    max_size=5,
)


@given(offers=offers, orders=st.lists(st.randoms(use_true_random=False), min_size=2, max_size=2))
def test_every_replica_computes_the_same_winner_the_criteria_pick(
    tmp_path_factory: pytest.TempPathFactory, offers: list[tuple[float, float, float]], orders: list
) -> None:
    root = tmp_path_factory.mktemp("select")
    clock = Clock()
    with ExitStack() as stack:

        def board() -> TaskBoard:
            replica = stack.enter_context(
                Replica.open(root / f"{len(opened)}", Identity.generate())
            )
            opened.append(replica)
            return TaskBoard(replica, clock=clock)

        opened: list[Replica] = []
        announcer = board()
        criteria = ["price", "availability", "eta"]
        ann = announcer.announce("t", {}, negotiation={"selection_criteria": criteria})
        bidders = [board() for _ in offers]
        for bidder, (price, availability, eta) in zip(bidders, offers, strict=True):
            sync(announcer.replica, bidder.replica)
            bidder.bid(ann.ref, price=price, availability=availability, eta=eta)
            sync(announcer.replica, bidder.replica)
        view = announcer.close(ann.ref)
        everything = announcer.replica.missing_from({})
        winners = set()
        for rng in orders:  # observers receive the entries in any order
            observer = board()
            shuffled = list(everything)
            rng.shuffle(shuffled)
            for entry in shuffled:
                observer.replica.ingest([entry])
            seen = observer.view(ann.ref)
            assert seen is not None and seen.audit_ok
            winners.add(seen.award)
        bids = [
            Bid(ann.ref, b.me, p, av, e, (), 0.0, "")
            for b, (p, av, e) in zip(bidders, offers, strict=True)
        ]
        chosen = select(bids, criteria)
        assert chosen is not None
        assert winners == {view.award} == {chosen.bidder}


def test_selection_weighs_criteria_in_order_and_breaks_ties_by_key() -> None:
    ref = TaskRef(Identity.generate().peer_id, "t")
    x, y = sorted((Identity.generate().peer_id for _ in range(2)), key=lambda p: p.key)
    cheap = Bid(ref, y, 10.0, 0.5, 0.0, (), 0.0, "")
    ready = Bid(ref, x, 20.0, 1.0, 0.0, (), 0.0, "")
    assert select([cheap, ready], ["price", "availability"]) == cheap
    assert select([cheap, ready], ["availability", "price"]) == ready
    twin = Bid(ref, x, 10.0, 0.5, 0.0, (), 0.0, "")
    assert select([cheap, twin], ["price"]) == twin  # equal scores: the smaller key
    assert select([cheap, ready], ["reputation"], lambda p: 1.0 if p == y else 0.0) == cheap
    assert select([], ["price"]) is None


def _auction(a: TaskBoard) -> TaskRef:
    return a.announce(
        "auction", NEEDS, mode=TaskCoordinationMode.P2P_AUCTIONED,
        negotiation={"selection_criteria": ["price"]},
    ).ref  # fmt: skip


def test_a_copied_sealed_bid_is_refused_and_flagged_on_every_replica(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    """Issue 10, hole 4: a peer copied a rival's sealed bid into its own section without
    reading it; the decider opened it as the copier's, the prices tied, and the tie
    went to the smaller key. A sealed bid now names its bidder and task inside the
    box and in the commitment."""
    (a, b, copier, observer, _), _clock = net
    boards = net[0]
    ref = _auction(a)
    _sync(boards)
    b.bid(ref, price=30.0, capabilities=CAN)
    _sync(boards)
    rival = copier.replica.document(ref.offers(b.me)).array("bids").to_py()[0]
    mine = copier.replica.document(ref.offers(copier.me))
    with mine.transaction():
        mine.array("bids").append(dict(rival))  # the same box and commitment, unread
    _sync(boards)
    assert [bid.bidder for bid in a.sealed_bids(ref)] == [b.me]  # the decider refuses it
    a.close(ref)
    _sync(boards)
    for board in (a, b, copier, observer):
        view = board.view(ref)
        assert view is not None and view.audit_ok and view.award == b.me
        assert [r.bidder for r in view.rejected] == [copier.me]
        assert "copies the sealed bid of" in view.rejected[0].reason


def test_a_decider_cannot_pass_off_a_copied_bid_as_the_copiers(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, b, copier, observer, _), _clock = net
    boards = net[0]
    ref = _auction(a)
    _sync(boards)
    b.bid(ref, price=30.0, capabilities=CAN)
    _sync(boards)
    rival = copier.replica.document(ref.offers(b.me)).array("bids").to_py()[0]
    mine = copier.replica.document(ref.offers(copier.me))
    with mine.transaction():
        mine.array("bids").append(dict(rival))
    _sync(boards)
    a.close(ref)  # an honest close: the copy is refused ...
    section = a.replica.document(ref.section(a.me))
    close = section.map("task").to_py()["close"]
    # ... and then a colluding decider "opens" the copy as the copier's bid
    close["opened"][str(copier.me)] = close["opened"][str(b.me)]
    close["bidders"][str(copier.me)] = close["bidders"][str(b.me)]
    with section.transaction():
        section.map("task")["close"] = close
    _sync(boards)
    view = observer.view(ref)
    assert view is not None and not view.audit_ok
    assert any("does not match its sealed bid" in p for p in view.problems)


@pytest.mark.parametrize("prices", [(12.0, 12.3), (1.0, 123456.789), (0.5, 0.1)])
def test_a_sealed_box_says_nothing_of_the_price_by_its_length(
    net: tuple[list[TaskBoard], Clock], prices: tuple[float, float]
) -> None:
    (a, b, c, _, _), _clock = net
    boards = net[0]
    ref = _auction(a)
    _sync(boards)
    b.bid(ref, price=prices[0], capabilities=CAN)
    c.bid(ref, price=prices[1], capabilities=CAN)
    lengths = {
        len(bidder.replica.document(ref.offers(bidder.me)).array("bids").to_py()[0]["sealed"])
        for bidder in (b, c)
    }
    assert len(lengths) == 1


def _private(a: TaskBoard, auditors: list[TaskBoard], **extra: object) -> TaskRef:
    return a.announce(
        "quiet",
        NEEDS,
        negotiation={
            "selection_criteria": ["price"],
            "private_bids": True,
            "auditors": [str(b.me) for b in auditors],
            **extra,
        },
    ).ref


def test_private_bids_reach_the_decider_and_auditors_and_no_other_bidder(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    """Every bidder gets the announcement, a close of fixed size and the award, not the
    others' bids; the announcer and the auditor get every bid and audit the award."""
    (a, b, c, d, auditor), _clock = net
    boards = net[0]
    ref = _private(a, [auditor])
    sync_as_peers(*(x.replica for x in boards))
    for bidder, price in ((b, 30.0), (c, 20.0), (d, 25.0)):
        bidder.bid(ref, price=price, capabilities=CAN)
    sync_as_peers(*(x.replica for x in boards))
    for bidder in (b, c, d):
        held = {x.me for x in (b, c, d) if bidder.replica.has_document(ref.offers(x.me))}
        assert held == {bidder.me}, "a bidder holds another's bid"
        view = bidder.view(ref)
        assert view is not None and [x.bidder for x in view.bids] == [bidder.me]
    for reader in (a, auditor):
        assert {x.bidder for x in reader.view(ref).bids} == {b.me, c.me, d.me}  # type: ignore[union-attr]

    a.close(ref)
    sync_as_peers(*(x.replica for x in boards))
    close = a.replica.document(ref.section(a.me)).map("task").to_py()["close"]
    assert set(close) == {"private", "count", "digest", "at"} and close["count"] == 3
    for board in boards:
        view = board.view(ref)
        assert view is not None and view.closed and view.award == c.me and not view.problems
        assert view.audited is (board in (a, auditor))
        assert view.expected_winner == (c.me if view.audited else None)
    assert c.accept(ref).state is TaskState.ACCEPTED
    sync_as_peers(*(x.replica for x in boards))
    assert {board.view(ref).state for board in boards} == {TaskState.ACCEPTED}  # type: ignore[union-attr]


def test_a_private_close_that_lies_is_caught_by_the_auditor(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    """The decider awards against its own details, or publishes a digest of other
    details: an auditor's view says so (bidders cannot tell, and say they cannot)."""
    (a, b, c, _, auditor), clock = net
    boards = net[0]
    ref = _private(a, [auditor])
    sync_as_peers(*(x.replica for x in boards))
    b.bid(ref, price=30.0, capabilities=CAN)
    c.bid(ref, price=20.0, capabilities=CAN)
    sync_as_peers(*(x.replica for x in boards))
    a.close(ref)
    section = a.replica.document(ref.section(a.me))
    with section.transaction():  # the award moved to the dearer bid
        section.map("task")["award"] = {"winner": str(b.me), "at": clock.now}
    sync_as_peers(*(x.replica for x in boards))
    assert any("does not follow" in p for p in auditor.view(ref).problems)  # type: ignore[union-attr]
    assert b.view(ref).problems == () and not b.view(ref).audited  # type: ignore[union-attr]

    kept = a.replica.document(ref.offers(a.me))
    with kept.transaction():  # details changed after the digest was published
        kept.map("task")["close"] = {**kept.map("task").to_py()["close"], "refused": {"x": "y"}}
    sync_as_peers(*(x.replica for x in boards))
    assert any("digest" in p for p in auditor.view(ref).problems)  # type: ignore[union-attr]


def test_a_follower_the_announcer_admits_reads_every_bid_within_the_caps(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    """A peer not named an auditor asks to follow (the announcer admits it): it is
    offered every bid and audits the award. Only the announcer of a private task
    admits; past MAX_FOLLOWERS a task admits no more, and nothing changes."""
    (a, b, c, d, follower), _clock = net
    boards = net[0]
    ref = _private(a, [])
    open_ref = a.announce("open", NEEDS, negotiation={"selection_criteria": ["price"]}).ref
    sync_as_peers(*(x.replica for x in boards))
    assert not b.admit_follower(ref, follower.me)  # not b's task
    assert not a.admit_follower(open_ref, follower.me)  # open bids: everyone reads them
    assert not a.admit_follower(TaskRef(a.me, "unknown"), follower.me)
    assert a.admit_follower(ref, follower.me)
    b.bid(ref, price=30.0, capabilities=CAN)
    c.bid(ref, price=20.0, capabilities=CAN)
    sync_as_peers(*(x.replica for x in boards))
    a.close(ref)
    sync_as_peers(*(x.replica for x in boards))
    view = follower.view(ref)
    assert view is not None and view.audited and view.expected_winner == c.me
    assert {x.bidder for x in view.bids} == {b.me, c.me}
    assert not d.view(ref).audited  # type: ignore[union-attr]

    strangers = [Identity.generate().peer_id for _ in range(MAX_FOLLOWERS)]
    admitted = [a.admit_follower(ref, peer) for peer in strangers]
    assert admitted.count(True) == MAX_FOLLOWERS - 1 and admitted[-1] is False
    assert a.admit_follower(ref, follower.me)  # (already in: still in)
    assert a._offered(ref.offers(b.me), strangers[-1]) is False


def test_auditors_are_for_private_tasks_and_are_peer_ids(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    (a, *_), _clock = net
    for negotiation, match in (
        ({"auditors": [str(a.me)]}, "only a task with private_bids"),
        ({"private_bids": True, "auditors": ["nobody"]}, "auditors: a list of peer ids"),
        ({"private_bids": True, "auditors": "x"}, "auditors: a list of peer ids"),
        ({"private_bids": "yes"}, "private_bids: True or False"),
        ({"private_bids": True, "auditors": [str(a.me)] * 17}, "at most 16"),
    ):
        with pytest.raises(NegotiationError, match=match):
            a.announce("t", NEEDS, negotiation=negotiation)
    assert a.tasks() == []  # nothing written


def test_a_close_that_arrives_before_the_bids_it_pins_awaits_them_not_fails_its_audit(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    """Entries travel independently: a replica can hold the close before a bid it
    pins. Until the bid arrives the award cannot be audited there (audited False, the
    bidders awaited named), which is not a failed audit: no problem is reported, the
    metric of failed audits stays put, and the winner cannot act on it yet."""
    (a, b, c, late, _), _clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS, negotiation={"selection_criteria": ["price"]})
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)
    c.bid(ann.ref, price=9.0, capabilities=CAN)
    sync(a.replica, b.replica)
    sync(a.replica, c.replica)  # a holds both bids, b only its own
    a.close(ann.ref)  # b wins
    for board in (b, late):  # each gets the close, and not c's bid
        held = board.replica.heads()
        board.replica.ingest(
            [e for e in a.replica.missing_from(held) if e.author == a.me]
        ).raise_first()
    for board, awaited in ((b, {c.me}), (late, {b.me, c.me})):
        view = board.view(ann.ref)
        assert view is not None and view.closed and view.award == b.me
        assert set(view.awaiting) == awaited and not view.audited
        assert view.problems == () and view.expected_winner is None
    with pytest.raises(NegotiationError, match="cannot be audited here yet"):
        b.accept(ann.ref)
    assert b.parties(ann.ref).winner is None  # type: ignore[union-attr]
    _sync(boards)
    for board in (b, late):
        view = board.view(ann.ref)
        assert view is not None and view.awaiting == () and view.audited and view.audit_ok
    b.accept(ann.ref)
    assert b.parties(ann.ref).winner == b.me  # type: ignore[union-attr]


def test_a_close_that_pins_a_bid_of_no_peer_fails_its_audit(
    net: tuple[list[TaskBoard], Clock],
) -> None:
    """No bid can ever come from a bidder that is not a peer id: nothing to await."""
    (a, b, _c, observer, _), _clock = net
    boards = net[0]
    ann = a.announce("t", NEEDS)
    _sync(boards)
    b.bid(ann.ref, price=5.0, capabilities=CAN)
    _sync(boards)
    a.close(ann.ref)
    section = a.replica.document(ann.ref.section(a.me))
    with section.transaction():
        close = section.map("task").to_py()["close"]
        close["bidders"] = {**close["bidders"], "not-a-peer": "00" * 32}
        section.map("task")["close"] = close
    _sync(boards)
    view = observer.view(ann.ref)
    assert view is not None and view.awaiting == ()
    assert any("not a peer id" in problem for problem in view.problems), view.problems
