"""`mesh.tasks` on running meshes: the mission's example, events, flags."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from crdt_mesh import FeatureDisabledError, Identity, Mesh, MeshConfig, P2PEvents, Replica
from crdt_mesh.runtime.host import LinkEnd
from crdt_mesh.runtime.penalty import Offence
from crdt_mesh.services.tasks import (
    Announcement,
    Bid,
    NegotiationError,
    TaskService,
    TaskState,
    TaskView,
)
from crdt_mesh.testing.cluster import cluster, full
from tests.helpers import wait_for
from transports.memory import MemoryNetwork

pytestmark = pytest.mark.anyio

ON = MeshConfig(enabled=True, gossip=True, task_negotiation=True, gossip_interval_ms=200)


async def test_the_missions_example_end_to_end(tmp_path: Path) -> None:
    network = MemoryNetwork(seed=3)
    announced: dict[int, list[TaskView]] = {i: [] for i in range(4)}
    received: dict[int, list[object]] = {i: [] for i in range(4)}
    assigned: dict[int, list[TaskView]] = {i: [] for i in range(4)}
    async with cluster(
        tmp_path,
        4,
        address=lambda i: f"mem://n{i}",
        transport=lambda i: network.transport(f"mem://n{i}"),
        peers=full,
        config=ON,
    ) as nodes:
        meshes = nodes.meshes
        for i, mesh in enumerate(meshes):
            mesh.events.on(P2PEvents.TASK_ANNOUNCED, announced[i].append)
            mesh.events.on(P2PEvents.BID_RECEIVED, received[i].append)
            mesh.events.on(P2PEvents.TASK_ASSIGNED, assigned[i].append)
            mesh.gossip.join(capabilities=["code-review", "typescript"] if i else [])
        alice = meshes[0]
        ann = await alice.tasks.announce(
            "task-123",
            requirements={
                "capabilities": ["code-review", "typescript"],
                "estimated_duration": 3600,
                "priority": "high",
            },
            deadline=time.time() + 7200,
            negotiation={
                "bid_timeout": 30,
                "min_bidders": 2,
                "selection_criteria": ["reputation", "price", "availability"],
            },
        )
        await wait_for(lambda: all(len(announced[i]) == 1 for i in range(4)), timeout=20)
        await wait_for(lambda: all(len(m.gossip.peers()) == 4 for m in meshes), timeout=20)
        await meshes[1].tasks.bid("task-123", price=12.0, availability=0.9, eta=1800)
        await meshes[2].tasks.bid("task-123", price=12.0, availability=0.6, eta=900)
        bids = await alice.tasks.collect_bids(ann.ref)  # returns at min_bidders, not at 30 s
        assert len(bids) == 2 and all(isinstance(b, Bid) for b in bids)
        winner = await alice.tasks.select_bid(
            bids, criteria=["reputation", "price", "availability"]
        )
        assert winner is not None and winner.bidder == meshes[1].replica.peer_id
        await wait_for(lambda: all(len(assigned[i]) == 1 for i in range(4)), timeout=20)
        await wait_for(lambda: all(len(received[i]) >= 2 for i in (0, 3)), timeout=20)
        assert all(v.award == winner.bidder for i in range(4) for v in assigned[i])

        await meshes[1].tasks.accept("task-123")
        await meshes[1].tasks.report_progress("task-123", 0.5)
        await meshes[1].tasks.complete("task-123", {"review": "LGTM"})
        await wait_for(
            lambda: all(m.tasks.view(ann.ref).state is TaskState.COMPLETED for m in meshes), 20
        )
        await wait_for(lambda: all(m.tasks.view(ann.ref).audit_ok for m in meshes), 20)


async def _refuses_everything(tasks: TaskService) -> None:
    calls = [
        lambda: tasks.announce("t"),
        lambda: tasks.bid("t", price=1.0),
        lambda: tasks.collect_bids("t"),
        lambda: tasks.select_bid("t"),
        lambda: tasks.accept("t"),
        lambda: tasks.report_progress("t", 1),
        lambda: tasks.complete("t"),
        lambda: tasks.fail("t"),
        lambda: tasks.cancel("t"),
        lambda: tasks.decompose("t", {}),
    ]
    for call in calls:
        with pytest.raises(FeatureDisabledError, match="P2P_"):
            await call()
    for sync_call in (tasks.tasks, lambda: tasks.view("t")):
        with pytest.raises(FeatureDisabledError, match="P2P_"):
            sync_call()


async def test_every_task_call_refuses_while_its_flag_is_off(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        for config in (MeshConfig(), MeshConfig(enabled=True, gossip=True)):
            mesh = Mesh(replica, MemoryNetwork().transport(), config=config)
            await _refuses_everything(mesh.tasks)
            mesh.tasks.close()


async def test_select_bid_selects_among_the_bids_it_is_given_and_a_deciders_provider_is_pinned(
    tmp_path: Path,
) -> None:
    """Given b's bid alone, b wins though c's is cheaper, and every replica agrees; the
    announcer's own reputation provider breaks nobody's audit (its scores are pinned)."""
    async with cluster(tmp_path, 3, peers=full, config=ON) as nodes:
        alice, b, c = nodes.meshes
        for mesh in nodes.meshes:
            mesh.gossip.join(capabilities=["review"])
        await wait_for(lambda: all(len(m.gossip.peers()) == 3 for m in nodes.meshes), 20)
        alice.tasks.set_reputation(lambda peer: 0.9 if peer == b.replica.peer_id else 0.1)
        ann = await alice.tasks.announce(
            "pick", {"capabilities": ["review"]}, negotiation={"min_bidders": 2}
        )
        await wait_for(
            lambda: all(
                any(v.announcement.ref == ann.ref for v in m.tasks.tasks()) for m in nodes.meshes
            ),
            20,
        )
        await b.tasks.bid("pick", price=20.0)
        await c.tasks.bid("pick", price=5.0)
        bids = await alice.tasks.collect_bids(ann.ref)
        mine = [x for x in bids if x.bidder == b.replica.peer_id]
        with pytest.raises(NegotiationError, match="non-empty list"):
            await alice.tasks.select_bid([])
        winner = await alice.tasks.select_bid(mine)
        assert winner is not None and winner.bidder == b.replica.peer_id
        await wait_for(  # (a close can arrive before a bid it lists: audited once both are)
            lambda: all(
                (v := m.tasks.view(ann.ref)) is not None and v.award == winner.bidder and v.audit_ok
                for m in nodes.meshes
            ),
            20,
        )
        for mesh in nodes.meshes:
            view = mesh.tasks.view(ann.ref)
            assert view.audit_ok, view.problems
            assert [r.bidder for r in view.rejected] == [c.replica.peer_id]
        await b.tasks.accept("pick")  # b's replica (no provider) audits the award as sound


def _behind_a_relay(index: int, addresses: Sequence[str]) -> list[str]:
    """0 (the announcer) - 1 (a relay) - 2, 3 (bidders): no bidder is linked to 0."""
    return [[], [addresses[0]], [addresses[1]], [addresses[1]]][index]


@asynccontextmanager
async def _private_task_behind_a_relay(
    root: Path, name: str, seed: int
) -> AsyncIterator[tuple[list[Mesh], Announcement]]:
    """Four meshes without discovery (:func:`_behind_a_relay`) and a private task of
    node 0's that every node holds."""
    network = MemoryNetwork(seed=seed)
    quiet = MeshConfig(enabled=True, gossip=False, task_negotiation=True)
    async with cluster(
        root,
        4,
        address=lambda i: f"mem://{name}{i}",
        transport=lambda i: network.transport(f"mem://{name}{i}"),
        peers=_behind_a_relay,
        config=quiet,
    ) as nodes:
        meshes = nodes.meshes
        await wait_for(lambda: len(meshes[1].peers) == 3, timeout=20)
        ann = await meshes[0].tasks.announce(
            name,
            requirements={"capabilities": []},
            negotiation={"min_bidders": 2, "selection_criteria": ["price"], "private_bids": True},
        )
        await wait_for(lambda: all(m.replica.has_document(ann.ref.section(ann.ref.announcer))
                                   for m in meshes), timeout=20)  # fmt: skip
        yield meshes, ann


