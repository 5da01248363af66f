"""Network adapters for crdt_mesh (memory, tcp, ...).

Depends on :mod:`crdt_mesh`; :mod:`crdt_mesh` never imports this package.
"""

__all__: list[str] = []
