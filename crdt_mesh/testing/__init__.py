"""Tools for testing your own documents on crdt_mesh.

* :mod:`crdt_mesh.testing.strategies` - hypothesis strategies for operations on
  documents and for delivery schedules (order, duplicates, splits).

Everything here is public API, and crdt_mesh's own tests use it.
"""

from .ops import Op as Op
from .ops import apply_op as apply_op
from .ops import document_json as document_json

__all__ = ["Op", "apply_op", "document_json"]
