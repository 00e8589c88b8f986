"""The read-model repositories of the app, made once alongside the event store."""

from __future__ import annotations

from aiohttp import web

from eventstore.postgres import PostgresEventStore
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
from papayya.secretbox import SecretBox, load_key
from web import keys


def install(app: web.Application, store: PostgresEventStore) -> None:
    """Put every repository under its ``AppKey``; they share the store's pool."""
    app[keys.PROJECTS] = Projects(store)
    app[keys.AGENTS] = Agents(store)
    app[keys.DEPLOYMENTS] = Deployments(store)
    app[keys.SCHEDULES] = Schedules(store)
    app[keys.WEBHOOKS] = Webhooks(store)
    app[keys.SECRETS] = Secrets(store)
    app[keys.RUN_LIST] = RunList(store)
    app[keys.IDEMPOTENCY_KEYS] = IdempotencyKeys(store)
    app[keys.HEARTBEATS] = Heartbeats(store)
    config = app[keys.CONFIG]
    box = SecretBox(load_key(config.secrets_key, config.data_dir))
    app[keys.PROJECT_SECRETS] = ProjectSecrets(store, box)
