"""Transports found by the scheme of an address: ``tcp://``, ``mem://``, or your own.

A transport package registers a factory under the entry-point group
``crdt_mesh.transports``, named by its scheme::

    [project.entry-points."crdt_mesh.transports"]
    unix = "my_package.unix:UnixTransport"

The factory is called with keyword ``penalties`` (the node's table of misbehaviour,
for what a transport sees before a peer is proven) and returns a
:class:`~crdt_mesh.runtime.transport.Transport`. :class:`Transports` is a transport
that dispatches each address to the transport of its scheme, loaded on first use;
it is what a :class:`~crdt_mesh.Mesh` uses when it is given no transport, and what
the ``crdt-mesh`` command uses. crdt_mesh itself imports no transport: it finds
them (in the manner of anyio's backends, loaded by name on first use).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping

from ..errors import TransportError
from ..identity import Identity
from .penalty import Penalties
from .transport import Link, Listener, Transport

GROUP = "crdt_mesh.transports"

#: A transport factory: called with ``penalties=...`` (and nothing else).
TransportFactory = Callable[..., Transport]

_registered: dict[str, TransportFactory] = {}


def register_transport(scheme: str, factory: TransportFactory) -> None:
    """Register ``factory`` for ``scheme`` in this process (beside the entry points; for
    programs and tests that are not installed packages). A later call replaces it."""
    _check_scheme(scheme)
    _registered[scheme] = factory


def schemes() -> list[str]:
    """Every scheme a transport is known for: registered here or by entry point."""
    found = {ep.name for ep in importlib.metadata.entry_points(group=GROUP)}
    return sorted(found | set(_registered))


def factory_for(scheme: str) -> TransportFactory:
    """The factory of ``scheme``.

    Raises:
        TransportError: no transport is known for it.
    """
    if scheme in _registered:
        return _registered[scheme]
    for entry_point in importlib.metadata.entry_points(group=GROUP, name=scheme):
        try:
            loaded: TransportFactory = entry_point.load()
        except Exception as exc:  # a broken plug-in: say which, do not crash the caller
            raise TransportError(f"the transport for {scheme}:// failed to load: {exc}") from exc
        return loaded
    known = ", ".join(f"{s}://" for s in schemes()) or "none"
    raise TransportError(f"no transport for {scheme}:// (known: {known})")


def scheme_of(address: str) -> str:
    """The scheme of ``address`` (``tcp`` of ``tcp://host:port``).

    Raises:
        TransportError: ``address`` has no scheme.
    """
    scheme, sep, _ = address.partition("://") if isinstance(address, str) else ("", "", "")
    if not sep or not scheme:
        raise TransportError(f"{address!r} is not an address of the form scheme://...")
    _check_scheme(scheme)
    return scheme


def _check_scheme(scheme: str) -> None:
    if not isinstance(scheme, str) or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        raise TransportError(f"{scheme!r} is not a URL scheme")


class Transports:
    """A transport that hands each address to the transport of its scheme.

    Args:
        transports: transports to use for some schemes (the rest are made from the
            registry on first use).
        penalties: given to each transport the registry makes.
    """

    def __init__(
        self,
        transports: Mapping[str, Transport] | None = None,
        *,
        penalties: Penalties | None = None,
    ) -> None:
        self._transports: dict[str, Transport] = dict(transports or {})
        self.penalties = penalties if penalties is not None else Penalties()

    def for_scheme(self, scheme: str) -> Transport:
        """The transport of ``scheme`` (made on first use).

        Raises:
            TransportError: no transport is known for it.
        """
        transport = self._transports.get(scheme)
        if transport is None:
            transport = factory_for(scheme)(penalties=self.penalties)
            self._transports[scheme] = transport
        return transport

    def for_address(self, address: str) -> Transport:
        return self.for_scheme(scheme_of(address))

    async def listen(self, address: str, identity: Identity) -> Listener:
        return await self.for_address(address).listen(address, identity)

    async def dial(self, address: str, identity: Identity) -> Link:
        return await self.for_address(address).dial(address, identity)


__all__ = [
    "GROUP",
    "TransportFactory",
    "Transports",
    "factory_for",
    "register_transport",
    "scheme_of",
    "schemes",
]
