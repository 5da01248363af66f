"""Noise XX against the public test vectors, and the ways a handshake must fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transports.noise import (
    DecryptError,
    HandshakeError,
    XXHandshake,
    generate_private,
)

#: Public data (the cacophony vectors, as snow ships them), kept in the repository.
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "noise_xx.json"


def _vectors() -> list[dict[str, object]]:
    data = json.loads(VECTORS.read_text())
    return [v for v in data["vectors"] if v["protocol_name"] == "Noise_XX_25519_ChaChaPoly_BLAKE2b"]


def test_vectors_are_present() -> None:
    assert _vectors()


def test_handshake_reproduces_the_vectors_byte_for_byte() -> None:
    for v in _vectors():
        _check_vector(v)


def _check_vector(v: dict[str, object]) -> None:
    h = bytes.fromhex
    initiator = XXHandshake(
        initiator=True,
        static=h(v["init_static"]),
        prologue=h(v["init_prologue"]),
        ephemeral=h(v["init_ephemeral"]),
    )
    responder = XXHandshake(
        initiator=False,
        static=h(v["resp_static"]),
        prologue=h(v["resp_prologue"]),
        ephemeral=h(v["resp_ephemeral"]),
    )
    messages = v["messages"]
    sides = [(initiator, responder), (responder, initiator), (initiator, responder)]
    for (writer, reader), message in zip(sides, messages[:3], strict=True):
        ciphertext = writer.write_message(h(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"]
        assert reader.read_message(ciphertext) == h(message["payload"])
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash.hex() == v["handshake_hash"]
    assert responder.handshake_hash == initiator.handshake_hash
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    for n, message in enumerate(messages[3:]):
        send, recv = (r_send, i_recv) if n % 2 == 0 else (i_send, r_recv)
        ciphertext = send.encrypt(b"", h(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"]
        assert recv.decrypt(b"", ciphertext) == h(message["payload"])


def _pair() -> tuple[XXHandshake, XXHandshake]:
    return (
        XXHandshake(initiator=True, static=generate_private()),
        XXHandshake(initiator=False, static=generate_private()),
    )


def test_a_swapped_key_fails_authentication() -> None:
    """A man in the middle replacing the responder's ephemeral key breaks the handshake."""
    a, b = _pair()
    b.read_message(a.write_message())
    second = bytearray(b.write_message())
    second[:32] = generate_private()  # not even a public key: any other 32 bytes
    with pytest.raises(HandshakeError):
        a.read_message(bytes(second))
    assert a.failed
    with pytest.raises(HandshakeError):
        a.write_message()


@pytest.mark.parametrize("cut", [0, 10, 31, 32, 60, 95])
def test_a_truncated_message_fails(cut: int) -> None:
    a, b = _pair()
    b.read_message(a.write_message())
    second = b.write_message()
    with pytest.raises(HandshakeError):
        a.read_message(second[:cut])


def test_out_of_turn_is_refused() -> None:
    a, b = _pair()
    with pytest.raises(HandshakeError):
        a.read_message(b"\x00" * 32)
    with pytest.raises(HandshakeError):
        b.write_message()


def test_transport_rejects_replay_reorder_and_alteration() -> None:
    a, b = _pair()
    b.read_message(a.write_message())
    a.read_message(b.write_message())
    b.read_message(a.write_message())
    a_send, _ = a.split()
    _, b_recv = b.split()
    first, second = a_send.encrypt(b"", b"one"), a_send.encrypt(b"", b"two")
    with pytest.raises(DecryptError):
        b_recv.decrypt(b"", second)  # reordered
    assert b_recv.decrypt(b"", first) == b"one"
    with pytest.raises(DecryptError):
        b_recv.decrypt(b"", first)  # replayed
    altered = bytearray(second)
    altered[0] ^= 1
    with pytest.raises(DecryptError):
        b_recv.decrypt(b"", bytes(altered))
    assert b_recv.decrypt(b"", second) == b"two"  # a failed decrypt changed nothing


@given(st.binary(max_size=200))
def test_any_first_message_bytes_are_answered_or_refused(data: bytes) -> None:
    b = XXHandshake(initiator=False, static=generate_private())
    try:
        b.read_message(data)
    except HandshakeError:
        return
    assert len(data) >= 32  # only a message holding an ephemeral key is taken


@given(st.binary(max_size=300))
def test_any_second_message_bytes_are_refused(data: bytes) -> None:
    a, b = _pair()
    b.read_message(a.write_message())
    with pytest.raises(HandshakeError):
        a.read_message(data)
