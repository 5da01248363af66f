"""Channels and organizations: who is in a group and who administers it.

A group is a ``members`` document of the peer that created it
(``members:<creator>:mem:channel:<name>``). Its ACL lists the group's other
admins, which is what lets them write it; the creator is always one. Membership
is a record of operations the admins write into it, one per add or removal, each
stamped with a Lamport clock (one more than any it has seen); the operation on a
peer with the highest (clock, admin key) says whether the peer is in. Replicas
that hold the same operations therefore agree on one membership, whatever order
concurrent changes by different admins arrived in (a property test checks it).

An organization may also take in whole channels: its members are its own and
those of every channel it lists, so its memories reach all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...identity import PeerId
from ...ledger import DocumentId, Entry
from ...replica.index import DocumentIndex
from ...replica.replica import Replica
from .keys import Keyring
from .model import Channel, FederatedMemoryError, MemoryPrivacyLevel
from .model import Organization as Org
from .rules import (
    Scope,
    channel_document,
    check_group_name,
    check_peers,
    group_of,
    lockbox_document,
    organization_document,
)

_ROOT = "memory"
_OPS = "membership"
#: The most membership operations one group's record is read with (each admin's
#: changes beyond it are ignored: a hostile admin cannot make readers do unbounded work).
MAX_OPERATIONS = 100_000


@dataclass(frozen=True, slots=True)
class GroupState:
    """A group as this replica's operations say."""

    creator: PeerId
    admins: frozenset[PeerId]
    members: frozenset[PeerId]  # its own members (admins included)
    removed: frozenset[PeerId]  # peers whose last operation took them out
    channels: frozenset[tuple[PeerId, str]]  # an organization's channels
    dropped: frozenset[tuple[PeerId, str]]  # channels it took in, then left out
    organization: str | None  # the organization a channel says it belongs to
    clock: int  # the highest Lamport clock of its operations


def _document(kind: str, creator: PeerId, name: str) -> DocumentId:
    make = channel_document if kind == "channel" else organization_document
    return make(creator, name)


