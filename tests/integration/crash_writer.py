"""Child process for the crash test: writes forever, printing each committed seq.

Usage: python -m tests.integration.crash_writer STORE KEYFILE
"""

from __future__ import annotations

import sys

from crdt_mesh import Identity, Replica


def main() -> None:
    store, keyfile = sys.argv[1], sys.argv[2]
    identity = Identity.load(keyfile)
    with Replica.open(store, identity, snapshot_min_debt=256) as replica:
        notes = replica.document("notes")
        while True:
            head = notes.heads().get(identity.peer_id)
            seq = head.seq if head else 0
            if seq % 7 == 3:  # now and then a group commit of several transactions
                with replica.batch():
                    for i in range(1, 4):
                        with notes.transaction():
                            notes.map("m")[str(seq + i)] = seq + i
                            notes.text("t").insert(0, "x")
                committed = range(seq + 1, seq + 4)
            else:
                with notes.transaction():
                    notes.map("m")[str(seq + 1)] = seq + 1
                    notes.text("t").insert(0, "x")
                committed = range(seq + 1, seq + 2)
            for s in committed:
                print(s, flush=True)


if __name__ == "__main__":
    main()
