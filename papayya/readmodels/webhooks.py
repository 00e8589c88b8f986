"""Webhooks: per-agent endpoints that start runs, and the deliveries each accepted (DESIGN
§9). The API's calls are scoped to one project; the signed trigger endpoint finds its webhook
by id alone (the signature authenticates it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from papayya.errors import NotFound, RateLimited
from papayya.readmodels import Repository
from sql import queries

Q: Final = queries("triggers.sql")


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """A ``webhooks`` row; ``secret`` is the key of its ``scheme`` (``whsec_…`` for
    ``standard``; for the others, the sender's own or one we made)."""

    webhook_id: str
    project_id: str
    agent_id: str
    name: str
    description: str | None
    secret: str
    rate_limit_per_minute: int
    created_at: datetime
    secret_rotated_at: datetime
    scheme: str = "standard"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Webhook:
        return cls(**dict(row))


class Webhooks(Repository):
    async def create(
        self,
        project_id: str,
        webhook_id: str,
        agent_id: str,
        name: str,
        description: str | None,
        secret: str,
        rate_limit_per_minute: int,
        now: datetime,
        scheme: str = "standard",
    ) -> Webhook:
        row = await self.pool.fetchrow(
            Q["insert_webhook"], project_id, webhook_id, agent_id, name, description, secret,
            rate_limit_per_minute, now, scheme,
        )  # fmt: skip
        assert row is not None  # INSERT … RETURNING
        return Webhook.from_row(row)

    async def page(
        self,
        project_id: str,
        agent_id: str,
        after: tuple[datetime | None, str | None],
        limit: int,
    ) -> list[Webhook]:
        """Up to ``limit`` of the agent's webhooks, newest first, after the
        ``(created_at, id)`` of the previous page's last one."""
        rows = await self.pool.fetch(Q["list_webhooks"], project_id, agent_id, *after, limit)
        return [Webhook.from_row(r) for r in rows]

    async def delete(self, project_id: str, webhook_id: str) -> Webhook:
        row = await self.pool.fetchrow(Q["delete_webhook"], project_id, webhook_id)
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return Webhook.from_row(row)

    async def get(self, project_id: str, webhook_id: str) -> Webhook:
        row = await self.pool.fetchrow(Q["project_webhook"], project_id, webhook_id)
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return Webhook.from_row(row)

    async def update(
        self, project_id: str, webhook_id: str, change: Callable[[Webhook], Webhook]
    ) -> Webhook:
        """Apply ``change`` to the webhook, locked; whatever it raises writes nothing."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(Q["lock_project_webhook"], project_id, webhook_id)
            if row is None:
                raise NotFound(f"webhook {webhook_id} not found")
            w = change(Webhook.from_row(row))
            row = await conn.fetchrow(
                Q["update_webhook"], project_id, webhook_id, w.name, w.description,
                w.rate_limit_per_minute, w.scheme, w.secret, w.secret_rotated_at,
            )  # fmt: skip
        assert row is not None  # locked above
        return Webhook.from_row(row)

    async def rotate_secret(
        self, project_id: str, webhook_id: str, secret: str, now: datetime
    ) -> Webhook:
        row = await self.pool.fetchrow(
            Q["rotate_webhook_secret"], project_id, webhook_id, secret, now
        )
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return Webhook.from_row(row)

    async def signed(self, webhook_id: str) -> Webhook:
        """The webhook of a signed call, whatever its project (its signature says which)."""
        row = await self.pool.fetchrow(Q["webhook"], webhook_id)
        if row is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return Webhook.from_row(row)

    async def accept(
        self,
        webhook_id: str,
        message_id: str,
        run_id: str,
        check: Callable[[Webhook], None],
    ) -> str | None:
        """Record the delivery of ``message_id`` with its run; ``None`` if recorded now, or
        the first delivery's run id for a repeat. ``check`` sees the webhook as locked (its
        secret may have been rotated meanwhile); ``RateLimited`` past its calls a minute.

        One call per webhook at a time: the repeat check, the rate limit and the delivery
        record cannot interleave. Nothing else is awaited while the lock is held."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(Q["lock_webhook"], webhook_id)
            if row is None:
                raise NotFound(f"webhook {webhook_id} not found")
            webhook = Webhook.from_row(row)
            check(webhook)
            first: str | None = await conn.fetchval(Q["delivery"], webhook_id, message_id)
            if first is None:
                limit = webhook.rate_limit_per_minute
                if await conn.fetchval(Q["recent_deliveries"], webhook_id) >= limit:
                    raise RateLimited(
                        f"webhook {webhook_id} accepts at most {limit} calls a minute"
                    )
                await conn.execute(Q["insert_delivery"], webhook_id, message_id, run_id)
        return first
