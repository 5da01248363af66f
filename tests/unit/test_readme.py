"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their stores in the current folder
    exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    assert any(p.name.endswith(".mesh") for p in tmp_path.iterdir())


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2 and os.path.exists(README)
