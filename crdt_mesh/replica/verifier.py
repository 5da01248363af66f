"""Ed25519 checks for large batches, in helper processes.

Why processes: PyNaCl releases the GIL while it verifies, but each check must
take the GIL back to return, and a thread that does Python work meanwhile
holds it for milliseconds at a time. Measured, a thread pool beside a busy
ingest loop gains almost nothing. Helper processes have GILs of their own, so
the caller decodes and admits one chunk while they verify the next.

Protocol (stdin/stdout of ``python -m crdt_mesh.replica.verifier``): each request is
a 4-byte big-endian length and CBOR ``[[signed_message, public_key], ...]``,
where ``signed_message`` is the signature followed by the signed bytes (the
layout of ``crypto_sign_open``); each answer is a 4-byte length and one byte
per item, 1 if the signature verified.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator

import cbor2

from ..identity import open_signed

Item = tuple[bytes, bytes]  # (signature + signed bytes, public key)

#: Request bytes in flight per helper: enough to keep it busy, and within a
#: pipe's buffer (64 KiB on Linux) so that sending never blocks the caller,
#: who has chunks to decode and admit meanwhile.
_PIPE_BUDGET = 48 * 1024


def verify_items(items: Iterable[Item]) -> bytes:
    """One byte per item: 1 if its signature verifies, else 0."""
    return bytes(open_signed(key, signed) for signed, key in items)


def _read_exact(stream: object, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError
        data += chunk
    return data


class _Helper:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crdt_mesh.replica.verifier"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.sizes: deque[int] = deque()  # bytes of each request not yet answered
        self.queued = 0

    def send(self, items: list[Item]) -> None:
        payload = cbor2.dumps(items)
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(len(payload).to_bytes(4, "big") + payload)
        stdin.flush()
        self.sizes.append(len(payload) + 4)
        self.queued += len(payload) + 4

    def receive(self, count: int) -> bytes:
        stdout = self.process.stdout
        assert stdout is not None
        size = int.from_bytes(_read_exact(stdout, 4), "big")
        answer = _read_exact(stdout, size)
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

    Shared by every replica in the process (started on first use, stopped at
    exit). If a helper fails, the remaining chunks are verified in-process:
    a failure here costs speed, never a wrong answer.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._helpers: list[_Helper] = []
        self._lock = threading.Lock()

    def _start(self) -> list[_Helper]:
        if not self._helpers:
            self._helpers = [_Helper() for _ in range(self.size)]
        return self._helpers

    def verify(self, chunks: Iterable[list[Item]]) -> Iterator[bytes]:
        """Yield each chunk's answer, in order, keeping the helpers busy meanwhile.

        ``chunks`` is pulled lazily, so the caller can prepare a chunk while the
        helpers check the ones before it.
        """
        with self._lock:  # one batch at a time: answers come back in request order
            try:
                helpers = self._start()
            except OSError:
                yield from (verify_items(c) for c in chunks)
                return
            source = iter(chunks)
            in_flight: deque[tuple[_Helper, list[Item]]] = deque()
            exhausted = False
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
                        in_flight.append((helper, chunk))  # before send: a failed send is redone
                        helper.send(chunk)
                    if not in_flight:
                        return
                    helper, chunk = in_flight[0]
                    answer = helper.receive(len(chunk))
                    in_flight.popleft()
                    yield answer
            except (OSError, EOFError, ValueError):
                self._stop()
                pending = [c for _, c in in_flight]
                in_flight.clear()
                yield from (verify_items(c) for c in pending)
                yield from (verify_items(c) for c in source)
            finally:
                if in_flight:  # abandoned mid-batch: unread answers would confuse the next
                    self._stop()

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
    """The process-wide pool, one helper per core."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = VerifierPool(max(1, os.cpu_count() or 1))
            atexit.register(_shared.close)
        return _shared


def _serve() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            size = int.from_bytes(_read_exact(stdin, 4), "big")
            items = cbor2.loads(_read_exact(stdin, size))
        except EOFError:
            return
        answer = verify_items(items)
        stdout.write(len(answer).to_bytes(4, "big") + answer)
        stdout.flush()


if __name__ == "__main__":
    _serve()
