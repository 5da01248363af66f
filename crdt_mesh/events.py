"""The event bus. Each service names its own events (``GossipEvents``, ``TaskEvents``
...); :class:`crdt_mesh.P2PEvents` lists them all.

Handlers may be plain functions or coroutine functions. A sync handler runs at
once; an async one is started in the mesh's task group. A handler that raises
is logged and changes nothing for the bus, the mesh or the other handlers.
Events fire on every replica when the replicated state they describe arrives,
not only on the peer that caused it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[Any], None] | Callable[[Any], Awaitable[None]]


class EventBus:
    """Named events to handlers.

    Args:
        spawn: starts a coroutine in the background (the mesh's task group);
            without it, an async handler's coroutine is logged and dropped.
    """

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, None]], object] | None = None) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._spawn = spawn
        self.failures = 0

    def attach(self, spawn: Callable[[Coroutine[Any, Any, None]], object] | None) -> None:
        """Set (or clear) where async handlers run."""
        self._spawn = spawn

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(payload)`` for each ``name`` event; returns an unsubscribe."""
        if not isinstance(name, str) or not name:
            raise ValueError("an event name is a non-empty string")
        if not callable(handler):
            raise TypeError("an event handler is callable")
        self._handlers.setdefault(str(name), []).append(handler)
        return lambda: self.off(name, handler)

    def off(self, name: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``name`` (no error if it was not subscribed)."""
        handlers = self._handlers.get(str(name), [])
        if handler in handlers:
            handlers.remove(handler)

    def emit(self, name: str, payload: Any = None) -> None:
        """Deliver ``payload`` to every handler of ``name``, in subscription order."""
        for handler in list(self._handlers.get(str(name), ())):
            try:
                result = handler(payload)
            except Exception:
                self.failures += 1
                log.exception("handler of %s failed", name)
                continue
            if inspect.isawaitable(result):
                self._run(name, result)

    def _run(self, name: str, awaitable: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception:
                self.failures += 1
                log.exception("async handler of %s failed", name)

        if self._spawn is None:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            log.warning("async handler of %s dropped: no running mesh to run it in", name)
            return
        self._spawn(guarded())
