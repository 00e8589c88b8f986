"""The run queue: a Redis stream with a consumer group (DESIGN §8).

A message carries a run id only; Postgres is the truth. Enqueueing twice is harmless (the
worker that claims a run does so with an append at the run's expected version, and drops
messages of runs that are no longer queued), so every path that might have lost a message
simply enqueues again: the dispatcher after a restart, the sweeper after Redis lost its data.

``papayya:queued:<run>`` marks a run as in the stream, so the sweeper's re-enqueue of old
queued runs does not pile up duplicates; a Redis that lost its data lost the marks too.
"""

from __future__ import annotations

import contextlib
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

STREAM: Final = "papayya:runs"
GROUP: Final = "workers"
MARK_PREFIX: Final = "papayya:queued:"  # + the stream name + ":" + the run id
MARK_SECONDS: Final = 24 * 3600
# Trimmed lazily: a stream of acknowledged run ids need not grow without bound.
MAX_LENGTH: Final = 100_000
# KEYS: the stream, then each run's mark; ARGV: mark seconds, max length, then the run ids.
ENQUEUE_UNMARKED: Final = """
local added = {}
for i = 2, #KEYS do
    local run_id = ARGV[i + 1]
    if redis.call('SET', KEYS[i], '1', 'EX', ARGV[1], 'NX') then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'run_id', run_id)
        added[#added + 1] = run_id
    end
end
return added
"""


def connect(url: str) -> aioredis.Redis:
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, decode_responses=True, health_check_interval=10
    )
    return client


class RunQueue:
    def __init__(self, client: aioredis.Redis, stream: str = STREAM, group: str = GROUP) -> None:
        self.redis = client
        self.stream = stream
        self.group = group

    def _mark(self, run_id: str) -> str:
        return f"{MARK_PREFIX}{self.stream}:{run_id}"

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (after FLUSHALL, say)."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)

    async def enqueue(self, run_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._mark(run_id), "1", ex=MARK_SECONDS)
            pipe.xadd(self.stream, {"run_id": run_id}, maxlen=MAX_LENGTH, approximate=True)
            await pipe.execute()

    async def enqueue_unmarked(self, run_ids: list[str]) -> list[str]:
        """Enqueue those of ``run_ids`` not already marked as in the stream; which ones.

        One round trip whatever the number (the sweeper passes hundreds of runs that are
        mostly still in the stream), and each run's mark and message go in together."""
        if not run_ids:
            return []
        keys = [self.stream, *(self._mark(run_id) for run_id in run_ids)]
        added = await self.redis.eval(  # type: ignore[misc]
            ENQUEUE_UNMARKED, len(keys), *keys, str(MARK_SECONDS), str(MAX_LENGTH), *run_ids
        )
        return [str(run_id) for run_id in added]

    async def read(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, str]]:
        """Up to ``count`` new messages for ``consumer``: (message id, run id)."""
        try:
            reply = await self.redis.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [(mid, fields.get("run_id", "")) for _, entries in reply for mid, fields in entries]

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[tuple[str, str]]:
        """Messages delivered to a consumer that never acknowledged them (it died) for at
        least ``min_idle_ms``, now ``consumer``'s."""
        try:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, consumer, min_idle_ms, "0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [(mid, fields.get("run_id", "")) for mid, fields in reply[1] if fields]

    async def ack(self, message_id: str, run_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, message_id)
            pipe.xdel(self.stream, message_id)
            pipe.delete(self._mark(run_id))
            await pipe.execute()

    async def depth(self) -> int:
        """Messages waiting or being worked on: acknowledged ones are deleted."""
        return int(await self.redis.xlen(self.stream))
