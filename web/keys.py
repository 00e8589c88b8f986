"""Typed application and request keys, declared once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from eventstore.postgres import PostgresEventStore
from papayya.blobstore import BlobStore
from papayya.config import Config
from papayya.metering.meter import Meter
from papayya.metering.ratecards import RateCardCache
from papayya.readmodels.agents import Agents
from papayya.readmodels.deployments import Deployments
from papayya.readmodels.heartbeats import Heartbeats
from papayya.readmodels.idempotency import IdempotencyKeys
from papayya.readmodels.projects import Projects
from papayya.readmodels.projectsecrets import ProjectSecrets
from papayya.readmodels.runlist import RunList
from papayya.readmodels.schedules import Schedules
from papayya.readmodels.secrets import Secrets
from papayya.readmodels.webhooks import Webhooks
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
# The read-model repositories (web.readmodels.install, alongside the store).
PROJECTS = web.AppKey("projects", Projects)
AGENTS = web.AppKey("agents", Agents)
DEPLOYMENTS = web.AppKey("deployments", Deployments)
SCHEDULES = web.AppKey("schedules", Schedules)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
SECRETS = web.AppKey("secrets", Secrets)
PROJECT_SECRETS = web.AppKey("project_secrets", ProjectSecrets)
RUN_LIST = web.AppKey("run_list", RunList)
IDEMPOTENCY_KEYS = web.AppKey("idempotency_keys", IdempotencyKeys)
HEARTBEATS = web.AppKey("heartbeats", Heartbeats)
# Failed API-key checks per remote address (web.auth).
AUTH_LIMITER = web.AppKey("auth_limiter", AuthLimiter)

# This database's installation id (papayya.installation), which /healthz tells workers.
INSTALLATION = web.AppKey("installation", str)
# The default project's API key when this start made it (to be shown once, by server/).
CREATED_KEY = web.AppKey("created_key", str)
# What /readyz asks besides the database and the projectors' checkpoints: each check says
# what is wrong, or None. The composition root adds the queue's and its projectors' checks.
Check = Callable[[], Awaitable[str | None]]
READINESS = web.AppKey[list[Check]]("readiness")

PROJECT_ID = web.RequestKey("project_id", str)
# The API key a request authenticated with; its streams end when it is revoked (KEY_WATCH).
API_KEY_ID = web.RequestKey("api_key_id", str)
KEY_WATCH = web.AppKey("key_watch", KeyWatch)
# Where PAPAYYA_METRICS_LISTEN serves /metrics, once it listens (web.routes.metrics).
METRICS_URL = web.AppKey("metrics_url", str)


class ImageBuilds(Protocol):
    """Builds a ``building`` docker deployment's image in the background. The builder is a
    worker's tool (``workers.builder``), which web/ must not import: ``server/`` provides one
    (``server.builds``); an app without one leaves uploads for a server that has one."""

    def submit(self, deployment_id: str) -> None: ...


# Uploaded bundles (web.routes.deploy), and who builds their images, if anyone here.
BLOBS = web.AppKey[BlobStore]("blobs")
IMAGE_BUILDS = web.AppKey[ImageBuilds]("image_builds")

RATE_CARDS = web.AppKey("rate_cards", RateCardCache)
RUN_TOKEN_SECRET = web.AppKey("run_token_secret", bytes)
METER = web.AppKey("meter", Meter)
# Server-sent events (web.sse.sse_ctx): open streams, the feeds of watched runs, and which
# project each stream belongs to.
OPEN_STREAMS: web.AppKey[OpenStreams] = web.AppKey("open_streams")
FEEDS: web.AppKey[RunFeeds] = web.AppKey("feeds")
STREAM_OWNERS: web.AppKey[StreamOwners] = web.AppKey("stream_owners")