class Groups:
    """The channels and organizations one replica knows, and the commands on them."""

    def __init__(
        self, replica: Replica, keys: Keyring, clock: Callable[[], float] = time.time
    ) -> None:
        self.replica = replica
        self.keys = keys
        self.clock = clock
        self._index = DocumentIndex(replica, group_of)
        self._states: dict[DocumentId, GroupState] = {}
        self._unsubscribe = replica.on_commit(self._on_commit)

    @property
    def me(self) -> PeerId:
        return self.replica.peer_id

    def close(self) -> None:
        self._unsubscribe()
        self._index.close()

    def _on_commit(self, entries: list[Entry]) -> None:
        for entry in entries:
            if group_of(entry.document) is not None:
                self._states.pop(entry.document, None)
                for document, state in list(self._states.items()):
                    if state.channels:  # an organization of channels: theirs may have changed
                        self._states.pop(document, None)

    # -- reading -----------------------------------------------------------------------------

    def state(self, kind: str, creator: PeerId, name: str) -> GroupState | None:
        document = _document(kind, creator, name)
        cached = self._states.get(document)
        if cached is not None:
            return cached
        if not self.replica.has_document(document):
            return None
        state = self._read(document, creator)
        self._states[document] = state
        return state

    def _read(self, document: DocumentId, creator: PeerId) -> GroupState:
        admins = self.replica.members(document)  # the ACL: the creator and its admins
        doc = self.replica.document(document)
        ops: Any = doc.map(_OPS).to_py() or {}
        info: Any = doc.map(_ROOT).get("info")
        last: dict[str, tuple[float, str, bool]] = {}  # subject -> (clock, admin, in)
        top = 0.0
        for count, (op_id, op) in enumerate(ops.items()):
            if count >= MAX_OPERATIONS:
                break
            admin, _, _ = str(op_id).partition(":")
            if not isinstance(op, Mapping) or not isinstance(op.get("subject"), str):
                continue
            stamp, joined = op.get("clock"), op.get("in")
            if not isinstance(stamp, int | float) or not isinstance(joined, bool):
                continue
            top = max(top, float(stamp))
            mark = (float(stamp), admin, joined)
            if op["subject"] not in last or mark > last[op["subject"]]:
                last[op["subject"]] = mark
        members, removed = set(admins), set[PeerId]()
        channels: set[tuple[PeerId, str]] = set()
        dropped: set[tuple[PeerId, str]] = set()
        for subject, (_, _, joined) in last.items():
            kind, _, rest = subject.partition(":")
            if kind == "peer":
                try:
                    peer = PeerId(bytes.fromhex(rest))
                except ValueError:
                    continue
                (members if joined else removed).add(peer)
            elif kind == "channel":
                creator_hex, _, name = rest.partition(":")
                try:
                    pair = (PeerId(bytes.fromhex(creator_hex)), check_group_name(name, "c"))
                except (ValueError, FederatedMemoryError):
                    continue
                (channels if joined else dropped).add(pair)
        members |= admins
        organization = info.get("organization") if isinstance(info, Mapping) else None
        return GroupState(
            creator,
            frozenset(admins),
            frozenset(members),
            frozenset(removed - members),
            frozenset(channels),
            frozenset(dropped),
            organization if isinstance(organization, str) else None,
            int(top),
        )

    def members(self, kind: str, creator: PeerId, name: str) -> frozenset[PeerId]:
        """Who is in the group now: for an organization, the members of its channels too."""
        state = self.state(kind, creator, name)
        if state is None:
            return frozenset()
        if kind != "organization" or not state.channels:
            return state.members
        everyone = set(state.members)
        for channel_creator, channel in state.channels:
            everyone |= self.members("channel", channel_creator, channel)
        return frozenset(everyone)

    def may_read_record(self, document: DocumentId, peer: PeerId) -> bool:
        """Who is offered a group's record: its members, and those it removed (so that
        they learn it)."""
        found = group_of(document)
        if found is None or document.owner is None:
            return False
        kind, name = found
        state = self.state(kind, document.owner, name)
        if state is None:
            return peer == document.owner
        if peer in state.removed or peer in self.members(kind, document.owner, name):
            return True
        if kind != "channel":  # the members of channels it left out learn it
            return any(peer in self.members("channel", *pair) for pair in state.dropped)
        # the members of an organization that takes in this channel: they need its
        # members to know who else is in their organization
        channel = (document.owner, name)
        for (other, org_name), documents in self._index.items():
            for org in documents if other == "organization" else ():
                if org.owner is None:
                    continue
                org_state = self.state("organization", org.owner, org_name)
                if (
                    org_state
                    and channel in org_state.channels
                    and peer in self.members("organization", org.owner, org_name)
                ):
                    return True
        return False

    def find(self, kind: str, name: str, creator: PeerId | None = None) -> Channel | Org | None:
        """The group ``name`` of ``creator`` (default: this peer's, else the one known).

        Raises:
            FederatedMemoryError: several creators have a group of that name (name one).
        """
        documents = [d for d in self._index.get((kind, name)) if creator in (None, d.owner)]
        if creator is None and len(documents) > 1:
            mine = [d for d in documents if d.owner == self.me]
            if not mine:
                raise FederatedMemoryError(
                    f"{len(documents)} peers have a {kind} {name!r}: name its creator"
                )
            documents = mine
        if not documents or documents[0].owner is None:
            return None
        state = self.state(kind, documents[0].owner, name)
        if state is None:
            return None
        if kind == "organization":
            members = self.members(kind, state.creator, name)
            return Org(name, state.creator, members, state.admins, state.channels)
        return Channel(name, state.creator, state.members, state.organization, state.admins)

    def all(self, kind: str) -> list[Channel | Org]:
        out = []
        for (found, name), documents in self._index.items():
            if found == kind:
                for document in documents:
                    group = self.find(kind, name, document.owner)
                    if group is not None:
                        out.append(group)
        return sorted(out, key=lambda g: (g.name, g.admin.key))

    def mine(self, kind: str) -> list[str]:
        """The names of the groups of ``kind`` this peer is a member of."""
        return [g.name for g in self.all(kind) if self.me in g.members]

    def target(
        self, level: MemoryPrivacyLevel, channel: str | None, organization: str | None
    ) -> tuple[PeerId | None, str | None]:
        """(creator, name) of the group a memory at ``level`` goes to (None, None: none).

        Raises:
            FederatedMemoryError: a group the level needs is missing, unknown, or this
                peer is not a member of it; or one is named that the level has not.
        """
        if level is MemoryPrivacyLevel.ENCRYPTED and channel is None:
            return None, None  # to chosen readers
        if level in (MemoryPrivacyLevel.TEAM, MemoryPrivacyLevel.ENCRYPTED):
            if channel is None:
                raise FederatedMemoryError("channel: a team memory names its channel")
            group = self.find("channel", check_group_name(channel, "channel"))
        elif level is MemoryPrivacyLevel.ORGANIZATION:
            if organization is None:
                raise FederatedMemoryError("organization: an organization memory names it")
            name = check_group_name(organization, "organization")
            group = self.find("organization", name)
        else:
            if organization is not None or (
                channel is not None and level is not MemoryPrivacyLevel.PUBLIC
            ):
                raise FederatedMemoryError(f"a {level.value} memory has no channel or organization")
            return None, None  # (a public memory's channel is a topic: anyone posts to it)
        if group is None:
            raise FederatedMemoryError(f"unknown {'channel' if channel else 'organization'}")
        if self.me not in group.members:
            raise FederatedMemoryError(f"{self.me.short} is not a member of {group.name!r}")
        return group.admin, group.name

    def organization_of(self, scope: Scope) -> str | None:
        """The organization a team memory's channel belongs to (None: none, or not team)."""
        if scope.privacy is not MemoryPrivacyLevel.TEAM or scope.admin is None:
            return None
        channel = self.find("channel", scope.group or "", scope.admin)
        return channel.organization if isinstance(channel, Channel) else None

    # -- commands ----------------------------------------------------------------------------

    def create(
        self, kind: str, name: str, members: Iterable[PeerId], organization: str | None
    ) -> None:
        """A new group created by this peer, with ``members`` (and itself).

        Raises:
            FederatedMemoryError: a malformed name, or this peer has a group of that name.
        """
        check_group_name(name, kind)
        if organization is not None:
            check_group_name(organization, "organization")
        peers = check_peers(members, "members")
        document = _document(kind, self.me, name)
        if self.replica.has_document(document):
            raise FederatedMemoryError(f"{kind} {name!r} exists already")
        doc = self.replica.document(document)
        with doc.transaction():
            doc.map(_ROOT)["info"] = {"organization": organization, "at": self.clock()}
            self._write_ops(doc, [(f"peer:{p.key.hex()}", True) for p in peers], 0)
        if kind == "channel":
            self.rotate(name)

    def include(self, organization: str, channel: str, creator: PeerId | None, joined: bool) -> Org:
        """Take ``channel``'s members into ``organization`` (or stop: ``joined`` False).

        Raises:
            FederatedMemoryError: unknown organization or channel, or not its admin.
        """
        found = self.find("channel", check_group_name(channel, "channel"), creator)
        if found is None:
            raise FederatedMemoryError(f"unknown channel {channel!r}")
        pair = [(found.admin, channel)]
        if joined:
            self.change("organization", organization, channels=pair)
        else:
            self.change("organization", organization, drop_channels=pair)
        group = self.find("organization", organization)
        assert isinstance(group, Org)
        return group

    # -- keys ------------------------------------------------------------------------------

    def rotate(self, channel: str) -> str:
        """A new key epoch of a channel this peer administers, sealed to its members.

        Raises:
            FederatedMemoryError: unknown channel, or not one of its admins.
        """
        group = self.admin_of("channel", channel)
        self._check_lockbox(group.admin, channel)
        return self.keys.rotate(group.admin, channel, group.members)

    def _can_seal(self, creator: PeerId, channel: str) -> bool:
        """Whether this replica may write the channel's lockbox (an admin made before the
        lockbox's member list reached it may not, yet)."""
        return self.me in self.replica.members(lockbox_document(creator, channel))

    def _check_lockbox(self, creator: PeerId, channel: str) -> None:
        if not self._can_seal(creator, channel):
            raise FederatedMemoryError(
                f"this admin of channel {channel!r} cannot seal its keys yet (the lockbox's"
                " member list has not reached it): try again once it has synced"
            )

    def reconcile(self) -> int:
        """Rotate each channel this peer administers whose current key was sealed to
        other members than it has now (concurrent changes by several admins end in one
        key for one membership). Returns how many rotated."""
        rotated = 0
        for group in self.all("channel"):
            if (
                self.me in group.admins
                and self._can_seal(group.admin, group.name)
                and not self.keys.sealed_to(group.admin, group.name, group.members)
            ):
                self.keys.rotate(group.admin, group.name, group.members)
                rotated += 1
        return rotated

    def admin_of(self, kind: str, name: str) -> Channel | Org:
        """The group ``name`` if this peer administers it.

        Raises:
            FederatedMemoryError: unknown group, or this peer is not one of its admins.
        """
        group = self.find(kind, check_group_name(name, kind))
        if group is None:
            raise FederatedMemoryError(f"unknown {kind} {name!r}")
        if self.me not in group.admins:
            raise FederatedMemoryError(f"only an admin of {kind} {name!r} changes it")
        return group

    def change(
        self,
        kind: str,
        name: str,
        add: Iterable[PeerId] = (),
        remove: Iterable[PeerId] = (),
        channels: Iterable[tuple[PeerId, str]] = (),
        drop_channels: Iterable[tuple[PeerId, str]] = (),
    ) -> None:
        """Add and remove members (and, for an organization, channels).

        Raises:
            FederatedMemoryError: unknown group, not its admin, or removing an admin (its
                creator takes that away first).
        """
        group = self.admin_of(kind, name)
        if kind == "channel":
            self._check_lockbox(group.admin, name)  # the change rotates the key: checked first
        added, removed = check_peers(add, "peer"), check_peers(remove, "peer")
        for peer in removed:
            if peer in group.admins:
                raise FederatedMemoryError(
                    f"{peer.short} administers {kind} {name!r}: only its creator removes it"
                )
        ops = [(f"peer:{p.key.hex()}", True) for p in added]
        ops += [(f"peer:{p.key.hex()}", False) for p in removed]
        ops += [(f"channel:{c.key.hex()}:{n}", True) for c, n in channels]
        ops += [(f"channel:{c.key.hex()}:{n}", False) for c, n in drop_channels]
        state = self.state(kind, group.admin, name)
        assert state is not None
        doc = self.replica.document(_document(kind, group.admin, name))
        with doc.transaction():
            self._write_ops(doc, ops, state.clock)

    def set_admin(self, kind: str, name: str, peer: PeerId, admin: bool) -> None:
        """Make ``peer`` an admin (and a member) of a group this peer created, or no longer
        an admin (it stays a member; its later changes are void everywhere).

        Raises:
            FederatedMemoryError: unknown group, or this peer did not create it.
        """
        check_peers([peer], "peer")
        group = self.admin_of(kind, name)
        if group.admin != self.me:
            raise FederatedMemoryError(f"only the creator of {kind} {name!r} names its admins")
        if peer == self.me:
            raise FederatedMemoryError("the creator of a group stays its admin")
        change = {"add": [peer]} if admin else {"remove": [peer]}
        self.replica.set_members(_document(kind, self.me, name), **change)
        if kind == "channel":
            self.replica.set_members(lockbox_document(self.me, name), **change)
        if admin:
            self.change(kind, name, add=[peer])

    def _write_ops(self, doc: Any, ops: list[tuple[str, bool]], clock: int) -> None:
        table = doc.map(_OPS)
        mine = f"{self.me.key.hex()}:"
        count = sum(1 for k in table if str(k).startswith(mine))
        for subject, joined in ops:
            count += 1
            table[f"{mine}{count}"] = {"subject": subject, "in": joined, "clock": clock + 1}
