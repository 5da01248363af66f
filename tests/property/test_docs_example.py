"""The example of docs/testing.md, kept runnable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh import Identity, Replica
from crdt_mesh.testing import Op, apply_op, document_json
from crdt_mesh.testing.strategies import deliveries, transactions


@given(txns=st.lists(transactions(), max_size=5), data=st.data())
def test_my_document_converges(
    txns: list[list[Op]], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("t")
    with Replica.open(root / "a", Identity.generate()) as a:
        doc = a.document("mine")
        for ops in txns:
            with doc.transaction():
                for op in ops:
                    apply_op(doc, op)
        entries = a.missing_from({})
        expected = document_json(doc)
    with Replica.open(root / "b", Identity.generate()) as b:
        for batch in data.draw(deliveries(entries)):
            b.ingest(batch).raise_first()
        assert document_json(b.document("mine")) == expected
