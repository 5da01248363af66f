"""``mesh.reputation``: reputation for a running mesh, the async shell over the board.

Off unless ``P2P_ENABLED`` and ``P2P_REPUTATION`` are on (or the mesh has no
config). ``p2p:reputation:updated`` fires on each replica where a peer's score
changes (records arriving, or the clock: a record's weight fades);
``p2p:reputation:challenged`` when a challenge first reaches it, and
``p2p:reputation:decided`` when one is decided or lapses. Every interval, uptime
is sampled from this replica's failure detector, and this peer reveals the jury
votes it committed once their reveal period opens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from ...config import Feature
from ...identity import PeerId
from ...ledger import Entry
from ...metrics import Kind, Metrics
from ...runtime.host import Host
from .board import ReputationBoard, TaskLedger
from .model import (
    Challenge,
    ChallengeStatus,
    Outcome,
    Record,
    ReputationError,
    ReputationEvents,
    ReputationScore,
    ReputationSettings,
    ReputationUpdate,
)

log = logging.getLogger(__name__)

#: How much one sample of the failure detector moves a peer's observed uptime.
UPTIME_STEP = 0.05


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A peer ``recommend`` proposes, and its score."""

    peer: PeerId
    score: ReputationScore


class ReputationService:
    """``mesh.reputation``: record outcomes and ratings, read scores, recommend peers.

    Args:
        host: the runtime, as services see it.
        tasks: the task board records are written on (and read from).
        capabilities: what a peer declared it can do (membership's records).
        peers: the peers membership knows (``recommend`` chooses among them).
        alive: what this replica's failure detector thinks of a peer (True, False, or
            None: not watching it).
        settings: half-life, pre-trusted peers, EigenTrust's teleport.
    """

    def __init__(
        self,
        host: Host,
        tasks: TaskLedger,
        *,
        capabilities: Callable[[PeerId], Sequence[str]] = lambda peer: (),
        peers: Callable[[], Iterable[PeerId]] = lambda: (),
        alive: Callable[[PeerId], bool | None] = lambda peer: None,
        settings: ReputationSettings | None = None,
    ) -> None:
        self._host = host
        host.events.register(*ReputationEvents)
        self.board = ReputationBoard(tasks, settings)
        self._tasks = tasks
        self._capabilities, self._peers, self._alive = capabilities, peers, alive
        self._uptime: dict[PeerId, float] = {}
        self._last: dict[PeerId, ReputationScore] = {}
        self._heard: dict[str, bool] = {}  # challenge id -> decided, as last announced
        self._pending = False
        self._running = False
        self._enabled = host.config is None or host.config.enables(Feature.REPUTATION)
        self._unsubscribe = host.replica.on_commit(self._on_commit) if self._enabled else None

    def _require(self) -> None:
        if self._host.config is not None:
            self._host.config.require(Feature.REPUTATION)

    def start(self) -> None:
        """Sample uptime and refresh scores every interval (the root calls it)."""
        if self._running or not self._enabled or not self._host.running:
            return
        self._running = True
        self._host.spawn(self._loop)

    async def _loop(self) -> None:
        while True:
            await anyio.sleep(self._host.interval)
            for peer in self._peers():
                seen = self._alive(peer)
                if seen is not None:
                    before = self._uptime.get(peer, 0.5)
                    self._uptime[peer] = before + UPTIME_STEP * (float(seen) - before)
            for due in self.board.reveals_due():
                try:
                    self.board.reveal(due)
                except ReputationError as exc:  # (the period ended meanwhile): not fatal
                    log.warning("could not reveal the vote on %s: %s", due.id, exc)
            self._refresh()

    # -- commands ----------------------------------------------------------------------------

    async def record_outcome(
        self,
        task: Any,
        outcome: Outcome | str,
        quality: float | None = None,
        timeliness: float | None = None,
    ) -> Record:
        """See :meth:`ReputationBoard.record_outcome`."""
        self._require()
        return self.board.record_outcome(task, outcome, quality, timeliness)

    async def rate(self, peer: PeerId, task: Any, collaboration: float) -> Record:
        """See :meth:`ReputationBoard.rate`."""
        self._require()
        return self.board.rate(peer, task, collaboration)

    async def challenge(self, record: Record, reason: str, evidence: Any = None) -> Challenge:
        """See :meth:`ReputationBoard.challenge`."""
        self._require()
        return self.board.challenge(record, reason, evidence)

    async def vote(self, challenge: Challenge | str, uphold: bool) -> None:
        """Commit this juror's vote (see :meth:`ReputationBoard.vote`); the service
        reveals it once the reveal period opens."""
        self._require()
        self.board.vote(challenge, uphold)

    # -- views -------------------------------------------------------------------------------

    def challenges(self) -> list[Challenge]:
        """Every challenge this replica holds, with its jury, votes and status now."""
        self._require()
        return self.board.challenges()

    def records(self) -> list[Record]:
        """Every record this replica holds that counts (challenges aside)."""
        self._require()
        return self.board.records()

    def get(self, peer: PeerId) -> ReputationScore:
        """``peer``'s score now, with the uptime this replica observed."""
        self._require()
        return self._with_uptime(peer, self.board.get(peer))

    def score(self, peer: PeerId, at: float) -> float:
        """See :meth:`ReputationBoard.score` (task selection pins what it used)."""
        return self.board.score(peer, at)

    def evidence(self, peers: Sequence[PeerId], at: float) -> dict[str, Any]:
        """See :meth:`ReputationBoard.evidence`."""
        return self.board.evidence(peers, at)

    def check(self, evidence: Any, peer: PeerId, score: float) -> str | None:
        """See :meth:`ReputationBoard.check`."""
        return self.board.check(evidence, peer, score)

    def overall(self, peer: PeerId) -> float:
        """``peer``'s overall score: what task selection's ``reputation`` criterion uses."""
        return self.board.get(peer).overall

    def _with_uptime(self, peer: PeerId, score: ReputationScore) -> ReputationScore:
        from dataclasses import replace

        return replace(score, uptime=self._uptime.get(peer, 0.5))

    def recommend(
        self, capabilities: Iterable[str] = (), min_reputation: float = 0.0, limit: int = 10
    ) -> list[Recommendation]:
        """Peers that declared every one of ``capabilities``, with ``overall`` at least
        ``min_reputation``, best first (ties: more confidence, then the peer's key).

        Raises:
            ReputationError: a malformed argument.
        """
        self._require()
        if isinstance(capabilities, str):
            raise ReputationError("capabilities: a list of names, not one str")
        wanted = set(capabilities)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ReputationError(f"limit: a whole number >= 1, not {limit!r}")
        if isinstance(min_reputation, bool) or not isinstance(min_reputation, int | float):
            raise ReputationError(f"min_reputation: a number in [0, 1], not {min_reputation!r}")
        scores = self.board.scores()
        found = []
        for peer in set(self._peers()):
            if wanted <= set(self._capabilities(peer)):
                score = self._with_uptime(peer, scores.get(peer, ReputationScore()))
                if score.overall >= min_reputation:
                    found.append(Recommendation(peer, score))
        found.sort(key=lambda r: (-r.score.overall, -r.score.confidence, r.peer.key))
        return found[:limit]

    # -- events ------------------------------------------------------------------------------

    def _on_commit(self, entries: list[Entry]) -> None:
        if self._pending or not self._host.running:
            return
        if any(self._tasks.concerns(e.document) for e in entries):
            self._pending = True
            self._host.spawn(self._refresh_soon)

    async def _refresh_soon(self) -> None:
        self._pending = False
        self._refresh()

    def _refresh(self) -> None:
        """Fire ``p2p:reputation:updated`` for each peer whose score changed by at least
        :data:`NOTICEABLE` in some component since it last fired (time alone moves every
        score a little: that is not news)."""
        current = self.board.scores()
        for peer in sorted(current.keys() | self._last.keys(), key=lambda p: p.key):
            score = current.get(peer, ReputationScore())
            before = self._last.get(peer)
            if before is None or _moved(before, score):
                update = ReputationUpdate(peer, self._with_uptime(peer, score))
                self._host.events.emit(ReputationEvents.UPDATED, update)
                self._last[peer] = score
        for peer in self._last.keys() - current.keys():
            del self._last[peer]
        for challenge in self.board.challenges():
            heard = self._heard.get(challenge.id)
            if heard is None:
                self._host.events.emit(ReputationEvents.CHALLENGED, challenge)
            if challenge.decided and not heard:
                self._host.events.emit(ReputationEvents.DECIDED, challenge)
            self._heard[challenge.id] = challenge.decided

    def declare_metrics(self, metrics: Metrics) -> None:
        """Declare reputation metrics in ``metrics`` (read from the board when collected)."""

        def on() -> bool:
            return self._enabled and not self._host.replica.closed

        def challenges() -> list[tuple[tuple[str], float]]:
            counts = dict.fromkeys(ChallengeStatus, 0)
            for challenge in self.challenges() if on() else []:
                counts[challenge.status] += 1
            return [((status.value,), n) for status, n in counts.items()]

        metrics.observe(
            "crdt_mesh_reputation_records",
            "Reputation records this replica holds that count (challenged ones aside).",
            Kind.GAUGE,
            lambda: len(self.records()) if on() else 0,
        )
        metrics.observe(
            "crdt_mesh_reputation_challenges",
            "Challenges of records this replica holds, by status.",
            Kind.GAUGE,
            challenges,
            ("status",),
        )

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()


#: How much a component must move for ``p2p:reputation:updated`` to fire again.
NOTICEABLE = 0.005


def _moved(before: ReputationScore, after: ReputationScore) -> bool:
    if (before.tasks, before.equivocated, before.expertise.keys()) != (
        after.tasks,
        after.equivocated,
        after.expertise.keys(),
    ):
        return True
    pairs = [
        (before.overall, after.overall),
        (before.task_completion, after.task_completion),
        (before.response_quality, after.response_quality),
        (before.timeliness, after.timeliness),
        (before.collaboration, after.collaboration),
        *((before.expertise[d], after.expertise[d]) for d in before.expertise),
    ]
    return any(abs(a - b) >= NOTICEABLE for a, b in pairs)
