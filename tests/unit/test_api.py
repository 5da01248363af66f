from __future__ import annotations

import types

import crdt_mesh
import crdt_mesh.testing


def test_all_matches_public_names() -> None:
    for module in (crdt_mesh, crdt_mesh.testing):
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        public.discard("annotations")
        assert set(module.__all__) == public


def test_every_error_derives_from_mesh_error() -> None:
    errors = [getattr(crdt_mesh, n) for n in crdt_mesh.__all__]
    for error in errors:
        if isinstance(error, type) and issubclass(error, Exception):
            assert issubclass(error, crdt_mesh.MeshError), error


def test_the_library_never_imports_transports() -> None:
    """Transports depend on crdt_mesh, never the reverse (docs/architecture.md): loading
    every module of the library loads no transport."""
    import subprocess
    import sys

    code = (
        "import sys, crdt_mesh, crdt_mesh.mesh, crdt_mesh.runtime.peer, crdt_mesh.sync,"
        " crdt_mesh.testing, crdt_mesh.cli;"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == 'transports'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_event_says_what_its_handlers_receive_and_the_types_are_public() -> None:
    """A handler's author can name (and import from ``crdt_mesh``) what each event delivers."""
    from crdt_mesh.services import gossip, memory, reputation, tasks

    firing = {
        gossip: crdt_mesh.GossipEvents,
        tasks: crdt_mesh.TaskEvents,
        memory: crdt_mesh.MemoryEvents,
        reputation: crdt_mesh.ReputationEvents,
    }
    for service, events in firing.items():
        assert set(service.EVENT_PAYLOADS) == set(events), service.__name__
    for service in (gossip, tasks, memory, reputation):
        for event, payloads in service.EVENT_PAYLOADS.items():
            assert event.value in {e.value for e in crdt_mesh.P2PEvents}, event
            for payload in payloads:
                assert getattr(crdt_mesh, payload.__name__, None) is payload, payload
                assert payload.__name__ in crdt_mesh.__all__
