"""The member list of a ``members`` document."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import cbor2

from ..errors import InvalidEntry
from ..identity import PeerId


@dataclass(frozen=True, slots=True)
class Acl:
    """The member list of a ``members`` document, as of one owner entry.

    ``cuts`` maps a removed member to the last seq of its feed that still counts:
    its later entries are void on every replica (the same rule as a fork freeze).
    """

    members: frozenset[PeerId] = frozenset()
    cuts: Mapping[PeerId, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "members": sorted(m.key for m in self.members),
                "cuts": {p.key: s for p, s in self.cuts.items()},
            },
            canonical=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> Acl:
        try:
            record = cbor2.loads(data)
            members = frozenset(PeerId(k) for k in record["members"])
            cuts = {PeerId(k): int(v) for k, v in record["cuts"].items()}
        except Exception as exc:
            raise InvalidEntry(f"malformed ACL: {exc}") from None
        acl = cls(members, cuts)
        if acl.encode() != bytes(data):
            raise InvalidEntry("ACL is not in canonical encoding")
        return acl

    def with_changes(self, add: Iterable[PeerId] = (), remove: Mapping[PeerId, int] = {}) -> Acl:
        members = (self.members | frozenset(add)) - frozenset(remove)
        cuts = {p: s for p, s in self.cuts.items() if p not in members}
        cuts.update(remove)
        return Acl(members, cuts)
