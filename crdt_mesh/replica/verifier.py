"""Ed25519 checks for large batches, in helper processes.

Why processes: PyNaCl releases the GIL while it verifies, but each check must
take the GIL back to return, and a thread that does Python work meanwhile
holds it for milliseconds at a time. Measured, a thread pool beside a busy
ingest loop gains almost nothing. Helper processes have GILs of their own, so
the caller decodes and admits one chunk while they verify the next; and when
the oldest chunk's answer is not back yet, the caller verifies the next chunk
itself rather than wait (on 2 cores: one helper and the caller, 12,000 entries/s
where two helpers alone made 11,000).

A batch never waits for a helper to start: starting one is starting Python (a
second or more on a loaded machine, during which an event loop that called
ingest would stand still); until a helper says it is ready, batches are checked
in-process. A helper runs :mod:`crdt_mesh.signatures` alone (its protocol is
there), not the package.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import cbor2

from .. import signatures
from ..signatures import READY, Item, read_exact, verify_items

#: How a helper is started (the module by its path: see crdt_mesh.signatures).
_COMMAND = [sys.executable, "-P", str(Path(signatures.__file__))]

#: Request bytes in flight per helper: enough to keep it busy, and within a
#: pipe's buffer (64 KiB on Linux) so that sending never blocks the caller,
#: who has chunks to decode and admit meanwhile.
_PIPE_BUDGET = 48 * 1024

#: Whether an answer can be known to be ready without blocking (select on a pipe).
_CAN_POLL = os.name == "posix"


class _Helper:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            _COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            bufsize=0,  # unbuffered: ``answer_ready`` asks the pipe itself
        )
        self.sizes: deque[int] = deque()  # bytes of each request not yet answered
        self.queued = 0
        #: set once the helper wrote its ready byte (read by a thread of its own, so
        #: that nobody waits for it)
        self.ready = threading.Event()
        threading.Thread(target=self._await_ready, daemon=True).start()

    def _await_ready(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError):
            if stdout.read(1) == READY:
                self.ready.set()

    @property
    def dead(self) -> bool:
        return self.process.poll() is not None

    def send(self, items: list[Item]) -> None:
        payload = cbor2.dumps(items)
        stdin = self.process.stdin
        assert stdin is not None
        data = memoryview(len(payload).to_bytes(4, "big") + payload)
        while data:  # an unbuffered write may take part of it
            data = data[stdin.write(data) or 0 :]
        self.sizes.append(len(payload) + 4)
        self.queued += len(payload) + 4

    def answer_ready(self) -> bool:
        """Whether an answer can be read now (a helper writes each answer at once)."""
        stdout = self.process.stdout
        assert stdout is not None
        return bool(select.select([stdout], [], [], 0)[0])

    def receive(self, count: int) -> bytes:
        stdout = self.process.stdout
        assert stdout is not None
        size = int.from_bytes(read_exact(stdout, 4), "big")
        answer = read_exact(stdout, size)
        self.queued -= self.sizes.popleft()
        if len(answer) != count:
            raise EOFError("helper answered the wrong number of items")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()  # EOF: the helper exits
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class VerifierPool:
    """Helper processes that verify chunks of signatures, answers in order.

    Shared by every replica in the process (started on first use, used once
    ready, stopped at exit). If a helper fails, the remaining chunks are verified
    in-process: a failure here costs speed, never a wrong answer.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._helpers: list[_Helper] = []
        self._lock = threading.Lock()

    def _start(self) -> list[_Helper]:
        """The helpers that are ready (starting them, or new ones for any that died)."""
        if any(helper.dead for helper in self._helpers):
            self._stop()
        if not self._helpers:
            self._helpers = [_Helper() for _ in range(self.size)]
        return [helper for helper in self._helpers if helper.ready.is_set()]

    @property
    def started(self) -> bool:
        """Whether helpers were started (ready or not)."""
        return bool(self._helpers)

    def start(self, timeout: float = 0.0) -> bool:
        """Start the helpers now rather than at the first large batch, and wait up to
        ``timeout`` seconds for them to be ready. True if every helper is ready."""
        with self._lock:
            self._start()
            helpers = list(self._helpers)
        return all(helper.ready.wait(timeout) for helper in helpers)

    def verify(self, chunks: Iterable[list[Item]]) -> Iterator[bytes]:
        """Yield each chunk's answer, in order, keeping the helpers busy meanwhile.

        ``chunks`` is pulled lazily, so the caller can prepare a chunk while the
        helpers check the ones before it. While the oldest answer is not back, the
        next chunk is checked here rather than waited for.
        """
        yield from cast(Iterator[bytes], self._answers(chunks, pauses=False))

    def verify_or_pause(self, chunks: Iterable[list[Item]]) -> Iterator[bytes | None]:
        """As :meth:`verify`, but yield None before waiting on the helpers with no chunk
        left to send: the caller's cue to do work of its own meanwhile (an ingest
        commits what it admitted), rather than after the last answer."""
        return self._answers(chunks, pauses=True)

    def _answers(self, chunks: Iterable[list[Item]], *, pauses: bool) -> Iterator[bytes | None]:
        with self._lock:  # one batch at a time: answers come back in request order
            try:
                helpers = self._start()
            except OSError:
                helpers = []
            if not helpers:  # none ready yet: this batch is not held up by their start
                yield from (verify_items(c) for c in chunks)
                return
            source = iter(chunks)
            # in request order: (helper, chunk, b"") awaiting the helper's answer, or
            # (None, chunk, answer) checked here
            slots: deque[tuple[_Helper | None, list[Item], bytes]] = deque()
            exhausted = False
            paused = False  # a pause was yielded since the last answer
            try:
                while True:
                    while not exhausted:
                        helper = min(helpers, key=lambda h: h.queued)
                        if helper.queued >= _PIPE_BUDGET:
                            break  # a send now could block on a full pipe
                        chunk = next(source, None)
                        if chunk is None:
                            exhausted = True
                            break
                        slots.append((helper, chunk, b""))  # before send: a failed send is redone
                        helper.send(chunk)
                    if not slots:
                        return
                    helper_or_none, chunk, answer = slots[0]
                    if helper_or_none is not None:
                        if _CAN_POLL and not exhausted and not helper_or_none.answer_ready():
                            extra = next(source, None)
                            if extra is None:
                                exhausted = True
                            else:
                                slots.append((None, extra, verify_items(extra)))
                            continue
                        if pauses and _CAN_POLL and exhausted and not paused:
                            paused = True
                            if not helper_or_none.answer_ready():
                                yield None
                                continue
                        answer = helper_or_none.receive(len(chunk))
                    slots.popleft()  # only once answered: a failed receive is redone
                    paused = False
                    yield answer
            except (OSError, EOFError, ValueError):
                self._stop()
                left = list(slots)
                slots.clear()
                for helper_or_none, chunk, answer in left:
                    yield answer if helper_or_none is None else verify_items(chunk)
                yield from (verify_items(c) for c in source)
            finally:
                if any(helper is not None for helper, _, _ in slots):
                    self._stop()  # abandoned mid-batch: unread answers would confuse the next

    def _stop(self) -> None:
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.close()

    def close(self) -> None:
        """Stop the helpers. A batch still being read (a generator left suspended) then
        finishes in-process: closing never waits on it."""
        acquired = self._lock.acquire(blocking=False)
        try:
            self._stop()
        finally:
            if acquired:
                self._lock.release()


_shared: VerifierPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> VerifierPool:
    """The process-wide pool: a helper per core but one, the ingesting thread's (it
    checks chunks itself while an answer is not back). On 2 cores, two helpers beside
    it were three processes sharing two cores alike: the ingesting thread, the one
    that feeds them, got two thirds of one and the helpers waited on it (8% slower
    than one helper and that thread checking too). With one core, none: no helper."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = VerifierPool(_helpers_for(os.cpu_count() or 1))
            atexit.register(_shared.close)
        return _shared


def _helpers_for(cores: int) -> int:
    """Helpers for ``cores`` cores when the caller checks chunks too (on platforms
    where it can tell an answer is not back: else one per core)."""
    return max(0, cores - 1) if _CAN_POLL else cores
