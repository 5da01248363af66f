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
Evidence is summed in fixed point (:class:`RecordTable`), so equal records give
equal floats on every replica, whatever order they arrived in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

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
        if len(given) > len(parties) - 1:
            ignored.append(
                f"ratings by {author.short} on {task}: more ratings than other parties"
                f" ({len(given)})"
            )
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


#: Evidence is summed in fixed point (units of 2**-32): integer sums do not depend on
#: the order they are made in, so every replica gets the same floats from the same
#: records, in any order, with no sort.
_ONE = float(1 << 32)
_COLUMNS = ("completion", "quality", "timeliness", "collaboration")
_COLUMN_OF = {
    "task_completion": "completion",
    "response_quality": "quality",
    "timeliness": "timeliness",
    "collaboration": "collaboration",
}


class RecordTable:
    """Records as columns (numpy), added as they arrive; scores from them at any time.

    Each record's evidence ``w * v`` and ``w * (1 - v)`` is rounded to a multiple of
    2**-32 and summed as integers, so the sums are exact whatever the order.
    """

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self.peers: list[PeerId] = []
        self._index: dict[PeerId, int] = {}
        self.domains: list[str] = []
        self._domain_index: dict[str, int] = {}
        self._rows: dict[str, list[Any]] = {
            "outcome": [],
            "rater": [],
            "subject": [],
            "at": [],
            "success": [],
            "penalty": [],
            "strength": [],
            **{name: [] for name in _COLUMNS},
        }
        self._special = 0  # rows that are penalties or weigh other than 1
        self._domain_rows: list[int] = []
        self._domain_of: list[int] = []
        self._arrays: dict[str, Any] | None = None  # the rows converted so far
        self._converted = (0, 0)  # (rows, domain rows) in the arrays
        self.add(records)
        if len(self):
            self._columns()  # the first batch, converted at once

    def __len__(self) -> int:
        return len(self._rows["at"])

    def _peer(self, peer: PeerId) -> int:
        found = self._index.get(peer)
        if found is None:
            found = self._index[peer] = len(self.peers)
            self.peers.append(peer)
        return found

    def add(self, records: Iterable[Record]) -> None:
        rows = self._rows
        nan = math.nan
        for record in records:
            row = len(rows["at"])
            outcome = record.kind == "outcome"
            penalty = record.kind == "penalty"
            rows["outcome"].append(outcome)
            rows["penalty"].append(penalty)
            rows["strength"].append(record.strength)
            self._special += penalty or record.strength != 1.0
            rows["rater"].append(self._peer(record.rater))
            rows["subject"].append(self._peer(record.subject))
            rows["at"].append(record.at)
            rows["success"].append(record.outcome is Outcome.SUCCESS)
            if penalty:  # a failure in every component
                for name in _COLUMNS:
                    rows[name].append(0.0)
                continue
            done = record.outcome.value_in_unit if record.outcome is not None else nan
            rows["completion"].append(done)
            rows["quality"].append(nan if record.quality is None else record.quality)
            rows["timeliness"].append(nan if record.timeliness is None else record.timeliness)
            given = record.collaboration
            rows["collaboration"].append(nan if given is None else given)
            for domain in record.domains:
                index = self._domain_index.get(domain)
                if index is None:
                    index = self._domain_index[domain] = len(self.domains)
                    self.domains.append(domain)
                self._domain_rows.append(row)
                self._domain_of.append(index)

    def _columns(self) -> dict[str, Any]:
        """The rows as numpy arrays; the rows added since the last call are converted
        and appended (a new record costs its own conversion, not the table's)."""
        done, done_domains = self._converted
        if self._arrays is not None and (done, done_domains) == (
            len(self),
            len(self._domain_rows),
        ):
            return self._arrays
        rows = self._rows
        types = {
            "outcome": bool,
            "success": bool,
            "penalty": bool,
            "rater": np.int64,
            "subject": np.int64,
        }
        fresh = {
            name: np.asarray(rows[name][done:], dtype=types.get(name, np.float64)) for name in rows
        }
        fresh["domain_rows"] = np.asarray(self._domain_rows[done_domains:], dtype=np.int64)
        fresh["domain_of"] = np.asarray(self._domain_of[done_domains:], dtype=np.int64)
        if self._arrays is not None:
            fresh = {name: np.concatenate([self._arrays[name], fresh[name]]) for name in fresh}
        self._arrays = fresh
        self._converted = (len(self), len(self._domain_rows))
        return fresh

    def scores(
        self,
        now: float,
        half_life: float,
        weights: Mapping[PeerId, float] | None = None,
        equivocators: Iterable[PeerId] = (),
        until: float | None = None,
    ) -> dict[PeerId, ReputationScore]:
        """Each subject's score at ``now`` (see :func:`scores`), from the records stamped
        at most ``until`` (default: ``now`` plus :data:`FUTURE_SKEW`)."""
        forked = set(equivocators)
        if not len(self):
            return {peer: ReputationScore(overall=0.0, equivocated=True) for peer in forked}
        c = self._columns()
        n = len(self.peers)
        trust = np.ones(n)
        if weights is not None:
            trust = np.array([weights.get(peer, 0.0) for peer in self.peers], dtype=np.float64)
        counted = c["at"] <= (now + FUTURE_SKEW if until is None else until)
        trusted = trust[c["rater"]]
        if self._special:  # penalties weigh their strength, whoever's trust
            trusted = np.where(c["penalty"], 1.0, trusted) * c["strength"]
        weight = np.exp2(-np.maximum(now - c["at"], 0.0) / half_life) * trusted
        weight = np.where(counted, weight, 0.0)
        subject = c["subject"]
        rated = np.zeros(n, dtype=bool)
        rated[subject[counted]] = True
        expectation: dict[str, Any] = {}
        for name in _COLUMNS:
            value = c[name]
            given = counted & ~np.isnan(value)
            r, s = _sums(subject[given], weight[given], value[given], n)
            expectation[name] = (r + 1.0) / (r + s + 2.0)
        outcomes = counted & c["outcome"]
        tasks = np.bincount(subject[outcomes], minlength=n)
        successes = np.bincount(subject[outcomes & c["success"]], minlength=n)
        evidence = np.zeros(n, dtype=np.int64)
        np.add.at(evidence, subject[outcomes], np.rint(weight[outcomes] * _ONE).astype(np.int64))
        evidence_weight = evidence / _ONE
        expertise = self._expertise(c, counted, weight, n)
        overall = sum(
            OVERALL_WEIGHTS[name] * expectation[_COLUMN_OF[name]] for name in OVERALL_WEIGHTS
        )
        out: dict[PeerId, ReputationScore] = {}
        for i in np.flatnonzero(rated).tolist():
            peer = self.peers[i]
            out[peer] = ReputationScore(
                overall=0.0 if peer in forked else min(1.0, float(overall[i])),
                task_completion=float(expectation["completion"][i]),
                response_quality=float(expectation["quality"][i]),
                timeliness=float(expectation["timeliness"][i]),
                collaboration=float(expectation["collaboration"][i]),
                expertise=expertise.get(i, {}),
                tasks=int(tasks[i]),
                success_rate=float(successes[i] / tasks[i]) if tasks[i] else 0.0,
                confidence=float(evidence_weight[i] / (evidence_weight[i] + _EVIDENCE)),
                equivocated=peer in forked,
            )
        for peer in forked - set(out):
            out[peer] = ReputationScore(overall=0.0, equivocated=True)
        return out

    def digest(self, until: float) -> int:
        """A fingerprint of the records stamped at most ``until``: of what scores read of
        them (times, raters, subjects, values, strengths), summed over rows so that
        it does not depend on their order. For a cache: it tells whether they
        changed, nothing more."""
        if not len(self):
            return 0
        c = self._columns()
        keys = np.fromiter(
            (int.from_bytes(p.key[:8], "little") for p in self.peers),
            dtype=np.uint64,
            count=len(self.peers),
        )
        rows = c["at"] <= until
        mixed = np.zeros(int(rows.sum()), dtype=np.uint64)
        parts = [
            c["at"][rows].view(np.uint64),
            keys[c["rater"][rows]],
            keys[c["subject"][rows]],
            c["strength"][rows].view(np.uint64),
            c["penalty"][rows].astype(np.uint64),
            *(c[name][rows].view(np.uint64) for name in _COLUMNS),
        ]
        with np.errstate(over="ignore"):
            for salt, part in enumerate(parts, start=1):
                mixed = _fmix(mixed * np.uint64(31) + part + np.uint64(salt))
            return int(mixed.sum())

    def trust_edges(self, until: float | None = None) -> tuple[list[PeerId], Any, Any, Any]:
        """EigenTrust's local trust as arrays: (peers in key order, raters, subjects,
        values), raters and subjects indexing those peers; each pair once, its value
        positive (see :func:`local_trust`); from the records stamped at most ``until``
        (default: all). Penalties are not a rater's word: they do not count."""
        ordered = sorted(self.peers, key=lambda p: p.key)
        if not len(self):
            empty = np.zeros(0, dtype=np.int64)
            return ordered, empty, empty, np.zeros(0)
        rank = np.empty(len(self.peers), dtype=np.int64)
        rank[[self._index[p] for p in ordered]] = np.arange(len(ordered))
        c = self._columns()
        said = ~c["penalty"] if until is None else ~c["penalty"] & (c["at"] <= until)
        value = np.where(c["outcome"], c["completion"], c["collaboration"])[said]
        n = len(self.peers)
        pairs = rank[c["rater"][said]] * n + rank[c["subject"][said]]
        cells, where = np.unique(pairs, return_inverse=True)  # (sorted: one order)
        sums = np.zeros(len(cells), dtype=np.int64)
        np.add.at(sums, where, np.rint((2.0 * value - 1.0) * _ONE).astype(np.int64))
        keep = sums > 0
        raters, subjects = np.divmod(cells[keep], n)
        return ordered, raters, subjects, sums[keep] / _ONE

    def local_trust(self) -> dict[tuple[PeerId, PeerId], float]:
        """EigenTrust's local trust (see :func:`local_trust`), from the columns."""
        peers, raters, subjects, values = self.trust_edges()
        return {
            (peers[i], peers[j]): v
            for i, j, v in zip(raters.tolist(), subjects.tolist(), values.tolist(), strict=True)
        }

    def _expertise(
        self, c: Mapping[str, Any], counted: Any, weight: Any, n: int
    ) -> dict[int, dict[str, float]]:
        rows = c["domain_rows"]
        if not len(rows):
            return {}
        keep = counted[rows]
        rows, domains = rows[keep], c["domain_of"][keep]
        cells = c["subject"][rows] * len(self.domains) + domains
        r, s = _sums(cells, weight[rows], c["completion"][rows], n * len(self.domains))
        out: dict[int, dict[str, float]] = {}
        for cell in np.unique(cells).tolist():
            subject, domain = divmod(cell, len(self.domains))
            out.setdefault(subject, {})[self.domains[domain]] = float(
                (r[cell] + 1.0) / (r[cell] + s[cell] + 2.0)
            )
        return {i: dict(sorted(d.items())) for i, d in out.items()}


def _fmix(h: Any) -> Any:
    """MurmurHash3's 64-bit finaliser, on a numpy array (wrapping)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _sums(index: Any, weight: Any, value: Any, size: int) -> tuple[Any, Any]:
    """Positive and negative evidence per index, summed exactly in fixed point."""
    r = np.zeros(size, dtype=np.int64)
    s = np.zeros(size, dtype=np.int64)
    np.add.at(r, index, np.rint(weight * value * _ONE).astype(np.int64))
    np.add.at(s, index, np.rint(weight * (1.0 - value) * _ONE).astype(np.int64))
    return r / _ONE, s / _ONE


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
    return RecordTable(records).scores(now, half_life, weights, equivocators)


def local_trust(records: Iterable[Record]) -> dict[tuple[PeerId, PeerId], float]:
    """EigenTrust's local trust ``s_ij``: what rater ``i``'s records say of ``j`` (each
    record counts its value less its shortfall: 1 for a full success, -1 for a
    failure), kept when positive."""
    return RecordTable(records).local_trust()
