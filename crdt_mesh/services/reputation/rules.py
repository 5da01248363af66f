"""Reputation's pure rules: which records count, and the scores they give. No replica,
no clock: scores are a function of the records and a time.

**Which records count.** An ``outcome`` counts when its author is the decider of
an awarded task, and it is about the winner (one per task: it is one key of the
decider's section). A rating counts when its author and its subject are both
parties of an awarded task (its announcer, its decider, its winner) and differ.
Anything else is ignored, with the reason, as the task view lists what it ignores.

**Scores** (the Beta reputation system, Jøsang and Ismail 2002): for each
component, positive evidence ``r`` and negative ``s`` are summed over the records
about a peer, each weighted by ``0.5 ** (age / half_life)`` (exponential
forgetting) and by its rater's trust; the score is ``(r + 1) / (r + s + 2)``. An
outcome gives evidence for ``task_completion`` (success 1, partial 0.5, failure
0), and, when given, ``response_quality`` and ``timeliness`` (a value ``q`` adds
``q`` to ``r`` and ``1 - q`` to ``s``); a rating gives ``collaboration``; each
capability the task asked for gets the outcome as ``expertise`` in that domain.
Records are summed in one order (their key), so equal records give equal floats
on every replica, whatever order they arrived in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...identity import PeerId
from .model import Outcome, Record, ReputationScore

#: A record stamped later than this past the time scores are computed for is not
#: counted yet (a rater cannot make its record weigh in full for longer).
FUTURE_SKEW = 60.0
#: How much each component weighs in ``overall`` (uptime, a local observation, none).
OVERALL_WEIGHTS = {
    "task_completion": 0.35,
    "response_quality": 0.3,
    "timeliness": 0.15,
    "collaboration": 0.2,
}
_EVIDENCE = 2.0  # confidence = weight / (weight + _EVIDENCE)


def _unit(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _time(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def task_records(
    task: str,
    *,
    announcer: PeerId,
    decider: PeerId,
    winner: PeerId | None,
    capabilities: Sequence[str],
    outcomes: Mapping[PeerId, Any],
    ratings: Mapping[PeerId, Any],
) -> tuple[list[Record], list[str]]:
    """The records written on one task that count, and a reason for each that does not.

    ``outcomes`` and ``ratings``: what each participant wrote under those keys.
    """
    records: list[Record] = []
    ignored: list[str] = []
    for author, value in sorted(outcomes.items(), key=lambda item: item[0].key):
        if author != decider:
            ignored.append(f"outcome by {author.short} on {task}: only {decider.short} decides")
        elif winner is None:
            ignored.append(f"outcome by {author.short} on {task}: the task was never awarded")
        else:
            record = _outcome(task, author, winner, value, capabilities)
            if record is None:
                ignored.append(f"outcome by {author.short} on {task}: malformed")
            else:
                records.append(record)
    parties = {announcer, decider} | ({winner} if winner is not None else set())
    for author, given in sorted(ratings.items(), key=lambda item: item[0].key):
        if winner is None or author not in parties:
            ignored.append(f"ratings by {author.short} on {task}: not a party of an awarded task")
            continue
        if not isinstance(given, Mapping):
            ignored.append(f"ratings by {author.short} on {task}: malformed")
            continue
        for subject_text, value in sorted(given.items(), key=lambda item: str(item[0])):
            try:
                subject = PeerId.parse(str(subject_text))
            except ValueError:
                ignored.append(f"rating by {author.short} on {task}: not a peer: {subject_text!r}")
                continue
            if subject not in parties or subject == author:
                ignored.append(
                    f"rating by {author.short} of {subject.short} on {task}: not another party"
                )
                continue
            collaboration = (
                _unit(value.get("collaboration")) if isinstance(value, Mapping) else None
            )
            at = _time(value.get("at")) if isinstance(value, Mapping) else None
            if collaboration is None or at is None:
                ignored.append(f"rating by {author.short} of {subject.short} on {task}: malformed")
                continue
            records.append(Record("rating", task, author, subject, at, collaboration=collaboration))
    return records, ignored


def _outcome(
    task: str, author: PeerId, winner: PeerId, value: Any, capabilities: Sequence[str]
) -> Record | None:
    if not isinstance(value, Mapping):
        return None
    try:
        outcome = Outcome(str(value.get("outcome")))
    except ValueError:
        return None
    at = _time(value.get("at"))
    quality, timeliness = value.get("quality"), value.get("timeliness")
    if at is None or any(v is not None and _unit(v) is None for v in (quality, timeliness)):
        return None
    return Record(
        "outcome",
        task,
        author,
        winner,
        at,
        outcome=outcome,
        quality=_unit(quality),
        timeliness=_unit(timeliness),
        domains=tuple(sorted(set(capabilities))),
    )


# -- scores ---------------------------------------------------------------------------------


class _Evidence:
    __slots__ = ("r", "s")

    def __init__(self) -> None:
        self.r = 0.0
        self.s = 0.0

    def add(self, value: float, weight: float) -> None:
        self.r += weight * value
        self.s += weight * (1.0 - value)

    @property
    def expectation(self) -> float:
        return (self.r + 1.0) / (self.r + self.s + 2.0)


def decay(age: float, half_life: float) -> float:
    """The weight of a record ``age`` seconds old (1 when new, 0.5 after a half-life)."""
    return float(0.5 ** (max(age, 0.0) / half_life))


def scores(
    records: Iterable[Record],
    now: float,
    half_life: float,
    weights: Mapping[PeerId, float] | None = None,
    equivocators: Iterable[PeerId] = (),
) -> dict[PeerId, ReputationScore]:
    """Each subject's score at time ``now`` from ``records`` (each weighted by its
    rater's entry in ``weights``, 1 if none given; a rater absent from it weighs 0).
    ``equivocators``: peers proven to have forked a feed (overall 0)."""
    by_subject: dict[PeerId, dict[str, _Evidence]] = {}
    domains: dict[PeerId, dict[str, _Evidence]] = {}
    counts: dict[PeerId, list[float]] = {}  # tasks, successes, evidence weight
    for record in sorted(records, key=lambda r: r.key):
        if record.at > now + FUTURE_SKEW:
            continue  # not yet
        trust = 1.0 if weights is None else weights.get(record.rater, 0.0)
        weight = decay(now - record.at, half_life) * trust
        evidence = by_subject.setdefault(record.subject, {})
        if record.kind == "rating":
            assert record.collaboration is not None
            evidence.setdefault("collaboration", _Evidence()).add(record.collaboration, weight)
            continue
        assert record.outcome is not None
        done = record.outcome.value_in_unit
        evidence.setdefault("task_completion", _Evidence()).add(done, weight)
        if record.quality is not None:
            evidence.setdefault("response_quality", _Evidence()).add(record.quality, weight)
        if record.timeliness is not None:
            evidence.setdefault("timeliness", _Evidence()).add(record.timeliness, weight)
        for domain in record.domains:
            domains.setdefault(record.subject, {}).setdefault(domain, _Evidence()).add(done, weight)
        count = counts.setdefault(record.subject, [0.0, 0.0, 0.0])
        count[0] += 1
        count[1] += record.outcome is Outcome.SUCCESS
        count[2] += weight
    forked = set(equivocators)
    out = {}
    for subject, evidence in by_subject.items():
        values = {name: e.expectation for name, e in evidence.items()}
        components = {name: values.get(name, 0.5) for name in OVERALL_WEIGHTS}
        overall = sum(OVERALL_WEIGHTS[name] * v for name, v in components.items())
        tasks, successes, weight = counts.get(subject, [0.0, 0.0, 0.0])
        out[subject] = ReputationScore(
            overall=0.0 if subject in forked else min(1.0, overall),
            expertise={d: e.expectation for d, e in sorted(domains.get(subject, {}).items())},
            tasks=int(tasks),
            success_rate=successes / tasks if tasks else 0.0,
            confidence=weight / (weight + _EVIDENCE),
            equivocated=subject in forked,
            **components,
        )
    for subject in forked - set(out):
        out[subject] = ReputationScore(overall=0.0, equivocated=True)
    return out


def local_trust(records: Iterable[Record]) -> dict[tuple[PeerId, PeerId], float]:
    """EigenTrust's local trust ``s_ij``: what rater ``i``'s records say of ``j`` (each
    record counts its value less its shortfall: 1 for a full success, -1 for a
    failure), kept when positive."""
    sums: dict[tuple[PeerId, PeerId], float] = {}
    for record in sorted(records, key=lambda r: r.key):
        if record.kind == "rating":
            assert record.collaboration is not None
            value = record.collaboration
        else:
            assert record.outcome is not None
            value = record.outcome.value_in_unit
        pair = (record.rater, record.subject)
        sums[pair] = sums.get(pair, 0.0) + 2.0 * value - 1.0
    return {pair: value for pair, value in sums.items() if value > 0}
