"""A replica that dies in the middle of a read must not cost the client a 5xx: the read runs again on the
primary. Only reads (GET, HEAD) are run again — they change nothing, so running one twice is safe — and only
when a replica failed, which the routing reports through ``read_attempt``."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodnight.replicas.routing import ReadAttempt, read_attempt

_READS = frozenset({"GET", "HEAD"})


class ReplicaFallbackMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _READS:
            await self.app(scope, receive, send)
            return
        attempt = ReadAttempt()
        token = read_attempt.set(attempt)
        try:
            held: list[Message] = []

            async def hold_failed_reads(message: Message) -> None:
                # Hold back an error answer while it may be the replica's fault; pass anything else through.
                if held or (message["type"] == "http.response.start" and message["status"] >= 500):
                    held.append(message)
                    return
                await send(message)

            await self.app(scope, receive, hold_failed_reads)
            if held and attempt.replica_failed:
                attempt.primary_only = True
                await self.app(scope, _no_body(receive), send)
                return
            for message in held:
                await send(message)
        finally:
            read_attempt.reset(token)


def _no_body(receive: Receive) -> Receive:
    """A read's (empty) body, again, for the second run; then whatever the client sends next."""
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return receive_again
