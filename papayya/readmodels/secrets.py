"""Signing secrets kept in the database: the server's own (run tokens, login links), made once
per database and shared by every process, and each project's callback secret (``whsec_…``)."""

from __future__ import annotations

from typing import Final

from papayya import signing
from papayya.database import server_secret
from papayya.readmodels import Repository
from sql import queries

Q: Final = queries("workers.sql")
CALLBACKS: Final = "callbacks"


class Secrets(Repository):
    async def server(self, name: str = "run_tokens") -> bytes:
        """The server secret ``name``, made on first use."""
        return await server_secret(self.pool, name)

    async def callbacks(self, project_id: str, *, rotate: bool = False) -> str:
        """The project's callback signing secret (``whsec_…``), made on first use; ``rotate``
        replaces it."""
        if rotate:
            fresh = signing.new_secret()
            await self.pool.execute(
                Q["replace_project_secret"], project_id, CALLBACKS, fresh.encode()
            )
            return fresh
        value = await self.pool.fetchval(Q["project_secret"], project_id, CALLBACKS)
        if value is None:
            await self.pool.execute(
                Q["create_project_secret"], project_id, CALLBACKS, signing.new_secret().encode()
            )
            value = await self.pool.fetchval(Q["project_secret"], project_id, CALLBACKS)
        return bytes(value).decode()
