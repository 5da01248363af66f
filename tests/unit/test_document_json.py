"""``document_json`` reads every root a document has, whatever its name or type."""

from __future__ import annotations

import pycrdt

from crdt_mesh import Replica
from crdt_mesh.testing import document_json
from tests.conftest import ReplicaFactory


def _write(replica: Replica, task: str) -> None:
    doc = replica.document("schema")
    with doc.transaction():
        doc.map("tasks")[task] = {"state": "open"}
        doc.array("log").extend(["made", 2])
        doc.text("notes").insert(0, "hello")
        doc.map("nested")["list"] = pycrdt.Array([1, 2])


def test_a_replica_that_only_received_the_roots_reads_them_all(
    make_replica: ReplicaFactory,
) -> None:
    writer, reader = make_replica(), make_replica()
    _write(writer, "t1")
    reader.ingest(writer.missing_from({})).raise_first()
    expected = {
        "log": ["made", 2.0],
        "nested": {"list": [1.0, 2.0]},
        "notes": "hello",
        "tasks": {"t1": {"state": "open"}},
    }
    assert document_json(writer.document("schema")) == expected
    assert document_json(reader.document("schema")) == expected


def test_different_content_in_any_root_reads_differently(make_replica: ReplicaFactory) -> None:
    one, two = make_replica(), make_replica()
    _write(one, "t1")
    _write(two, "t2")
    assert document_json(one.document("schema")) != document_json(two.document("schema"))


def test_an_empty_root_is_no_root(make_replica: ReplicaFactory) -> None:
    replica = make_replica()
    doc = replica.document("schema")
    doc.map("touched")  # read, never written
    with doc.transaction():
        doc.array("gone").append(1)
    with doc.transaction():
        del doc.array("gone")[0]
    assert document_json(doc) == {}
