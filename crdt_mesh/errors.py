"""The exception hierarchy of crdt_mesh.

Everything crdt_mesh raises on purpose derives from :class:`MeshError`. Errors
are split by whose fault they are:

* :class:`LocalError` - misuse by the caller (a closed replica, a document this
  replica may not write, a bad argument). Fix the calling code.
* :class:`RemoteError` - misbehaviour of a peer or corrupt input (a bad
  signature, a broken chain, a policy violation). Drop the input; keep serving.

Errors about an entry name it: ``document``, ``author`` (short id) and ``seq``.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every error that crdt_mesh raises on purpose."""


class LocalError(MeshError):
    """The caller misused the API; nothing was changed."""


class RemoteError(MeshError):
    """Input from a peer (or from disk) was invalid; it was not applied."""


class ArgumentTypeError(LocalError, TypeError):
    """An argument of the wrong type; the message names the argument and what it takes."""


class ArgumentValueError(LocalError, ValueError):
    """An argument of the right type but a value it cannot take; the message names it."""


class ClosedError(LocalError, RuntimeError):
    """The replica or store was used after it was closed."""


class FeatureDisabledError(LocalError):
    """A service was called while its feature flag is off."""


class InvalidDocumentId(LocalError, ValueError):
    """A document id or name is malformed."""


class InvalidEntry(RemoteError, ValueError):
    """Bytes that claim to be an entry are malformed or inconsistent."""

    def __init__(
        self,
        message: str,
        *,
        document: str | None = None,
        author: str | None = None,
        seq: int | None = None,
    ) -> None:
        where = ", ".join(
            f"{name}={value}"
            for name, value in (("document", document), ("author", author), ("seq", seq))
            if value is not None
        )
        super().__init__(f"{message} ({where})" if where else message)
        self.document = document
        self.author = author
        self.seq = seq


class PendingOverflow(InvalidEntry):
    """An out-of-order entry found no room in the pending area (its sender is over its
    quota, or the area is full of entries of peers using less): sent again later, it counts.
    """


class InvalidSignature(InvalidEntry):
    """An entry's signature does not verify against its author's key."""


class ChainError(InvalidEntry):
    """An entry does not extend its feed: wrong ``prev`` hash or bad ``seq``."""


class ForkDetected(InvalidEntry):
    """An author signed two different entries at the same (document, author, seq).

    The :class:`~crdt_mesh.ledger.ForkProof` is in :attr:`proof`; the replica
    has stored it and frozen the feed.
    """

    def __init__(self, message: str, *, proof: object, **where: object) -> None:
        super().__init__(message, **where)  # type: ignore[arg-type]
        self.proof = proof


class PolicyViolation(InvalidEntry):
    """An entry (or a local write) breaks its document's write policy."""


class ClientIdViolation(PolicyViolation):
    """An entry's CRDT update carries structs of a client id its author does not own."""


class InvalidUpdate(InvalidEntry):
    """An entry's CRDT update cannot be parsed or applied."""


class UnknownEvent(LocalError, ValueError):
    """An event name nobody fires: a typo, or a custom name not registered first."""


class InvalidKeyFile(LocalError, ValueError):
    """A key file is malformed, or its passphrase is wrong."""


class StoreError(MeshError):
    """The LMDB store failed (I/O, corruption, a full disk)."""


class NotWritable(LocalError, PermissionError):
    """This replica's identity may not write the document under its policy."""


class TransportError(MeshError, OSError):
    """A transport could not listen, dial, or keep a link."""


class LinkClosed(TransportError, ConnectionError):
    """The link is gone: closed by either side, or failed."""


class RateLimitExceeded(LinkClosed):
    """The peer sent faster than the link's limits allow; the link was closed."""


class AuthenticationError(TransportError):
    """A peer failed the handshake: it could not prove the identity it claims or was expected."""


class ConfigError(LocalError, ValueError):
    """A setting (an environment variable or an option) is malformed; it names which."""


class MissingExtra(LocalError, ImportError):
    """What was asked needs an optional extra that is not installed; the message says
    which (``pip install 'crdt_mesh[<extra>]'``)."""
