"""The event bus. Each service names its own events (``GossipEvents``, ``TaskEvents``
...); :class:`crdt_mesh.P2PEvents` lists them all.

Handlers may be plain functions or coroutine functions. A sync handler runs at
once; an async one is started in the mesh's task group. A handler that raises
is logged and changes nothing for the bus, the mesh or the other handlers.
Events fire on every replica when the replicated state they describe arrives,
not only on the peer that caused it.

Only names the bus knows are accepted: a mesh's bus knows every name of
:class:`crdt_mesh.P2PEvents`; ``events.register("my-app:thing")`` adds a name of
your own, which you may then subscribe to and emit. Subscribing to a name nobody
fires (a typo) is an :class:`~crdt_mesh.errors.UnknownEvent` error, not silence.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from .errors import UnknownEvent

log = logging.getLogger(__name__)

Handler = Callable[[Any], None] | Callable[[Any], Awaitable[None]]


class EventBus:
    """Named events to handlers.

    Args:
        spawn: starts a coroutine in the background (the mesh's task group);
            without it, an async handler's coroutine is logged and dropped.
    """

    def __init__(
        self,
        spawn: Callable[[Coroutine[Any, Any, None]], object] | None = None,
        names: Iterable[str] = (),
    ) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._known: set[str] = set()
        self._spawn = spawn
        self.failures = 0
        self.register(*names)

    def register(self, *names: str) -> None:
        """Make ``names`` known (a service's events, or your own); registering twice is fine.

        Raises:
            UnknownEvent: a name is not a non-empty string.
        """
        for name in names:
            if not isinstance(name, str) or not name:
                raise UnknownEvent(f"an event name is a non-empty string, not {name!r}")
        self._known.update(str(n) for n in names)

    @property
    def names(self) -> frozenset[str]:
        """The event names this bus knows."""
        return frozenset(self._known)

    def _check(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise UnknownEvent(f"an event name is a non-empty string, not {name!r}")
        if str(name) not in self._known:
            raise UnknownEvent(
                f"no event is named {str(name)!r} (known: {', '.join(sorted(self._known))});"
                " register a name of your own with events.register(name)"
            )
        return str(name)

    def attach(self, spawn: Callable[[Coroutine[Any, Any, None]], object] | None) -> None:
        """Set (or clear) where async handlers run."""
        self._spawn = spawn

    def on(self, name: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(payload)`` for each ``name`` event; returns an unsubscribe.

        Raises:
            UnknownEvent: no event has that name (register your own first).
            TypeError: ``handler`` is not callable.
        """
        name = self._check(name)
        if not callable(handler):
            raise TypeError(f"handler: an event handler is callable, not {handler!r}")
        self._handlers.setdefault(name, []).append(handler)
        return lambda: self.off(name, handler)

    def off(self, name: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``name`` (no error if it was not subscribed)."""
        handlers = self._handlers.get(str(name), [])
        if handler in handlers:
            handlers.remove(handler)

    def emit(self, name: str, payload: Any = None) -> None:
        """Deliver ``payload`` to every handler of ``name``, in subscription order.

        Raises:
            UnknownEvent: no event has that name (register your own first).
        """
        name = self._check(name)
        for handler in list(self._handlers.get(name, ())):
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
