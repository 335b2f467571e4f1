"""Shared helpers for tests that talk HTTP to a local server (loopback only)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]


@asynccontextmanager
async def serve(path: str, handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` for POST ``path`` on 127.0.0.1 (a free port); yield the base URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Sleeps(list[float]):
    """Stands in for asyncio.sleep in retry loops: records the delays instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