async def test_private_bids_go_to_the_announcer_and_to_no_peer_on_the_way(
    tmp_path: Path,
) -> None:
    """Without discovery, bidders reach the announcer only through a relay; the relay
    may not read their bids, so each bid is carried on a link dialled to the announcer
    for it. The relay and the other bidder never hold it; the award reaches all."""
    async with _private_task_behind_a_relay(tmp_path, "quiet", seed=5) as (meshes, ann):
        assert ann.reach == ("mem://quiet0",)
        for i, price in ((2, 20.0), (3, 10.0)):
            assert meshes[0].replica.peer_id not in meshes[i].peers
            await meshes[i].tasks.bid(ann.ref, price=price, capabilities=[])
        bids = await meshes[0].tasks.collect_bids(ann.ref, timeout=20)
        bidders = {meshes[i].replica.peer_id for i in (2, 3)}
        assert {b.bidder for b in bids} == bidders
        winner = await meshes[0].tasks.select_bid(bids, criteria=["price"])
        assert winner is not None and winner.bidder == meshes[3].replica.peer_id
        await wait_for(lambda: all(m.tasks.view(ann.ref).award == winner.bidder
                                   for m in meshes), timeout=20)  # fmt: skip
        for i in (1, 2, 3):
            held = {p for p in bidders if meshes[i].replica.has_document(ann.ref.offers(p))}
            assert held <= {meshes[i].replica.peer_id}, f"node {i} holds another's bid"
        assert not meshes[2].tasks.view(ann.ref).audited
        assert meshes[0].tasks.view(ann.ref).audited


