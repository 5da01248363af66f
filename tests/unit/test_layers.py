"""The house keeps its layers: the imports follow docs/architecture.md.

Reads every import of ``crdt_mesh`` and ``transports`` with :mod:`ast` (those
under ``TYPE_CHECKING`` and inside functions too) and fails on an arrow the
layers forbid, on any import circle, and on a module over 600 lines that does
not say at its top why it is one module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("crdt_mesh", "transports")
MAX_LINES = 600

#: Layer of a module: the longest prefix listed here. ``crdt_mesh`` itself (its
#: ``__init__``) is the face: importing it imports everything.
LAYERS = {
    "crdt_mesh.errors": "base",
    "crdt_mesh.arguments": "base",
    "crdt_mesh.identity": "base",
    "crdt_mesh.signatures": "base",
    "crdt_mesh.commitment": "base",
    "crdt_mesh.metrics": "base",
    "crdt_mesh.ledger": "base",
    "crdt_mesh.events": "base",
    "crdt_mesh.config": "base",
    "crdt_mesh.store": "store",
    "crdt_mesh.journal": "store",
    "crdt_mesh.replica": "replica",
    "crdt_mesh.sync": "sync",
    "crdt_mesh.runtime": "runtime",
    "crdt_mesh.services": "services",
    "crdt_mesh.testing": "testing",
    "crdt_mesh.mesh": "face",
    "crdt_mesh.cli": "face",
    "crdt_mesh.prometheus": "face",
    "crdt_mesh.status": "face",
    "crdt_mesh.__main__": "face",
    "crdt_mesh": "face",
    "transports": "transports",
}

#: What each layer may import (besides itself).
MAY_IMPORT = {
    "base": set(),
    "store": {"base"},
    "replica": {"base", "store"},
    "sync": {"base"},
    "runtime": {"base", "replica", "sync"},
    "services": {"base", "replica", "runtime"},
    "testing": {"base", "store", "replica", "sync", "runtime", "services", "face"},
    "face": {"base", "store", "replica", "sync", "runtime", "services"},
    "transports": {"base", "sync", "runtime", "testing"},
}

#: A service reaches the runtime through these only: the host it attaches to and
#: the penalty vocabulary it reports offences in.
SERVICE_DOORS = {"crdt_mesh.runtime.host", "crdt_mesh.runtime.penalty"}
#: A transport reaches the runtime through these only.
TRANSPORT_DOORS = {"crdt_mesh.runtime.transport", "crdt_mesh.runtime.penalty"}
#: Inside a service package, the pure roles import neither replica nor runtime host.
PURE_ROLES = {"model", "rules", "swim", "epidemic"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module of ours, line) for every import in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # ``from . import x`` imports the module x
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {
        name: [(t, line) for t, line in _imports(name, path) if t.split(".")[0] in PACKAGES]
        for name, path in MODULES.items()
    }


def layer_of(module: str) -> str:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def forbidden(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target``; None if it may."""
    if source == target or target.startswith(source + "."):
        return None  # a package and its own modules
    src, dst = layer_of(source), layer_of(target)
    if dst == "transports" and src != "transports":
        return "crdt_mesh never imports transports (they are found by URL scheme)"
    if src != dst and dst not in MAY_IMPORT[src]:
        return f"the {src} layer may not import the {dst} layer"
    if src == "services":
        own = ".".join(source.split(".")[:3])
        if dst == "services" and not target.startswith(own):
            return "a service knows another only through what the composition root hands it"
        if dst == "runtime" and target not in SERVICE_DOORS:
            return f"a service reaches the runtime only through {sorted(SERVICE_DOORS)}"
        role = source.split(".")[-1]
        if role in PURE_ROLES and dst in {"replica", "store"} | (
            {"runtime"} if target != "crdt_mesh.runtime.penalty" else set()
        ):
            return f"{role} is pure: no replica, store or host"
    if src == "transports" and dst == "runtime" and target not in TRANSPORT_DOORS:
        return f"a transport reaches the runtime only through {sorted(TRANSPORT_DOORS)}"
    return None


def test_every_module_is_in_a_layer() -> None:
    assert {layer_of(m) for m in MODULES} <= set(MAY_IMPORT)


def test_no_import_crosses_a_layer_the_wrong_way() -> None:
    wrong = [
        f"{MODULES[source].relative_to(ROOT)}:{line}: {source} -> {target}: {why}"
        for source, targets in _graph().items()
        for target, line in targets
        if (why := forbidden(source, target)) is not None
    ]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or with a self-loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _without_package_inits(graph: dict[str, list[tuple[str, int]]]) -> dict[str, set[str]]:
    """Module arrows, leaving out a package's ``__init__`` importing its own modules
    (the re-export every package does; a module importing its package back is kept)."""
    return {
        source: {t for t, _ in targets if not t.startswith(source + ".") and t != source}
        for source, targets in graph.items()
    }


def test_there_is_no_import_circle() -> None:
    assert _cycles(_without_package_inits(_graph())) == []


def test_the_checks_can_fail() -> None:
    """The rules catch the arrows they exist for (a check that passes on anything is no check)."""
    assert forbidden("crdt_mesh.runtime.runtime", "crdt_mesh.services.gossip.service")
    assert forbidden("crdt_mesh.replica.replica", "crdt_mesh.sync.index")
    assert forbidden("crdt_mesh.runtime.registry", "transports.tcp")
    assert forbidden("crdt_mesh.services.tasks.service", "crdt_mesh.services.gossip")
    assert forbidden("crdt_mesh.services.tasks.service", "crdt_mesh.runtime.runtime")
    assert forbidden("crdt_mesh.services.tasks.rules", "crdt_mesh.replica.replica")
    assert forbidden("crdt_mesh.sync.session", "crdt_mesh")
    assert forbidden("transports.tcp", "crdt_mesh.mesh")
    assert forbidden("crdt_mesh.services.gossip.board", "crdt_mesh.replica.replica") is None
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_a_long_module_says_why_it_is_one() -> None:
    unexplained = []
    for path in MODULES.values():
        text = path.read_text()
        lines = len(text.splitlines())
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and "Why one module" not in docstring:
            unexplained.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not unexplained, "split these, or say at their top why each is one:\n" + "\n".join(
        unexplained
    )
