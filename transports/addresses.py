"""``scheme://[peer@]host:port[/path]``: the address form our network transports share."""

from __future__ import annotations

from crdt_mesh.errors import TransportError
from crdt_mesh.identity import PeerId


def split_address(
    address: str, scheme: str, *, port_zero: bool
) -> tuple[PeerId | None, str, int, str]:
    """(peer, host, port, path) of ``scheme://[peer@]host:port[/path]`` (IPv6 hosts in
    brackets); ``port_zero``: whether port 0 (any free port) is allowed.

    Raises:
        TransportError: not such an address.
    """
    prefix = f"{scheme}://"
    if not isinstance(address, str) or not address.startswith(prefix):
        raise TransportError(f"not a {prefix} address: {address!r}")
    rest, _, path = address[len(prefix) :].partition("/")
    peer = None
    if "@" in rest:
        peer_text, rest = rest.split("@", 1)
        try:
            peer = PeerId.parse(peer_text)
        except ValueError as exc:
            raise TransportError(f"bad peer id in {address!r}") from exc
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise TransportError(f"address {address!r} needs host:port")
    try:
        port = int(port_text)
    except ValueError:
        raise TransportError(f"bad port in {address!r}") from None
    if not (0 if port_zero else 1) <= port < 65536:
        raise TransportError(f"bad port in {address!r}")
    return peer, host, port, path


def format_address(scheme: str, peer: PeerId | None, host: str, port: int, path: str = "") -> str:
    """The printable form :func:`split_address` reads back."""
    bracketed = f"[{host}]" if ":" in host else host
    named = f"{peer}@" if peer is not None else ""
    return f"{scheme}://{named}{bracketed}:{port}{'/' + path if path else ''}"
