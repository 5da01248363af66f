"""Ed25519 checks: the one place a signature is checked, and the helper process
that checks them for large batches.

This module imports nothing of the package, on purpose: a helper runs this very
file (``python -P .../signatures.py``), and so starts in about 0.2 s of CPU, not
the 0.9 s that importing the whole package costs. A node that starts two helpers
on a busy machine pays that twice (see :mod:`crdt_mesh.replica.verifier`).

Helper protocol (its stdin and stdout): the helper first writes one byte,
:data:`READY`; then each request is a 4-byte big-endian length and CBOR
``[[signed_message, public_key], ...]``, where ``signed_message`` is the
signature followed by the signed bytes (the layout of ``crypto_sign_open``);
each answer is a 4-byte length and one byte per item, 1 if the signature
verified.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO

import cbor2
import nacl.bindings
import nacl.exceptions

#: What a helper writes once it is ready to take requests.
READY = b"R"

Item = tuple[bytes, bytes]  # (signature + signed bytes, public key)


def open_signed(key: bytes, signed: bytes) -> bool:
    """Whether ``signed`` (a 64-byte signature, then the domain tag and the message) was
    signed by the Ed25519 ``key``."""
    try:
        nacl.bindings.crypto_sign_open(signed, key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True


def verify_items(items: Iterable[Item]) -> bytes:
    """One byte per item: 1 if its signature verifies, else 0."""
    return bytes(open_signed(key, signed) for signed, key in items)


def read_exact(stream: IO[bytes], size: int) -> bytes:
    """``size`` bytes from ``stream``.

    Raises:
        EOFError: the stream ended first.
    """
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer requests until ``stdin`` ends (the helper's loop)."""
    stdout.write(READY)
    stdout.flush()
    while True:
        try:
            size = int.from_bytes(read_exact(stdin, 4), "big")
            items = cbor2.loads(read_exact(stdin, size))
        except EOFError:
            return
        answer = verify_items(items)
        stdout.write(len(answer).to_bytes(4, "big") + answer)
        stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
