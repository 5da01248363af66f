"""Challenges and disputes, the pure rules: which challenges count, who sits on a
jury, which votes count, and the verdict. No replica, no clock: a function of the
entries and a time, so every replica holding the same entries decides alike.

**Filing.** A party of an awarded task (its announcer, decider or winner) may
challenge a record on that task that counts and that it did not write, within
``challenge_window`` of the record's time, once (one key in its own section of
the task). While the challenge is open, the record does not count.

**The jury.** The peers eligible at the challenge's *cut* (the start of the
``jury_cut`` period, an hour by default, it was filed in): ``overall`` at least
``juror_min`` with some evidence (confidence at least :data:`JUROR_CONFIDENCE`),
computed from the records stamped before the cut (challenges aside, with
EigenTrust if pre-trusted peers are set), not proven to equivocate, and not party
to the task. They are ordered by a hash of the challenge's id and their key; the
first ``jury_size`` sit. The id hashes the record (task, kind, author, subject)
and the challenger: no one chooses it, so no one can grind for a friendly jury.

**Votes**, commit then reveal (:mod:`crdt_mesh.commitment`, as sealed bids): a
juror commits from filing to ``reveal_from`` and reveals from then to the
deadline; the opening binds the juror and the challenge, so a copied commitment
opens for no one else.

**The verdict**, at the deadline: with at least half the jury plus one revealed,
the challenge is upheld if more jurors uphold it than reject it (a tie keeps the
record); with fewer, or with no juror eligible, it lapses. Upheld: the record is
void and its author gets a penalty; rejected: the challenger does; lapsed: the
record counts again and no one is penalised.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import cbor2

from ...commitment import Purpose, opening_matches
from ...identity import PeerId
from .model import (
    Challenge,
    ChallengeStatus,
    Record,
    ReputationScore,
    ReputationSettings,
    Vote,
)
from .rules import FUTURE_SKEW

_CHALLENGE_DOMAIN = b"crdt_mesh/challenge/v1\x00"
#: The evidence a juror needs beside its score (about one recent full outcome).
JUROR_CONFIDENCE = 0.3
#: The longest reason, in characters, and the largest evidence, in encoded bytes.
MAX_REASON = 1000
MAX_EVIDENCE = 4096


def challenge_id(record: Record, challenger: PeerId) -> str:
    """The id of ``challenger``'s challenge of ``record``: a hash no one chooses."""
    bound = [record.task, record.kind, record.rater.key, record.subject.key, challenger.key]
    digest = hashlib.blake2b(_CHALLENGE_DOMAIN + cbor2.dumps(bound, canonical=True))
    return digest.hexdigest()[:32]


def slot(record: Record) -> str:
    """How a challenge names its record in the challenger's section of the task."""
    return f"{record.kind}:{record.rater}:{record.subject}"


def cut_of(filed: float, period: float) -> float:
    """The cut a challenge filed at ``filed`` draws its jury at."""
    return math.floor(filed / period) * period


def filed_challenges(
    task: str,
    parties: Iterable[PeerId],
    records: Sequence[Record],
    given: Mapping[PeerId, Any],
    settings: ReputationSettings,
) -> tuple[list[Challenge], list[str]]:
    """The challenges written on one task that count (open, no jury yet), and a reason
    for each that does not. ``records``: the records on this task that count;
    ``given``: what each participant wrote under ``challenges``."""
    found: list[Challenge] = []
    ignored: list[str] = []
    party = set(parties)
    by_slot = {slot(r): r for r in records}
    for author, value in sorted(given.items(), key=lambda item: item[0].key):
        who = f"challenges by {author.short} on {task}"
        if author not in party:
            ignored.append(f"{who}: not a party of the task")
            continue
        if not isinstance(value, Mapping):
            ignored.append(f"{who}: malformed")
            continue
        if len(value) > len(by_slot):
            ignored.append(f"{who}: more challenges than records ({len(value)})")
            continue
        for name, body in sorted(value.items(), key=lambda item: str(item[0])):
            record = by_slot.get(str(name))
            if record is None:
                ignored.append(f"{who}: {str(name)[:80]!r} names no record that counts")
                continue
            if record.rater == author:
                ignored.append(f"{who}: challenges its own record")
                continue
            challenge = _challenge(record, author, body, settings)
            if challenge is None:
                ignored.append(f"{who}: malformed, or filed outside the window")
                continue
            found.append(challenge)
    return found, ignored


