"""EigenTrust (Kamvar, Schlosser and Garcia-Molina, 2003): how much each rater's word
counts, from the signed graph of who rated whom, anchored in pre-trusted peers.

``t <- (1 - a) * C^T t + a * p``: ``C`` is each rater's local trust normalised to
sum 1 (a rater that trusts nobody passes its trust to the pre-trusted peers),
``p`` the pre-trusted peers' distribution (their weights: an organization's roots,
a stake they signed), ``a`` the share that returns to them at each step. A ring of
fresh identities that rate each other receives trust only through a link from a
peer that already has some: without one, they weigh nothing. The iteration runs
on scipy's sparse matrices (the ``reputation`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...identity import PeerId
from .model import ReputationError

TOLERANCE = 1e-10
MAX_STEPS = 500


def _scipy() -> tuple[Any, Any]:
    try:
        import numpy
        import scipy.sparse
    except ImportError:
        raise ReputationError(
            "EigenTrust weighting needs numpy and scipy: pip install 'crdt_mesh[reputation]'"
        ) from None
    return numpy, scipy.sparse


def eigentrust(
    local: Mapping[tuple[PeerId, PeerId], float],
    pretrusted: Mapping[PeerId, float],
    teleport: float,
) -> dict[PeerId, float]:
    """Each peer's global trust (summing to 1) from local trust ``local[(i, j)] > 0``.

    Raises:
        ReputationError: no pre-trusted peer, or numpy/scipy missing.
    """
    np, _ = _scipy()
    peers = sorted({p for pair in local for p in pair} | set(pretrusted), key=lambda p: p.key)
    index = {peer: i for i, peer in enumerate(peers)}
    pairs = sorted(local.items(), key=lambda item: (item[0][0].key, item[0][1].key))
    raters = np.fromiter((index[i] for (i, _), _ in pairs), dtype=np.int64, count=len(pairs))
    subjects = np.fromiter((index[j] for (_, j), _ in pairs), dtype=np.int64, count=len(pairs))
    values = np.fromiter((v for _, v in pairs), dtype=np.float64, count=len(pairs))
    return eigentrust_edges(peers, raters, subjects, values, pretrusted, teleport)


def eigentrust_edges(
    peers: Sequence[PeerId],
    raters: Any,
    subjects: Any,
    values: Any,
    pretrusted: Mapping[PeerId, float],
    teleport: float,
) -> dict[PeerId, float]:
    """:func:`eigentrust` over arrays: ``raters[k]`` trusts ``subjects[k]`` by
    ``values[k] > 0`` (indexes into ``peers``, in key order, each pair once: the
    order the sums are made in, so every replica gets the same floats).

    Raises:
        ReputationError: no pre-trusted peer, or numpy/scipy missing.
    """
    if not pretrusted:
        raise ReputationError("EigenTrust needs at least one pre-trusted peer")
    np, sparse = _scipy()
    extra = sorted(set(pretrusted) - set(peers), key=lambda p: p.key)
    peers = [*peers, *extra]
    index = {peer: i for i, peer in enumerate(peers)}
    n = len(peers)
    out_sum = np.bincount(raters, weights=values, minlength=n)
    normalised = values / out_sum[raters] if len(values) else values
    # C^T: trust flows from rater i to subject j
    flow = sparse.csr_matrix((normalised, (subjects, raters)), shape=(n, n))
    flow.sort_indices()
    p = np.zeros(n)
    for peer, weight in sorted(pretrusted.items(), key=lambda item: item[0].key):
        p[index[peer]] = weight
    p /= p.sum()
    dangling = out_sum == 0
    t = p.copy()
    for _ in range(MAX_STEPS):
        passed = flow @ t + t[dangling].sum() * p
        following = (1.0 - teleport) * passed + teleport * p
        if np.abs(following - t).sum() < TOLERANCE:
            t = following
            break
        t = following
    return {peer: float(t[i]) for i, peer in enumerate(peers)}


def rater_weights(trust: Mapping[PeerId, float]) -> dict[PeerId, float]:
    """Each rater's weight: its trust over the median trust of the trusted (capped at
    1), so that a rater trusted as much as most weighs in full, and one the trusted
    never reached weighs nothing."""
    trusted = sorted(value for value in trust.values() if value > 0)
    if not trusted:
        return {}
    median = trusted[len(trusted) // 2]
    return {peer: min(1.0, value / median) for peer, value in trust.items()}
