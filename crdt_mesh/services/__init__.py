"""The mission's services: thin views and commands over replicated documents.

Each service is a package with the same files for the same roles: ``model``
(values, errors, event names), ``rules`` (pure functions), ``board`` (commands and
views over one replica, the clock injected) and ``service`` (the async shell over
the runtime's host interface). They are built and wired by :class:`crdt_mesh.Mesh`.
"""
