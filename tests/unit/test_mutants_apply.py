"""Every planted bug of tests/mutation still applies: its snippet is in its file once.

(Running the mutants takes a minute and is not part of the suite; this keeps their
list from rotting as the code moves: two had, unnoticed, before this test.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutation.mutants import MUTANTS, ROOT, Mutant


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_the_mutant_snippet_is_found_once(mutant: Mutant) -> None:
    text = (Path(ROOT) / mutant.file).read_text()
    assert text.count(mutant.old) == 1, mutant.name
    for test in mutant.caught_by:
        assert (Path(ROOT) / test.split("::")[0]).exists(), test
