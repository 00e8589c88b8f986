"""Typed application and request keys, declared once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from papayya.metering.meter import Meter
from papayya.metering.ratecards import RateCardCache
from papayya.runstates import RunStates
from web.ratelimit import AuthLimiter
from web.revocation import KeyWatch

if TYPE_CHECKING:  # web.sse needs these keys itself
    from web.sse import OpenStreams, RunFeeds, StreamOwners

CONFIG = web.AppKey("config", Config)
DSN = web.AppKey("dsn", str)
STORE = web.AppKey("store", PostgresEventStore)
# The run-state repository: every reader of a run's state in this process goes through it.
RUNS = web.AppKey("runs", RunStates)
# Failed API-key checks per remote address (web.auth).
AUTH_LIMITER = web.AppKey("auth_limiter", AuthLimiter)

PROJECT_ID = web.RequestKey("project_id", str)
# The API key a request authenticated with; its streams end when it is revoked (KEY_WATCH).
API_KEY_ID = web.RequestKey("api_key_id", str)
KEY_WATCH = web.AppKey("key_watch", KeyWatch)
# Where PAPAYYA_METRICS_LISTEN serves /metrics, once it listens (web.routes.metrics).
METRICS_URL = web.AppKey("metrics_url", str)

RATE_CARDS = web.AppKey("rate_cards", RateCardCache)
RUN_TOKEN_SECRET = web.AppKey("run_token_secret", bytes)
METER = web.AppKey("meter", Meter)
# Server-sent events (web.sse.sse_ctx): open streams, the feeds of watched runs, and which
# project each stream belongs to.
OPEN_STREAMS: web.AppKey[OpenStreams] = web.AppKey("open_streams")
FEEDS: web.AppKey[RunFeeds] = web.AppKey("feeds")
STREAM_OWNERS: web.AppKey[StreamOwners] = web.AppKey("stream_owners")
