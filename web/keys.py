"""Typed application and request keys, declared once."""

from __future__ import annotations

from aiohttp import web

from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from papayya.runs import Runs

CONFIG = web.AppKey("config", Config)
DSN = web.AppKey("dsn", str)
STORE = web.AppKey("store", PostgresEventStore)
RUNS = web.AppKey("runs", Runs)

PROJECT_ID = web.RequestKey("project_id", str)
