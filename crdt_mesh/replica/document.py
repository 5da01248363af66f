"""A replicated document: a pycrdt ``Doc`` whose transactions become signed entries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pycrdt

from ..identity import PeerId
from ..ledger import DocumentId, Entry, EntryKind, client_id_for
from .records import DocumentChange, Head
from .yupdate import encode_state_vector, is_integrated, parse_state_vector

log = logging.getLogger(__name__)

#: Updates checked for integration in one merged diff (merging many at once costs
#: more than linear time in Yrs).
_SETTLE_GROUP = 32


@dataclass(frozen=True)
class DocumentHooks:
    """What a document needs from the replica that holds it (and nothing more)."""

    peer_id: PeerId
    heads: Callable[[DocumentId], dict[PeerId, Head]]
    check_writable: Callable[[DocumentId], None]
    commit: Callable[[Document, bytes], None]
    rebuild: Callable[[Document], None]
    snapshot_min_debt: int


class Document:
    """A replicated document: a pycrdt ``Doc`` whose transactions become signed entries.

    Get one from :meth:`Replica.document`. Read and write the root types returned by
    :meth:`map`, :meth:`array` and :meth:`text`; group changes in
    :meth:`transaction` (one transaction, one entry). A write outside a
    transaction is committed on its own.
    """

    def __init__(self, hooks: DocumentHooks, doc_id: DocumentId) -> None:
        self.id = doc_id
        self._hooks = hooks
        self._client_id = client_id_for(doc_id, hooks.peer_id)
        self._captured: list[bytes] = []
        self._depth = 0
        self._applying = False
        self._observers: list[Callable[[DocumentChange], None]] = []
        self._unresolved: dict[tuple[PeerId, int], bytes] = {}
        self._debt = 0
        self._snapshot_size = 0
        self._ydoc = self._new_ydoc()

    def _new_ydoc(self) -> pycrdt.Doc[Any]:
        ydoc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=self._client_id)
        ydoc.observe(self._on_transaction)
        return ydoc

    def __repr__(self) -> str:
        return f"Document({self.id.text!r})"

    # -- reading -------------------------------------------------------------------

    @property
    def ydoc(self) -> pycrdt.Doc[Any]:
        """The underlying pycrdt document (replaced if the document is rebuilt)."""
        return self._ydoc

    def map(self, name: str) -> pycrdt.Map[Any]:
        """The root map ``name`` (created on first use)."""
        root: pycrdt.Map[Any] = self._ydoc.get(name, type=pycrdt.Map)
        return root

    def array(self, name: str) -> pycrdt.Array[Any]:
        """The root array ``name`` (created on first use)."""
        root: pycrdt.Array[Any] = self._ydoc.get(name, type=pycrdt.Array)
        return root

    def text(self, name: str) -> pycrdt.Text:
        """The root text ``name`` (created on first use)."""
        root: pycrdt.Text = self._ydoc.get(name, type=pycrdt.Text)
        return root

    def roots(self) -> list[str]:
        """Names of the root types present."""
        return sorted(self._ydoc.keys())

    def state(self) -> bytes:
        """The Yrs state vector of what this replica has integrated, clients sorted.

        Yrs orders clients as its hash map does; sorting makes equal states equal bytes.
        """
        return encode_state_vector(parse_state_vector(self._ydoc.get_state()))

    def update(self) -> bytes:
        """The whole integrated document as one Yrs v1 update."""
        return self._ydoc.get_update()

    def heads(self) -> dict[PeerId, Head]:
        """The head of each author's feed in this document."""
        return self._hooks.heads(self.id)

    def observe(self, callback: Callable[[DocumentChange], None]) -> Callable[[], None]:
        """Call ``callback`` after each committed entry is applied; returns an unsubscribe."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback) if callback in self._observers else None

    # -- writing -------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Document]:
        """Group changes into one signed entry, committed when the block exits.

        Raises:
            NotWritable: this replica's identity may not write this document.
            StoreError: the commit failed; the in-memory document was rolled back.
        """
        self._hooks.check_writable(self.id)
        self._depth += 1
        try:
            with self._ydoc.transaction():
                yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0 and self._captured:
                # Yrs cannot undo: drop the half-made change by reloading what was committed.
                self._hooks.rebuild(self)
            raise
        self._depth -= 1
        if self._depth == 0:
            self._flush()

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if self._applying:
            return
        update = event.update
        if update == b"\x00\x00":
            return
        self._captured.append(update)
        if self._depth == 0:  # a write outside Document.transaction(): commit it alone
            self._flush()

    def _flush(self) -> None:
        captured, self._captured = self._captured, []
        if not captured:
            return
        update = captured[0] if len(captured) == 1 else pycrdt.merge_updates(*captured)
        try:
            self._hooks.commit(self, update)
        except BaseException:
            self._hooks.rebuild(self)
            raise

    # -- applying committed entries -------------------------------------------------

    def _apply(self, entries: Iterable[Entry], *, check: bool) -> None:
        """Apply committed entries' updates; track those Yrs could not integrate yet.

        ``check`` is False for this replica's own entries (already in the document).
        """
        updates = [e for e in entries if e.kind is EntryKind.UPDATE]
        if not updates:
            return
        # Remote updates are applied merged, a group at a time: the merged update is
        # what the integration check reads anyway, and one merge and one apply cost a
        # third less than applying each (Yjs: applying a merge is applying its parts).
        size = _SETTLE_GROUP if check else 1
        groups = [updates[start : start + size] for start in range(0, len(updates), size)]
        merged = [
            g[0].payload if len(g) == 1 else pycrdt.merge_updates(*(e.payload for e in g))
            for g in groups
        ]
        self._applying = True
        try:
            with self._ydoc.transaction():  # one transaction: observers fire once
                for update in merged:
                    self._ydoc.apply_update(update)
        finally:
            self._applying = False
        self._debt += sum(len(e.payload) for e in updates)
        if check:
            settle = bool(self._unresolved)  # what waited before may be integrated now
            state = self._ydoc.get_state()
            for group, update in zip(groups, merged, strict=True):
                if not is_integrated(update, state):  # rare: settle tells which entries
                    for entry in group:
                        self._unresolved[(entry.author, entry.seq)] = entry.payload
                    settle = True
            if settle:
                self._settle()

    def _settle(self) -> None:
        """Forget the tracked updates that the document has now integrated.

        Checked in merged groups (one check covers a group in the usual case;
        merging everything at once costs more than linear time in Yrs).
        """
        state = self._ydoc.get_state()
        tracked = list(self._unresolved.items())
        for start in range(0, len(tracked), _SETTLE_GROUP):
            group = tracked[start : start + _SETTLE_GROUP]
            updates = [update for _, update in group]
            merged = updates[0] if len(updates) == 1 else pycrdt.merge_updates(*updates)
            if is_integrated(merged, state):
                for key, _ in group:
                    del self._unresolved[key]
                continue
            for key, update in group:
                if is_integrated(update, state):
                    del self._unresolved[key]

    def _notify(self, entries: Iterable[Entry], *, local: bool) -> None:
        if not self._observers:
            return  # no change records built for no one
        for entry in entries:
            change = DocumentChange(self.id, entry.author, entry.seq, local)
            for callback in list(self._observers):
                try:
                    callback(change)
                except Exception:
                    log.exception("observer of %s failed", self.id)

    def _snapshot_due(self) -> bool:
        return self._debt > max(self._hooks.snapshot_min_debt, self._snapshot_size)
