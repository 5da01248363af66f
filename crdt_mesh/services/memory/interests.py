"""What each peer follows: interest-scoped replication of public and encrypted memories.

A peer receives the public memories it follows (by tag, or by the channel a public
memory is posted to) and the ciphertext of the channels it follows (its own
channels, without asking), not every one of the network. An interest is a key:
``tag:<tag>``, ``channel:<name>``, or ``*`` (everything). Each peer also follows,
without saying so, what it wrote (``author:<key>``) and what is wrapped to it
(``reader:<key>``).

A document is offered over a link when *both* ends follow it: so the two ends
compute the same set of feeds and anti-entropy settles, and a peer passes on only
what it follows itself. A peer tells its linked peers what it follows in one
ephemeral frame (at most :data:`MAX_KEYS` keys); following and unfollowing write
nothing that leaves the replica. What a peer follows is known to the peers it links to.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import cbor2

from ...identity import PeerId
from ...ledger import DocumentId, Policy
from ...replica.replica import Replica
from .keys import Keyring, read_root
from .model import PREFIX, FederatedMemoryError, MemoryPrivacyLevel
from .rules import check_group_name, check_tags, lockbox_of, scope_of

EVERYTHING = "*"
#: The most keys one peer's announcement may hold.
MAX_KEYS = 256
MAX_ANNOUNCEMENT = 24 * 1024  # bytes of one announcement frame
_PEERS_KEPT = 4096  # announcements remembered (the least recently changed go first)
_KEY = re.compile(r"\*|tag:[^\s:,]{1,64}|channel:[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FOLLOWING = DocumentId(Policy.LOCAL, f"{PREFIX}following")
_ROOT = "memory"


def tag_key(tag: str) -> str:
    return f"tag:{tag}"


def channel_key(name: str) -> str:
    return f"channel:{name}"


def author_key(peer: PeerId) -> str:
    return f"author:{peer.key.hex()}"


def reader_key(peer: PeerId) -> str:
    return f"reader:{peer.key.hex()}"


def implicit(peer: PeerId) -> frozenset[str]:
    """What ``peer`` follows without saying so: what it wrote, what is wrapped to it."""
    return frozenset({author_key(peer), reader_key(peer)})


def interest_keys(stored: Any) -> frozenset[str]:
    """The well-formed tag and channel keys of a memory's stored ``interest`` list (what
    an author writes there cannot make its memory followed by everyone)."""
    if not isinstance(stored, list):
        return frozenset()
    return frozenset(
        k for k in stored[:MAX_KEYS] if isinstance(k, str) and k != EVERYTHING and _KEY.fullmatch(k)
    )


def grown_interest(value: Mapping[str, Any], before: Iterable[str]) -> list[str]:
    """The keys a public memory's new version is followed by: those of every version
    so far, so that it is followed by whoever followed an older one (and both ends of a
    link agree on what to offer, whichever version each holds).

    Raises:
        FederatedMemoryError: over 256 keys in all (store a new memory instead).
    """
    keys = {*before, *(tag_key(t) for t in value["tags"])}
    if value.get("channel") is not None:
        keys.add(channel_key(value["channel"]))
    if len(keys) > MAX_KEYS:
        raise FederatedMemoryError(
            f"a public memory is followed by {MAX_KEYS} tags at most over all its versions:"
            " store a new one"
        )
    return sorted(keys)


def encode_announcement(keys: Iterable[str]) -> bytes:
    return cbor2.dumps(["i", sorted(keys)], canonical=True)


def decode_announcement(frame: bytes) -> frozenset[str] | None:
    """The keys of an announcement frame; None if it is malformed or too large."""
    if len(frame) > MAX_ANNOUNCEMENT:
        return None
    try:
        kind, keys = cbor2.loads(frame)
    except Exception:
        return None
    if kind != "i" or not isinstance(keys, list) or len(keys) > MAX_KEYS:
        return None
    if not all(isinstance(k, str) and _KEY.fullmatch(k) for k in keys):
        return None
    return frozenset(keys)


class Interests:
    """This replica's follows (kept in a local document), its peers' announcements,
    and which documents both ends of a link follow.

    Args:
        replica: the replica whose documents are judged.
        my_channels: the channels this replica is a member of (it follows them).
    """

    def __init__(self, replica: Replica, my_channels: Callable[[], Iterable[str]]) -> None:
        self.replica = replica
        self._my_channels = my_channels
        self._peers: OrderedDict[PeerId, frozenset[str]] = OrderedDict()
        self._mine = self._load()
        self._keys: dict[DocumentId, frozenset[str] | None] = {}
        self._announcement: tuple[int, frozenset[str]] | None = None

    def _load(self) -> frozenset[str]:
        if not self.replica.has_document(_FOLLOWING):
            return frozenset()
        value: Any = self.replica.document(_FOLLOWING).map(_ROOT).get("keys")
        return frozenset(k for k in value or () if isinstance(k, str) and _KEY.fullmatch(k))

    # -- this replica --------------------------------------------------------------------

    @property
    def following(self) -> frozenset[str]:
        """The keys this replica follows by choice (its channels come on top)."""
        return self._mine

    def follow(
        self,
        tags: Iterable[str] = (),
        channels: Iterable[str] = (),
        everything: bool = False,
        *,
        stop: bool = False,
    ) -> frozenset[str]:
        """Follow (``stop``: stop following) ``tags``, ``channels``, or everything.

        Raises:
            FederatedMemoryError: a malformed tag or channel name, or more than
                :data:`MAX_KEYS` keys in all.
        """
        if isinstance(channels, str):
            raise FederatedMemoryError(f"channels: a list of names, not the one str {channels!r}")
        keys = {tag_key(t) for t in check_tags(tags)}
        keys |= {channel_key(check_group_name(c, "channels")) for c in channels}
        if everything:
            keys.add(EVERYTHING)
        changed = self._mine - keys if stop else self._mine | keys
        if len(changed) > MAX_KEYS:
            raise FederatedMemoryError(f"at most {MAX_KEYS} tags and channels followed")
        if changed != self._mine:
            document = self.replica.document(_FOLLOWING)
            with document.transaction():
                document.map(_ROOT)["keys"] = sorted(changed)
            self._mine = frozenset(changed)
            self.replica.policy_changed()
        return self._mine

    def announcement(self) -> frozenset[str]:
        """What this replica follows, as it tells its peers: its chosen keys and the
        channels it is a member of."""
        version = self.replica.version
        if self._announcement is None or self._announcement[0] != version:
            keys = self._mine | {channel_key(name) for name in self._my_channels()}
            self._announcement = (version, frozenset(keys))
        return self._announcement[1]

    # -- documents -------------------------------------------------------------------------

    def both_follow(self, document: DocumentId, peer: PeerId) -> bool | None:
        """Whether ``peer`` and this replica both follow ``document``; None: it is not
        scoped by interest (group memories, forget records, others' documents)."""
        keys = self.keys_of(document)
        if keys is None:
            return None
        me = self.replica.peer_id
        return self.follows(self.of_peer(peer), peer, keys) and self.follows(
            self.announcement(), me, keys
        )

    def keys_of(self, document: DocumentId) -> frozenset[str] | None:
        """The keys ``document`` is followed by (None: not scoped by interest)."""
        if document in self._keys:
            return self._keys[document]
        owner = document.owner
        scope = scope_of(document)
        channel = lockbox_of(document)
        keys: frozenset[str] | None = None
        if owner is None or (scope is None and channel is None):
            return None
        if channel is not None:
            keys = frozenset({author_key(owner), channel_key(channel)})
        elif scope is None or scope.forgotten:
            return None
        elif scope.privacy is MemoryPrivacyLevel.ENCRYPTED and scope.group is not None:
            keys = frozenset({author_key(owner), channel_key(scope.group)})
        elif scope.privacy in (MemoryPrivacyLevel.PUBLIC, MemoryPrivacyLevel.ENCRYPTED):
            if not self.replica.has_document(document):
                return frozenset({author_key(owner)})  # not held (nothing cached: it may come)
            root = read_root(self.replica, document)
            if scope.privacy is MemoryPrivacyLevel.PUBLIC:
                value = root.get("record")
                held = value.get("interest") if isinstance(value, Mapping) else None
                keys = frozenset({author_key(owner), *interest_keys(held)})
            else:  # to chosen readers
                readers = Keyring.readers_of(root.get("encrypted"))
                keys = frozenset({author_key(owner), *map(reader_key, readers)})
        if len(self._keys) > 200_000:
            self._keys.clear()
        self._keys[document] = keys
        return keys

    def changed(self, document: DocumentId) -> None:
        """``document`` changed (or was purged): its keys are read again."""
        self._keys.pop(document, None)

    # -- peers ----------------------------------------------------------------------------

    def learn(self, peer: PeerId, keys: frozenset[str]) -> bool:
        """Take ``peer``'s announcement; whether it changed what the peer follows."""
        if self._peers.get(peer) == keys:
            return False
        self._peers[peer] = keys
        self._peers.move_to_end(peer)
        while len(self._peers) > _PEERS_KEPT:
            self._peers.popitem(last=False)
        self.replica.policy_changed()
        return True

    def of_peer(self, peer: PeerId) -> frozenset[str]:
        """What ``peer`` said it follows (nothing, until it says)."""
        return self._peers.get(peer, frozenset())

    @staticmethod
    def follows(keys: frozenset[str], peer: PeerId, document_keys: frozenset[str]) -> bool:
        """Whether a peer announcing ``keys`` follows a document with ``document_keys``."""
        return (
            EVERYTHING in keys
            or not keys.isdisjoint(document_keys)
            or not implicit(peer).isdisjoint(document_keys)
        )
