"""Tools for testing your own documents on crdt_mesh.

* :mod:`crdt_mesh.testing.strategies` - hypothesis strategies for operations on
  documents, delivery schedules (order, duplicates, splits) and network faults.
* :class:`SimulatedMesh` - many real replicas on a simulated, seeded network,
  with ``run_until_converged()``.
* :func:`cluster` - N running meshes on any transport, and waits on conditions.
* :class:`Faults` - the one fault model of the simulator and the memory transport.
* :mod:`crdt_mesh.testing.conformance` - the tests every transport must pass.
* :mod:`crdt_mesh.testing.attacks` - a hostile peer's attacks, to check a node holds.
* :class:`SimulatedGossip` - the failure-detection and broadcast cores of many
  peers on a simulated network in virtual time (crash, restart, leave, loss).

Everything here is public API, and crdt_mesh's own tests use it.
"""

from .cluster import Cluster as Cluster
from .cluster import cluster as cluster
from .faults import Faults as Faults
from .gossip import Reach as Reach
from .gossip import SimulatedGossip as SimulatedGossip
from .ops import Op as Op
from .ops import apply_op as apply_op
from .ops import document_json as document_json
from .sim import Convergence as Convergence
from .sim import ConvergenceError as ConvergenceError
from .sim import SimulatedMesh as SimulatedMesh

__all__ = [
    "Cluster",
    "Convergence",
    "ConvergenceError",
    "Faults",
    "Op",
    "Reach",
    "SimulatedGossip",
    "SimulatedMesh",
    "apply_op",
    "cluster",
    "document_json",
]
