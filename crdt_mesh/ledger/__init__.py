"""The ledger: document ids and policies, signed entries, fork proofs, ACLs.

Pure values: no I/O, no clock, no LMDB. An :class:`Entry` is the unit that is
stored and replicated; its bytes are canonical CBOR, so each entry has exactly
one encoding, and its id (BLAKE2b-256 of its nine signed fields) is stable.

- :mod:`.ids`: :class:`DocumentId` (self-certifying: it commits to its policy and
  owner), :class:`Policy`, the Yrs client id each author writes with.
- :mod:`.entry`: :class:`Entry`, signed alone or in Merkle signature groups.
- :mod:`.fork`: :class:`ForkProof`, evidence that an author equivocated.
- :mod:`.acl`: :class:`Acl`, the member list of a ``members`` document.
"""

from .acl import Acl
from .entry import (
    ENTRY_VERSION,
    MAX_BATCH_DEPTH,
    MAX_ENTRY_SIZE,
    ZERO_HASH,
    Entry,
    EntryKind,
    seal,
)
from .fork import ForkProof
from .ids import MAX_NAME_LENGTH, DocumentId, Policy, client_id_for

__all__ = [
    "ENTRY_VERSION",
    "MAX_BATCH_DEPTH",
    "MAX_ENTRY_SIZE",
    "MAX_NAME_LENGTH",
    "ZERO_HASH",
    "Acl",
    "DocumentId",
    "Entry",
    "EntryKind",
    "ForkProof",
    "Policy",
    "client_id_for",
    "seal",
]