async def test_a_peer_that_follows_a_private_task_audits_it_and_no_other_does(
    tmp_path: Path,
) -> None:
    """Bidders behind a relay again; bidder 2 also follows the task (it was not named
    an auditor): its courier asks the announcer, so once the close is out it holds
    every bid and the close's details, and audits the award. Bidder 3 and the relay,
    who do not follow, still hold no bid but their own."""
    async with _private_task_behind_a_relay(tmp_path, "followed", seed=7) as (meshes, ann):
        ends: list[LinkEnd] = []  # how the announcer's links end: couriers say "bye"
        meshes[0].runtime.on_link_closed(lambda peer, how: ends.append(how))
        meshes[2].tasks.follow(ann.ref)
        assert meshes[2].tasks.following == {ann.ref}
        for i, price in ((2, 20.0), (3, 10.0)):
            await meshes[i].tasks.bid(ann.ref, price=price, capabilities=[])
        bids = await meshes[0].tasks.collect_bids(ann.ref, timeout=20)
        winner = await meshes[0].tasks.select_bid(bids, criteria=["price"])
        assert winner is not None
        bidders = {meshes[i].replica.peer_id for i in (2, 3)}

        def audited(i: int) -> bool:
            view = meshes[i].tasks.view(ann.ref)
            return view.award is not None and view.audited

        await wait_for(lambda: audited(2), timeout=20)
        await wait_for(lambda: all(m.tasks.view(ann.ref).award for m in meshes), timeout=20)
        # the close may come before a bid it lists: a round brings the bid
        await wait_for(lambda: meshes[2].tasks.view(ann.ref).audit_ok, timeout=20)
        view = meshes[2].tasks.view(ann.ref)
        assert view.audit_ok and view.award == meshes[3].replica.peer_id, view.problems
        assert all(meshes[2].replica.has_document(ann.ref.offers(p)) for p in bidders)
        assert meshes[2].tasks.following == set()  # closed: it counts no more against the cap
        for i in (1, 3):
            held = {p for p in bidders if meshes[i].replica.has_document(ann.ref.offers(p))}
            assert held <= {meshes[i].replica.peer_id}, f"node {i} holds another's bid"
            assert not meshes[i].tasks.view(ann.ref).audited
        await wait_for(lambda: LinkEnd.PARTED in ends)
        assert LinkEnd.FULL not in ends and LinkEnd.LOST not in ends


async def test_a_malformed_courier_frame_is_junk_and_a_stray_follow_changes_nothing(
    tmp_path: Path,
) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        async with Mesh(replica, MemoryNetwork().transport()) as mesh:
            ann = await mesh.tasks.announce(
                "t", requirements={"capabilities": []}, negotiation={"private_bids": True}
            )
            stranger = Identity.generate().peer_id
            version = replica.version
            mesh.tasks._receive_courier(stranger, b"f" + b"unknown")  # no such task here
            mesh.tasks._receive_courier(stranger, b"")  # a bid's courier: nothing to do
            assert replica.version == version and mesh.penalties.offences[Offence.JUNK] == 0
            # not a frame, not UTF-8, too long, and names no document may have (a
            # typed error escaped the handler for these two, and closed the link)
            for junk in (b"x", b"f\xff\xfe", b"f" + b"a" * 5000, b"fa\x00b", b"f" + b"a" * 600):
                mesh.tasks._receive_courier(stranger, junk)
            assert mesh.penalties.offences[Offence.JUNK] == 5 and replica.version == version
            mesh.tasks._receive_courier(stranger, b"f" + ann.ref.name.encode())
            assert replica.version == version + 1  # a follower: offers are worked out again
