"""What the docs name exists: dotted names of ours and paths in the repository.

Modules move; a doc that points at the old place sends a reader nowhere.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
DOTTED = re.compile(r"(?<![\w/.])(?:crdt_mesh|transports)(?:\.[A-Za-z_]\w*)+")
#: names that look dotted but are not modules: entry-point groups
NOT_MODULES = {"crdt_mesh.transports"}
PATH = re.compile(r"(?<![\w/.])(?:crdt_mesh|transports|tests|benchmarks|docs)/[\w/-]*\.[a-z]+\b")


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attribute in parts[end:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_dotted_name_in_the_docs_resolves() -> None:
    dangling = [
        f"{doc.relative_to(ROOT)}: {name}"
        for doc in DOCS
        for name in sorted(set(DOTTED.findall(doc.read_text())))
        if name not in NOT_MODULES and not resolves(name)
    ]
    assert not dangling, "\n".join(dangling)


def test_every_path_in_the_docs_exists() -> None:
    dangling = [
        f"{doc.relative_to(ROOT)}: {path}"
        for doc in DOCS
        for path in sorted(set(PATH.findall(doc.read_text())))
        if not (ROOT / path.split("::")[0]).exists()
    ]
    assert not dangling, "\n".join(dangling)


def test_the_checks_can_fail() -> None:
    assert resolves("crdt_mesh.runtime.peer.PeerSync")
    assert not resolves("crdt_mesh.peer.PeerSync")
    assert DOTTED.findall("see `crdt_mesh.swim.X` and crdt_mesh/x.py") == ["crdt_mesh.swim.X"]
    assert PATH.findall("see `crdt_mesh/_pending.py`") == ["crdt_mesh/_pending.py"]
