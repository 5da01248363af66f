"""The memory board: federated memory's commands and views over one replica.

Synchronous, clock injected. It owns the replica's read policy for memory (who is
offered which memory: see :mod:`.model`). Views are pure functions of what the
replica holds: the same entries show the same reader the same."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ...errors import NotWritable
from ...identity import PeerId
from ...ledger import DocumentId, Policy
from ...replica.index import DocumentIndex
from ...replica.replica import Replica
from .groups import Groups
from .interests import Interests, grown_interest
from .keys import Keyring, read_root
from .model import Channel, FederatedMemoryError, Memory, MemoryHit, MemoryPrivacyLevel, MemoryRef
from .model import Organization as Org
from .rules import (
    Scope,
    at_rest_key,
    check_content,
    check_group_name,
    check_level,
    check_metadata,
    check_peers,
    check_tags,
    forget_document,
    group_of,
    is_memorys,
    lockbox_of,
    make_filters,
    memory_document,
    memory_of_forget,
    new_memory_id,
    order_key,
    parse_memory,
    record,
    scope_of,
    seal,
    unseal,
)
from .search import FilterIndex, Ranker, by_tags

_ROOT = "memory"
PUBLIC = MemoryPrivacyLevel.PUBLIC


class MemoryBoard:
    """Commands and views of federated memory over ``replica``."""

    def __init__(self, replica: Replica, clock: Callable[[], float] = time.time) -> None:
        self.replica = replica
        self.clock = clock
        self._key = at_rest_key(replica.identity.seed)
        self._memories = DocumentIndex(replica, _memory_key)
        #: channels and organizations (see :mod:`.groups`)
        #: the encrypted level's keys
        self.keys = Keyring(replica, clock)
        self.groups = Groups(replica, self.keys, clock)
        #: ranks text queries (and keeps the embeddings it computed)
        self.ranker = Ranker()
        #: what memories() found, per document, and the listing at a version
        self._cache: dict[DocumentId, Memory | None] = {}
        self._version = 0
        self._listing: tuple[int, list[Memory]] | None = None
        self._filter_index: tuple[int, FilterIndex] | None = None
        self._unsubscribe = replica.on_commit(self._invalidate)
        self._counted: set[str] = set()  # channels whose sealed memories are counted
        #: the cached memories of each group (admin, kind, name): what its changes drop
        self._by_group: dict[tuple[PeerId, str, str], set[DocumentId]] = {}
        #: what this replica and its peers follow (public memories, channels' ciphertext)
        self.interests = Interests(replica, self._my_channels)
        self._remove_policy = replica.add_read_policy(self._offered)

    @property
    def me(self) -> PeerId:
        return self.replica.peer_id

    def close(self) -> None:
        self._unsubscribe()
        self._remove_policy()
        self._memories.close()
        self.groups.close()

    # -- who may read what -------------------------------------------------------------------

    def _offered(self, document: DocumentId, peer: PeerId) -> bool | None:
        """The read policy: what ``peer`` may read *and* both ends follow (see
        :mod:`.interests`); None, at once, for documents that are not memory's."""
        if not is_memorys(document):
            return None
        verdict = self._may_read(document, peer)
        if verdict is False or self.interests.both_follow(document, peer) is False:
            return False
        return verdict

    def may_read(self, document: DocumentId, peer: PeerId) -> bool:
        """Whether ``peer`` may read ``document`` (interests aside): what answers obey."""
        verdict = self._may_read(document, peer)
        return self.replica.readable_by(document, peer) if verdict is None else verdict

    def _may_read(self, document: DocumentId, peer: PeerId) -> bool | None:
        """Who may read memory's documents: None for documents that are not memory's."""
        scope = scope_of(document)
        if scope is None:
            if group_of(document) is not None:  # members, and the removed: they learn it
                return self.groups.may_read_record(document, peer)
            if lockbox_of(document) is not None:
                return True  # sealed boxes: anyone may carry them
            return None
        if scope.privacy in (MemoryPrivacyLevel.PUBLIC, MemoryPrivacyLevel.ENCRYPTED):
            return True  # public; or ciphertext that anyone may carry
        if scope.privacy is MemoryPrivacyLevel.PRIVATE or scope.admin is None:
            return False
        return peer in self._group_members(scope)

    def _group_members(self, scope: Scope) -> frozenset[PeerId]:
        assert scope.admin is not None and scope.group is not None
        return self.groups.members(scope.group_kind, scope.admin, scope.group)

    # -- interests ----------------------------------------------------------------------------

    def follow(
        self, tags: Iterable[str] = (), channels: Iterable[str] = (), everything: bool = False
    ) -> frozenset[str]:
        """Receive the public memories with any of ``tags`` or posted to one of
        ``channels``, the ciphertext of ``channels``, or (``everything``) all of them.
        Returns every key now followed (see :mod:`.interests`).

        Raises:
            FederatedMemoryError: a malformed tag or channel, or over 256 in all.
        """
        return self.interests.follow(tags, channels, everything)

    def unfollow(
        self, tags: Iterable[str] = (), channels: Iterable[str] = (), everything: bool = False
    ) -> frozenset[str]:
        """Stop following: what was received stays; what comes after is not offered."""
        return self.interests.follow(tags, channels, everything, stop=True)

    def announcement(self) -> frozenset[str]:
        """What this replica follows, as it tells its peers (see :mod:`.interests`)."""
        return self.interests.announcement()

    def _my_channels(self) -> list[str]:
        return self.groups.mine("channel")

    # -- channels and organizations -----------------------------------------------------------

    def create_channel(
        self, name: str, members: Iterable[PeerId] = (), organization: str | None = None
    ) -> Channel:
        """Make a channel this peer creates (and administers), with ``members`` and itself.

        Raises:
            FederatedMemoryError: a malformed name, or this peer has a channel of that name.
        """
        self.groups.create("channel", name, members, organization)
        return self._found("channel", name)  # type: ignore[return-value]

    def create_organization(self, name: str, members: Iterable[PeerId] = ()) -> Org:
        """Make an organization this peer creates, with ``members`` (and itself)."""
        self.groups.create("organization", name, members, None)
        return self._found("organization", name)  # type: ignore[return-value]

    def add_member(self, kind: str, name: str, peer: PeerId) -> Channel | Org:
        """Add ``peer`` to a group this peer administers (a channel's key rotates: the new
        member reads from now on)."""
        self.groups.change(kind, name, add=[peer])
        return self._changed(kind, name)

    def remove_member(self, kind: str, name: str, peer: PeerId) -> Channel | Org:
        """Remove ``peer``: nothing written after is offered to it; its own memories in the
        group leave every member's view (they stay, unread, in the ledger).

        Raises:
            FederatedMemoryError: unknown group, not one of its admins, or removing an
                admin (its creator takes that away first).
        """
        self.groups.change(kind, name, remove=[peer])
        return self._changed(kind, name)

    def set_admin(self, kind: str, name: str, peer: PeerId, admin: bool = True) -> Channel | Org:
        """Make ``peer`` an admin (and member) of a group this peer created, or no longer
        one (it stays a member).

        Raises:
            FederatedMemoryError: unknown group, or this peer did not create it.
        """
        self.groups.set_admin(kind, name, peer, admin)
        return self._changed(kind, name)

    def add_channel(self, organization: str, channel: str, creator: PeerId | None = None) -> Org:
        """Take every member of ``channel`` into ``organization`` (this peer administers it).

        Raises:
            FederatedMemoryError: unknown organization or channel, or not its admin.
        """
        return self.groups.include(organization, channel, creator, True)

    def remove_channel(self, organization: str, channel: str, creator: PeerId | None = None) -> Org:
        """Stop taking ``channel``'s members into ``organization``."""
        return self.groups.include(organization, channel, creator, False)

    def _changed(self, kind: str, name: str) -> Channel | Org:
        if kind == "channel":
            self.rotate(name)  # a removed member reads nothing written after
        return self._found(kind, name)

    def _found(self, kind: str, name: str) -> Channel | Org:
        group = self.groups.find(kind, name)
        assert group is not None
        return group

    # -- channel keys (the encrypted level) ----------------------------------------------------

    def rotate(self, channel: str) -> str:
        """Start a new key epoch of a channel this peer administers (see :mod:`.keys`);
        returns its name.

        Raises:
            FederatedMemoryError: unknown channel, or not one of its admins.
        """
        return self.groups.rotate(channel)

    def reconcile(self) -> int:
        """Rotate each channel this peer administers whose key was sealed to other members
        than it has now (see :mod:`.keys`). Returns how many rotated."""
        return self.groups.reconcile()

    def _rotation_due(self, creator: PeerId, channel: str) -> bool:
        if channel not in self._counted:  # once: what was written before this board
            self._counted.add(channel)
            for (_id, forgotten), documents in self._memories.items():
                for document in documents:
                    if not forgotten:
                        self.keys.count(document, scope_of(document))
        return self.keys.rotation_due(creator, channel)

    def channels(self) -> list[Channel]:
        return [g for g in self.groups.all("channel") if isinstance(g, Channel)]

    def organizations(self) -> list[Org]:
        return [g for g in self.groups.all("organization") if isinstance(g, Org)]

    # -- memories ---------------------------------------------------------------------------

    def store(
        self,
        content: str,
        privacy: MemoryPrivacyLevel | str = MemoryPrivacyLevel.PRIVATE,
        *,
        channel: str | None = None,
        organization: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        readers: Iterable[PeerId] | None = None,
    ) -> Memory:
        """Keep a memory at ``privacy``: one signed entry in a document of its own.

        ``encrypted`` with a ``channel``: sealed with the channel's current epoch key
        (its members read it; anyone may carry it). ``encrypted`` with ``readers``:
        sealed with a key of its own, wrapped to each reader and to this peer.

        Raises:
            FederatedMemoryError: malformed content, tags or metadata; a team memory
                without a channel this peer belongs to, an organization memory without
                an organization it belongs to, an encrypted one with neither a channel
                nor readers (or with both).
        """
        level = check_level(privacy)
        content, tag_list = check_content(content), check_tags(tags)
        extra = check_metadata(metadata)
        if readers is not None and level is not MemoryPrivacyLevel.ENCRYPTED:
            raise FederatedMemoryError("readers: only an encrypted memory has chosen readers")
        if level is MemoryPrivacyLevel.ENCRYPTED and (readers is None) == (channel is None):
            raise FederatedMemoryError(
                "an encrypted memory names a channel, or its readers (one of the two)"
            )
        chosen = check_peers(readers, "readers") if readers is not None else None
        admin, group = self.groups.target(level, channel, organization)
        document = memory_document(self.me, level, new_memory_id(), admin, group)
        now = self.clock()
        value = record(content, tag_list, extra, now, now)
        if level is PUBLIC:
            if channel is not None:
                value["channel"] = check_group_name(channel, "channel")
            value["interest"] = grown_interest(value, ())
        if level is MemoryPrivacyLevel.ENCRYPTED:
            self._write_encrypted(document, value, admin, group, chosen)
        else:
            self._write(document, value)

        return self._as_written(document, value)

    def update(
        self,
        ref: MemoryRef,
        *,
        content: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Memory:
        """Change one's own memory (one entry).

        Raises:
            FederatedMemoryError: unknown, forgotten, or another author's memory.
        """
        current = self._own(ref)
        value = record(
            check_content(content) if content is not None else current.content,
            check_tags(tags) if tags is not None else current.tags,
            check_metadata(metadata) if metadata is not None else current.metadata,
            current.created_at,
            self.clock(),
        )
        if current.privacy is PUBLIC:
            if current.channel is not None:
                value["channel"] = current.channel
            before: Any = self._root(ref.document).get("record")
            held = before.get("interest") if isinstance(before, Mapping) else None
            value["interest"] = grown_interest(value, held if isinstance(held, list) else ())
        scope = scope_of(ref.document)
        if scope is not None and scope.privacy is MemoryPrivacyLevel.ENCRYPTED:
            readers = (
                self.keys.readers_of(self._stored(ref.document)) if scope.admin is None else None
            )
            self._write_encrypted(ref.document, value, scope.admin, scope.group, readers)
        else:
            self._write(ref.document, value)
        return self._as_written(ref.document, value)

    def _as_written(self, document: DocumentId, value: dict[str, Any]) -> Memory:
        """The memory just written (read back from the value: inside ``replica.batch()``
        nothing is committed yet)."""
        scope = scope_of(document)
        assert scope is not None
        memory = parse_memory(
            MemoryRef(document), self.me, scope, value, self.groups.organization_of(scope)
        )
        assert memory is not None  # checked before it was written
        return memory

    def forget(self, ref: MemoryRef) -> None:
        """Forget one's own memory everywhere: a signed forget record reaches whoever may
        read the memory, and each honest replica purges the memory's content from its
        store and its files (see ``docs/memory.md``).

        Raises:
            FederatedMemoryError: unknown, or another author's memory.
        """
        if not isinstance(ref, MemoryRef) or scope_of(ref.document) is None:
            raise FederatedMemoryError(f"ref: a MemoryRef, not {ref!r}")
        document = ref.document  # (judged by its name: it may have left the view)
        if document.policy is not Policy.LOCAL and document.owner != self.me:
            raise FederatedMemoryError(f"only its author forgets {ref}")
        head = self.replica.heads(include_local=True).get((document, self.me))
        if head is None or self.replica.purged(document, self.me):
            raise FederatedMemoryError(f"unknown or forgotten memory {ref}")
        if document.policy is not Policy.LOCAL:
            forget = self.replica.document(forget_document(document))
            with forget.transaction():
                forget.map(_ROOT)["forget"] = {"seq": head.seq, "id": head.id.hex()}
        self.replica.purge(document, self.me, head.seq, head.id)
        self._forget_cache(document)
        self.replica.compact()

    def settle(self) -> int:
        """Purge every memory whose author's forget record this replica holds, then
        compact the store if anything was purged. Returns how many were purged."""
        purged = 0
        for scope_key, documents in self._memories.items():
            if not scope_key[1]:
                continue  # a memory, not a forget record
            for forget in documents:
                memory = memory_of_forget(forget)
                author = forget.owner
                if author is None or self.replica.purged(memory, author):
                    continue
                value: Any = self._root(forget).get("forget")
                try:
                    seq, entry_id = int(value["seq"]), bytes.fromhex(value["id"])
                except (TypeError, KeyError, ValueError):
                    continue
                if seq >= 0 and len(entry_id) == 32:
                    purged += self.replica.purge(memory, author, seq, entry_id)
                    self._forget_cache(memory)
        if purged:
            self.replica.compact()
        return purged

    def _own(self, ref: MemoryRef) -> Memory:
        if not isinstance(ref, MemoryRef):
            raise FederatedMemoryError(f"ref: a MemoryRef, not {ref!r}")
        memory = self.get(ref)
        if memory is None:
            raise FederatedMemoryError(f"unknown or forgotten memory {ref}")
        if memory.author != self.me:
            raise FederatedMemoryError(f"only {memory.author.short} changes or forgets {ref}")
        return memory

    def _write_encrypted(
        self,
        document: DocumentId,
        value: dict[str, Any],
        admin: PeerId | None,
        channel: str | None,
        readers: Sequence[PeerId] | None,
    ) -> None:
        if admin is not None and channel is not None:
            state = self.groups.state("channel", admin, channel)
            if state and self.me in state.admins and self._rotation_due(admin, channel):
                self.keys.rotate(admin, channel, self.groups.members("channel", admin, channel))
            stored = self.keys.for_channel(document, value, admin, channel)
        else:
            assert readers is not None
            stored = self.keys.for_readers(document, value, readers)
        held = self.replica.is_open(document)
        doc = self.replica.document(document)
        with doc.transaction():
            doc.map(_ROOT)["encrypted"] = stored
        if not held:
            self.replica.release(document)

    def _stored(self, document: DocumentId) -> Any:
        return self._root(document).get("encrypted")

    def _root(self, document: DocumentId) -> dict[str, Any]:
        return read_root(self.replica, document)

    def _write(self, document: DocumentId, value: dict[str, Any]) -> None:
        held = self.replica.is_open(document)
        doc = self.replica.document(document)
        try:
            with doc.transaction():
                if document.policy is Policy.LOCAL:
                    doc.map(_ROOT)["sealed"] = seal(self._key, document, value)
                else:
                    doc.map(_ROOT)["record"] = value
        except NotWritable as exc:
            raise FederatedMemoryError(f"{document.text} cannot be written: {exc}") from None
        finally:
            if not held:
                self.replica.release(document)  # a replica may hold very many memories

    # -- views -----------------------------------------------------------------------------

    def get(self, ref: MemoryRef) -> Memory | None:
        """The memory, if this replica holds it, may show it, and it is not forgotten."""
        scope = scope_of(ref.document)
        if scope is None or scope.forgotten:
            return None
        return self._read(ref.document, scope)

    def memories(self) -> list[Memory]:
        """Every memory this replica may show, newest first (kept between calls: a
        commit drops its memory; a group's member or key change drops all)."""
        return list(self._shown())

    def _shown(self) -> list[Memory]:
        """:meth:`memories`, the list kept (not a copy: never change it)."""
        if self._listing is not None and self._listing[0] == self._version:
            return self._listing[1]
        found = []
        for (_scope_id, forgotten), documents in self._memories.items():
            if forgotten:
                continue
            for document in documents:
                if document in self._cache:
                    memory = self._cache[document]
                else:
                    scope = scope_of(document)
                    assert scope is not None
                    memory = self._cache[document] = self._read(document, scope)
                    if scope.admin is not None and scope.group is not None:
                        key = (scope.admin, scope.group_kind, scope.group)
                        self._by_group.setdefault(key, set()).add(document)
                if memory is not None:
                    found.append(memory)
        found.sort(key=lambda m: order_key(0.0, m))
        self._listing = (self._version, found)
        return found

    def _invalidate(self, entries: list[Any]) -> None:
        for entry in entries:
            document = entry.document
            group = group_of(document)
            channel = lockbox_of(document)
            if group is None and channel is not None:
                group = ("channel", channel)
            if group is not None and document.owner is not None:
                # its members or keys changed: the memories of that group only (anyone
                # may make a group document of its own; it costs us nothing else)
                for shown in self._by_group.pop((document.owner, *group), ()):
                    self._forget_cache(shown)
                if group[0] == "channel":  # organizations take in channels' members
                    for key in [k for k in self._by_group if k[1] == "organization"]:
                        for shown in self._by_group.pop(key):
                            self._forget_cache(shown)
                continue
            scope = scope_of(document)
            if scope is not None:
                self.interests.changed(document)
                self._cache.pop(memory_of_forget(document) if scope.forgotten else document, None)
                self._version += 1
                if scope.group in self._counted:
                    self.keys.count(document, scope_of(document))

    def _forget_cache(self, document: DocumentId) -> None:
        self._cache.pop(document, None)
        self.interests.changed(document)
        self._version += 1

    def _read(self, document: DocumentId, scope: Scope) -> Memory | None:
        author = self.me if document.policy is Policy.LOCAL else document.owner
        if author is None or self.replica.purged(document, author):
            return None
        if not self.replica.has_document(document):
            return None
        grouped = scope.admin is not None
        if grouped and author not in self._group_members(scope):
            return None  # not (or no longer) a member: its memories leave the view
        encrypted = scope.privacy is MemoryPrivacyLevel.ENCRYPTED
        if grouped and not encrypted and self.me not in self._group_members(scope):
            return None  # we are not (or no longer) a member
        root = self._root(document)
        value: Any
        if document.policy is Policy.LOCAL:
            value = unseal(self._key, document, root.get("sealed"))
        elif scope.privacy is MemoryPrivacyLevel.ENCRYPTED:
            value = self.keys.open(document, self._stored(document), scope.admin, scope.group)
        else:
            value = root.get("record")
        return parse_memory(
            MemoryRef(document), author, scope, value, self.groups.organization_of(scope)
        )

    def query(
        self,
        *,
        text: str | None = None,
        tags: Iterable[str] | None = None,
        privacy: MemoryPrivacyLevel | str | Iterable[MemoryPrivacyLevel | str] | None = None,
        channels: Iterable[str] | None = None,
        organizations: Iterable[str] | None = None,
        authors: Iterable[PeerId] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        mode: str | None = None,
        reader: PeerId | None = None,
    ) -> list[MemoryHit]:
        """The memories this replica may show that pass every filter given, best first.

        Filters narrow together; within one, any value matches (``tags``: a memory with
        any of them). With ``text``, ``mode`` ranks: ``lexical`` (BM25 over content and
        tags; memories that match no word are left out), ``semantic`` (cosine of local
        embeddings), ``hybrid`` (the two fused by reciprocal rank; the default when the
        embedding model is installed, else ``lexical``). Without text, by how many of
        ``tags`` a memory has. Ties go to the newer, then to the name. With ``reader``,
        only the memories this replica would offer that peer (to answer its query).

        Raises:
            FederatedMemoryError: a malformed filter, or ``text`` without the search extra.
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise FederatedMemoryError(f"limit: a whole number >= 1, not {limit!r}")
        filters = make_filters(privacy, channels, organizations, authors, tags, since, until)
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise FederatedMemoryError(f"text: a non-empty str, not {text!r}")
        corpus = self._shown()
        rows: list[int] | None = None  # None: every memory shown (no filter to pass)
        if filters.narrows or reader is not None:
            if self._filter_index is None or self._filter_index[0] != self._version:
                self._filter_index = (self._version, FilterIndex(corpus))
            indexed = self._filter_index[1].rows(filters)
            rows = list(range(len(corpus))) if indexed is None else sorted(indexed)
            if filters.since is not None or filters.until is not None or reader is not None:
                rows = [
                    i
                    for i in rows
                    if filters.keeps(corpus[i])
                    and (reader is None or self._may_read(corpus[i].ref.document, reader))
                ]
        if text is None:
            kept = corpus if rows is None else [corpus[i] for i in rows]
            return [MemoryHit(m, s) for s, m in by_tags(kept, filters.tags, limit)]
        scored = self.ranker.rank(corpus, self._version, rows, text, mode, limit)
        scored.sort(key=lambda pair: order_key(pair[0], pair[1]))
        return [MemoryHit(m, s) for s, m in scored[:limit]]


def _memory_key(document: DocumentId) -> tuple[str, bool] | None:
    scope = scope_of(document)
    return (scope.id, scope.forgotten) if scope is not None else None