def _challenge(
    record: Record, author: PeerId, body: Any, settings: ReputationSettings
) -> Challenge | None:
    if not isinstance(body, Mapping):
        return None
    at, reason, evidence = body.get("at"), body.get("reason"), body.get("evidence")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return None
    if not record.at <= at <= record.at + settings.challenge_window:
        return None
    if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON:
        return None
    if evidence_size(evidence) is None:
        return None
    filed = float(at)
    return Challenge(
        id=challenge_id(record, author),
        record=record,
        challenger=author,
        reason=reason,
        evidence=evidence,
        filed=filed,
        reveal_from=filed + settings.commit_period,
        deadline=filed + settings.commit_period + settings.reveal_period,
    )


def evidence_size(value: Any) -> int | None:
    """The encoded size of plain evidence (str, numbers, bools, None, lists, maps with
    str keys) of at most :data:`MAX_EVIDENCE` bytes; None for anything else."""
    if not _plain(value, 0):
        return None
    size = len(cbor2.dumps(value, canonical=True))
    return size if size <= MAX_EVIDENCE else None


def _plain(value: Any, depth: int) -> bool:
    if depth > 16:
        return False
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def eligible(
    scores: Mapping[PeerId, ReputationScore], settings: ReputationSettings
) -> list[PeerId]:
    """The peers that may sit on a jury, by their scores at a cut (in key order)."""
    return sorted(
        (
            peer
            for peer, score in scores.items()
            if not score.equivocated
            and score.overall >= settings.juror_min
            and score.confidence >= JUROR_CONFIDENCE
        ),
        key=lambda p: p.key,
    )


def draw(challenge: str, pool: Iterable[PeerId], size: int) -> tuple[PeerId, ...]:
    """The jury of ``challenge``: the ``size`` peers of ``pool`` first by a hash of the
    challenge's id and their key."""
    seed = bytes.fromhex(challenge)

    def rank(peer: PeerId) -> bytes:
        return hashlib.blake2b(seed + peer.key, digest_size=16).digest()

    return tuple(sorted(set(pool), key=rank)[:size])


def vote_value(vote: Vote) -> bytes:
    return vote.value.encode()


def tally(
    challenge: Challenge, jury: tuple[PeerId, ...], votes: Mapping[PeerId, Any], now: float
) -> Challenge:
    """``challenge`` at ``now`` with its jury, its counted votes and its status.

    ``votes``: what each participant of the task wrote under ``votes`` (only the
    jurors' entries are read: a juror's is ``{challenge id: {"commitment", "at",
    "opening", "revealed"}}``).
    """
    uphold = reject = 0
    for juror in jury:
        given = votes.get(juror)
        entry = given.get(challenge.id) if isinstance(given, Mapping) else None
        vote = _counted_vote(challenge, juror, entry, now)
        uphold += vote is Vote.UPHOLD
        reject += vote is Vote.REJECT
    status = ChallengeStatus.OPEN
    if not jury:
        status = ChallengeStatus.LAPSED
    elif now >= challenge.deadline:
        if uphold + reject < len(jury) // 2 + 1:
            status = ChallengeStatus.LAPSED
        else:
            status = ChallengeStatus.UPHELD if uphold > reject else ChallengeStatus.REJECTED
    return replace(challenge, jury=jury, status=status, uphold=uphold, reject=reject)


def _counted_vote(challenge: Challenge, juror: PeerId, entry: Any, now: float) -> Vote | None:
    """A juror's vote if it counts: committed in time, revealed in time, the opening
    matching the commitment made for this juror and this challenge."""
    if not isinstance(entry, Mapping):
        return None
    committed, revealed = _time(entry.get("at")), _time(entry.get("revealed"))
    if committed is None or revealed is None:
        return None
    if not challenge.filed <= committed <= challenge.reveal_from:
        return None
    if not challenge.reveal_from <= revealed <= challenge.deadline or revealed > now + FUTURE_SKEW:
        return None
    opening, committed_to = entry.get("opening"), entry.get("commitment")
    if not isinstance(opening, list | tuple) or len(opening) != 2:
        return None
    if not opening_matches(Purpose.JURY_VOTE, challenge.id, juror, opening, committed_to):
        return None
    try:
        return Vote(bytes.fromhex(str(opening[0])).decode())
    except (ValueError, UnicodeDecodeError):
        return None


def _time(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def penalties(challenge: Challenge, strength: float) -> list[Record]:
    """The penalty a decided challenge records: against the record's author when
    upheld, against the challenger when rejected, at the deadline."""
    if challenge.status is ChallengeStatus.UPHELD:
        penalised = challenge.record.rater
    elif challenge.status is ChallengeStatus.REJECTED:
        penalised = challenge.challenger
    else:
        return []
    return [
        Record(
            "penalty",
            f"challenge:{challenge.id}",
            challenge.challenger,
            penalised,
            challenge.deadline,
            strength=strength,
        )
    ]
