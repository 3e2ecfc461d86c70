"""Stopping a background task, the one way every service does it."""

import asyncio
import contextlib


async def cancel_and_wait(task: "asyncio.Task[object] | None") -> None:
    """Cancel ``task`` and wait until it has finished, so its cleanup has run (None: nothing to do).

    An error the task had already ended with is raised here, as awaiting it would."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
