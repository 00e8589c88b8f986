"""The read-model repositories on real Postgres (docs/security.md, "Tenants"): each call
scoped to a project answers only that project's rows, and a write aimed at another project's
row changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import msgspec
import pytest

from eventstore.postgres import PostgresEventStore
from papayya.domain import events as ev
from papayya.errors import NotFound
from papayya.readmodels.agents import Agent, Agents
from papayya.readmodels.deployments import Deployments
from papayya.readmodels.projects import NewApiKey, Projects, new_id
from papayya.readmodels.schedules import Schedule, Schedules
from papayya.readmodels.secrets import Secrets
from papayya.readmodels.webhooks import Webhooks
from projections.reporting import Reporting

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIRST_PAGE = (None, None)


@dataclass
class Tenant:
    project_id: str
    key: NewApiKey
    agent: Agent


@dataclass
class World:
    store: PostgresEventStore
    a: Tenant
    b: Tenant


@pytest.fixture
async def world(pg_store: PostgresEventStore) -> AsyncIterator[World]:
    """Two projects, each with a key and an agent of the same slug."""
    projects, agents = Projects(pg_store), Agents(pg_store)
    tenants = []
    for name in ("alpha", "beta"):
        project, key = await projects.create_with_key(name, "first")
        draft = Agent(new_id("agent"), project.id, "Bot", "bot", None, {}, 1, NOW, NOW)
        tenants.append(Tenant(project.id, key, await agents.create(draft, NOW)))
    yield World(pg_store, *tenants)


async def test_agents_are_found_and_listed_in_their_project_only(world: World) -> None:
    agents = Agents(world.store)
    a, b = world.a, world.b
    assert (await agents.find(a.project_id, "bot")).id == a.agent.id
    assert (await agents.find(b.project_id, "bot")).id == b.agent.id
    assert (await agents.find(a.project_id, a.agent.id)).project_id == a.project_id
    with pytest.raises(NotFound):
        await agents.find(b.project_id, a.agent.id)
    assert [x.id for x in await agents.page(a.project_id, FIRST_PAGE, 10)] == [a.agent.id]


async def test_an_agent_update_aimed_at_another_project_writes_nothing(world: World) -> None:
    agents = Agents(world.store)
    a, b = world.a, world.b
    stolen = Agent(a.agent.id, b.project_id, "Mine now", "bot", None, {}, 1, NOW, NOW)
    with pytest.raises(NotFound):
        await agents.update(stolen, 1, NOW)
    # Neither the row nor the stream moved: the event went with the rolled-back update.
    kept = await agents.find(a.project_id, a.agent.id)
    assert (kept.name, kept.version) == ("Bot", 1)
    assert await world.store.stream_version(f"agent-{a.agent.id}") == 1
    renamed = msgspec.structs.replace(kept, name="Renamed")
    assert (await agents.update(renamed, 1, NOW)).version == 2


async def test_deployments_are_read_in_their_project_only(world: World) -> None:
    deployments = Deployments(world.store)
    a, b = world.a, world.b
    created = ev.DeploymentCreated(
        deployment_id=new_id("dep"), project_id=a.project_id, agent_id=a.agent.id, version=1,
        runtime="process", entrypoint="/srv/agent.py",
    )  # fmt: skip
    made = await deployments.create(a.project_id, a.agent.id, created, "ready")
    assert (made.version, made.status) == (1, "ready")
    assert (await deployments.find(a.project_id, made.deployment_id)).agent_id == a.agent.id
    with pytest.raises(NotFound):
        await deployments.find(b.project_id, made.deployment_id)
    assert await deployments.page(b.project_id, a.agent.id, None, 10) == []
    assert [d.deployment_id for d in await deployments.page(a.project_id, a.agent.id, None, 10)]
    assert await world.store.stream_version(f"deployment-{made.deployment_id}") == 2
    ready = await deployments.ready(a.agent.id, None)
    assert ready is not None and ready.deployment_id == made.deployment_id
    assert await deployments.ready(a.agent.id, 2) is None
    assert await deployments.ready(b.agent.id, None) is None


def _schedule(tenant: Tenant) -> Schedule:
    return Schedule(
        schedule_id=new_id("sch"), project_id=tenant.project_id, agent_id=tenant.agent.id,
        cron_expression="*/5 * * * *", timezone="UTC", input={"n": 1}, max_steps=None,
        budget_cents=None, overlap_policy="skip", catchup_policy="latest", enabled=True,
        next_fire_at=NOW + timedelta(minutes=5), last_fire_at=None, last_run_id=None,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


async def test_schedules_are_read_and_changed_in_their_project_only(world: World) -> None:
    schedules = Schedules(world.store)
    a, b = world.a, world.b
    mine = await schedules.create(_schedule(a))
    theirs = await schedules.create(_schedule(b))
    assert mine.input == {"n": 1}
    assert [s.schedule_id for s in await schedules.page(a.project_id, None, FIRST_PAGE, 10)] == [
        mine.schedule_id
    ]
    assert await schedules.page(b.project_id, a.agent.id, FIRST_PAGE, 10) == []
    with pytest.raises(NotFound):
        await schedules.find(b.project_id, mine.schedule_id)
    with pytest.raises(NotFound):
        await schedules.fires(b.project_id, mine.schedule_id, None, 10)

    async def never(current: Schedule) -> Schedule:
        raise AssertionError("another project's schedule reached the change")

    with pytest.raises(NotFound):
        await schedules.update(b.project_id, mine.schedule_id, never)
    with pytest.raises(NotFound):
        await schedules.delete(b.project_id, mine.schedule_id)
    assert (await schedules.find(a.project_id, mine.schedule_id)).enabled
    assert (await schedules.delete(b.project_id, theirs.schedule_id)).project_id == b.project_id


async def test_webhooks_are_listed_and_changed_in_their_project_only(world: World) -> None:
    webhooks = Webhooks(world.store)
    a, b = world.a, world.b
    hook = await webhooks.create(
        a.project_id, new_id("wh"), a.agent.id, "hook", None, "whsec_old", 60, NOW
    )
    assert await webhooks.page(b.project_id, a.agent.id, FIRST_PAGE, 10) == []
    assert [w.webhook_id for w in await webhooks.page(a.project_id, a.agent.id, FIRST_PAGE, 10)]
    with pytest.raises(NotFound):
        await webhooks.rotate_secret(b.project_id, hook.webhook_id, "whsec_new", NOW)
    with pytest.raises(NotFound):
        await webhooks.delete(b.project_id, hook.webhook_id)
    assert (await webhooks.signed(hook.webhook_id)).secret == "whsec_old"


async def test_keys_are_listed_and_revoked_in_their_project_only(world: World) -> None:
    projects = Projects(world.store)
    a, b = world.a, world.b
    assert [k.id for k in await projects.list_keys(b.project_id)] == [b.key.id]
    with pytest.raises(NotFound):
        await projects.revoke_key(b.project_id, a.key.id)
    assert await projects.authenticate(a.key.key) == (a.project_id, a.key.id)
    assert await projects.revoked([a.key.id, b.key.id]) == []
    await projects.revoke_key(a.project_id, a.key.id)
    assert await projects.authenticate(a.key.key) is None
    assert await projects.revoked([a.key.id, b.key.id]) == [a.key.id]


async def test_callback_secrets_are_the_projects_own(world: World) -> None:
    secrets = Secrets(world.store)
    a, b = world.a, world.b
    first = await secrets.callbacks(a.project_id)
    assert first.startswith("whsec_") and await secrets.callbacks(a.project_id) == first
    assert await secrets.callbacks(b.project_id) != first
    rotated = await secrets.callbacks(a.project_id, rotate=True)
    assert rotated != first and await secrets.callbacks(a.project_id) == rotated


async def test_spend_is_summed_in_its_project_only(world: World) -> None:
    spend = Reporting(world.store.pool)
    a, b = world.a, world.b
    day = date(2026, 3, 1)
    for tenant, micro in ((a, 1_500_000), (b, 9_000_000)):
        await world.store.pool.execute(
            "INSERT INTO costs (project_id, agent_id, model, day, input_tokens, output_tokens,"
            " cached_tokens, cost_micro_usd, calls) VALUES ($1, $2, 'm', $3, 10, 5, 0, $4, 1)",
            tenant.project_id, tenant.agent.id, day, micro,
        )  # fmt: skip
        await world.store.pool.execute(
            "INSERT INTO runs (run_id, project_id, agent_id, status, trigger, current_step,"
            " total_input_tokens, total_output_tokens, total_cached_tokens,"
            " total_cost_micro_usd, attempt, created_at, updated_at, version)"
            " VALUES ($1, $2, $3, 'completed', 'api', 1, 10, 5, 0, $4, 1, $5, $5, 1)",
            f"run_{tenant.project_id}", tenant.project_id, tenant.agent.id, micro, NOW,
        )  # fmt: skip
    days = await spend.spend_by_day(a.project_id, day, day)
    assert [(row["day"], int(row["cost_micro_usd"])) for row in days] == [(day, 1_500_000)]
    since, until = NOW - timedelta(days=1), NOW + timedelta(1)
    runs = await spend.costliest_runs(a.project_id, since, until, 10, None)
    assert [(r["run_id"], int(r["total_cost_micro_usd"])) for r in runs] == [
        (f"run_{a.project_id}", 1_500_000)
    ]
