"""Typed application keys, declared once."""

from __future__ import annotations

from aiohttp import web

from eventstore.postgres import PostgresEventStore
from papayya.config import Config

CONFIG = web.AppKey("config", Config)
DSN = web.AppKey("dsn", str)
STORE = web.AppKey("store", PostgresEventStore)
