from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from crdt_mesh import Identity, InvalidKeyFile, PeerId
from crdt_mesh.errors import LocalError
from crdt_mesh.identity import Domain


def test_peer_id_printable_round_trip() -> None:
    peer = Identity.generate().peer_id
    text = str(peer)
    assert len(text) == 52 and text == text.lower()
    assert PeerId.parse(text) == peer
    assert peer.short == text[:12]


@pytest.mark.parametrize("bad", ["", "abc", "!" * 52, "a" * 53, 5])
def test_peer_id_parse_rejects_garbage(bad: object) -> None:
    with pytest.raises(LocalError) as raised:  # a ValueError, or for a non-str a TypeError
        PeerId.parse(bad)  # type: ignore[arg-type]
    assert isinstance(raised.value, TypeError if isinstance(bad, int) else ValueError)


def test_a_peer_id_parsed_again_is_remembered_and_other_spellings_still_refused() -> None:
    text = str(Identity.generate().peer_id)
    first = PeerId.parse(text)
    assert PeerId.parse(text) is first  # remembered: no second base32 decode
    assert text[-1] in "aq"  # the last character holds one bit of the key, four zero bits
    for spelling in (text.upper(), text[:-1] + "b"):  # upper case; a padding bit set
        with pytest.raises(ValueError):
            PeerId.parse(spelling)
        with pytest.raises(ValueError):  # and again: a refusal is not remembered
            PeerId.parse(spelling)


def test_a_peer_id_printed_again_is_not_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Services compare ids as text on hot paths (a 50-agent negotiation spent a fifth
    of its time in base32 when the cache of printable forms was lost)."""
    from crdt_mesh import identity

    peer = Identity.generate().peer_id
    encoded: list[bytes] = []
    b32encode = identity.base64.b32encode
    monkeypatch.setattr(
        identity.base64, "b32encode", lambda key: encoded.append(key) or b32encode(key)
    )
    first = str(peer)
    assert str(PeerId(peer.key)) == first and peer.short == first[:12]
    assert encoded == [peer.key]  # once, for three prints of two equal ids


def test_peer_id_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        PeerId(b"x" * 31)


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "key"
    identity.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load(path).peer_id == identity.peer_id


def test_sealed_key_needs_the_right_passphrase(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "sealed"
    identity.save(path, passphrase="correct horse")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert identity.seed not in path.read_bytes()
    assert Identity.load(path, passphrase="correct horse").peer_id == identity.peer_id
    with pytest.raises(InvalidKeyFile, match="wrong passphrase"):
        Identity.load(path, passphrase="wrong")
    with pytest.raises(InvalidKeyFile, match="passphrase is required"):
        Identity.load(path)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\xa1\x66format\x63bad"])
def test_corrupt_key_file_is_a_typed_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(InvalidKeyFile):
        Identity.load(path)


def test_signatures_verify_with_the_peer_id_for_their_domain_only() -> None:
    identity, other = Identity.generate(), Identity.generate()
    signature = identity.sign(Domain.ENTRY, b"message")
    assert identity.peer_id.verify(Domain.ENTRY, b"message", signature)
    assert not identity.peer_id.verify(Domain.ENTRY, b"massage", signature)
    assert not other.peer_id.verify(Domain.ENTRY, b"message", signature)
    for domain in Domain:  # a signature for one purpose verifies for no other
        if domain is not Domain.ENTRY:
            assert not identity.peer_id.verify(domain, b"message", signature)
    assert not identity.peer_id.verify(Domain.ENTRY, b"message", b"short")
    assert len({d.value for d in Domain}) == len(Domain)


def test_every_signature_is_checked_in_one_place() -> None:
    """crypto_sign_open is called by signatures.open_signed and nowhere else."""
    from pathlib import Path

    import crdt_mesh

    root = Path(crdt_mesh.__file__).parent
    callers = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py") if "crypto_sign_open(" in p.read_text()
    )
    assert callers == ["signatures.py"]
