"""One request must not freeze the run lists of every tenant (issue 14 §2).

The reproductions of the issue are refused (or, for a provider's usage, recorded within the
bounds), and anything the API accepts is projected: the ``runs`` and ``costs`` projectors catch
up without an error and the lists show it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec.inspect as mi
import pytest

from fakellm import FakeConfig, Reply, Usage
from papayya.domain import bounds
from papayya.domain import events as ev
from papayya.metering import providers
from papayya.money import cents_up
from papayya.sdk.http import CheckpointBody, OpenRunBody
from projections.service import Projections
from tests.support.api import Api, page, running_api
from tests.support.bounds import collect, numeric_fields
from tests.support.gateway import Gateway, running_gateway
from tests.support.serving import call
from web import keys
from web.routes.runs import ReplayRun, ResumeRun, RunOptions

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def api(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    async with running_api(dsn, monkeypatch) as running:
        yield running


async def events_in_store(api: Api) -> int:
    return int(await api.app[keys.STORE].pool.fetchval("SELECT count(*) FROM events"))


async def catch_up(api: Api) -> dict[str, int]:
    """Every projector, to the head: raises if one of them cannot project an event."""
    store = api.app[keys.STORE]
    await store.wait_visible()  # the fence waits for every older transaction on the server
    return await Projections(store, api.app[keys.DSN]).catch_up()


async def listed(http: aiohttp.ClientSession, api: Api) -> dict[str, dict[str, Any]]:
    """Every run of the project, as ``GET /v1/runs`` lists them (from the read model)."""
    found: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        items, cursor = await page(api, http, "/v1/runs", **params)
        found.update({run["id"]: run for run in items})
        if cursor is None:
            return found


def assert_error(status: int, body: Any, expected: int = 400) -> None:
    assert status == expected, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body


# -- the reproductions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"budget_micro_usd": 1e23},
        {"budget_micro_usd": 10**23},
        {"budget_micro_usd": 2**63},
        {"budget_micro_usd": bounds.MAX_MICRO_USD + 1},
        {"budget_micro_usd": -1},
        {"replay_of": "source", "from_step": 2**40},
        {"replay_of": "source", "from_step": 2**31},
        {"replay_of": "source", "from_step": bounds.MAX_STEPS + 1},
    ],
)
async def test_a_durable_open_with_a_number_past_its_bound_is_a_400_that_writes_nothing(
    api: Api, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    status, _ = await call(
        http, api, "POST", "/v1/durable/runs", {"run_id": "source", "agent": "a"}
    )
    assert status == 201
    before = await events_in_store(api)
    run_id = f"r-{uuid.uuid4().hex}"
    status, answer = await call(
        http, api, "POST", "/v1/durable/runs", {"run_id": run_id, "agent": "a", **body}
    )
    assert_error(status, answer)
    assert await events_in_store(api) == before
    status, _ = await call(http, api, "GET", f"/v1/durable/runs/{run_id}")
    assert status == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/replay", {"from_step": 2**40}),
        ("/replay", {"from_step": 1e23}),
        ("/resume", {"budget_cents": 10**23}),
        ("/resume", {"budget_input_tokens": 2**63}),
    ],
)
async def test_a_run_command_with_a_number_past_its_bound_is_a_400_that_writes_nothing(
    api: Api, http: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> None:
    status, agent = await call(
        http, api, "POST", "/v1/agents", {"name": "A", "slug": "bounded", "config": {}}
    )
    assert status == 201, agent
    status, run = await call(http, api, "POST", "/v1/agents/bounded/runs", {})
    assert status == 201, run
    before = await events_in_store(api)
    status, answer = await call(http, api, "POST", f"/v1/runs/{run['id']}{path}", body)
    assert_error(status, answer)
    assert await events_in_store(api) == before


@pytest.mark.parametrize(
    "query",
    [
        "/v1/events?cursor=c1_99999999999999999999",
        "/v1/events?cursor=c99999999999999999999_1",
        "/v1/runs/nope/state?at_step=99999999999999999999",
        "/v1/usage/runs?limit=99999999999999999999",
    ],
)
async def test_a_query_number_past_its_bound_is_a_4xx_json_error(
    api: Api, http: aiohttp.ClientSession, query: str
) -> None:
    status, answer = await call(http, api, "GET", query)
    assert 400 <= status < 500, answer
    assert_error(status, answer, status)


async def test_a_list_cursor_with_a_number_past_its_column_is_a_400(
    api: Api, http: aiohttp.ClientSession
) -> None:
    from web.http import encode_cursor

    status, _ = await call(
        http, api, "POST", "/v1/agents", {"name": "A", "slug": "deployed", "config": {}}
    )
    assert status == 201
    cursor = encode_cursor([2**40])
    status, answer = await call(
        http, api, "GET", f"/v1/agents/deployed/deployments?cursor={cursor}"
    )
    assert_error(status, answer)


@pytest.fixture
async def gw(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    async with running_gateway(dsn, monkeypatch, FakeConfig()) as gateway:
        yield gateway
        for client in gateway.clients:
            await client.close()


async def test_a_provider_reporting_usage_past_int64_is_recorded_within_the_bounds(
    gw: Gateway,
) -> None:
    huge = Usage(prompt_tokens=2**64, completion_tokens=2**63 + 5, cached_tokens=2**70)
    gw.fake.script.append(Reply(usage=huge))
    state, token = await gw.start_run()
    client = gw.openai(token)
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    run = await gw.runs.load(state.run_id)
    usage = run.steps[0].usage
    # Cached tokens cannot exceed the prompt: both are clamped to the bound first.
    assert usage.cached_input_tokens == bounds.MAX_TOKENS and usage.input_tokens == 0
    assert 0 < usage.output_tokens <= bounds.MAX_TOKENS  # the fake honours the cap sent
    assert 0 < usage.cost_micro_usd <= bounds.INT64_MAX
    await catch_up(gw.api)
    async with aiohttp.ClientSession() as http:
        run_row = (await listed(http, gw.api))[state.run_id]
        assert run_row["total_input_tokens"] == bounds.MAX_TOKENS
        assert run_row["total_cost_cents"] == cents_up(usage.cost_micro_usd)
        status, totals = await call(http, gw.api, "GET", "/v1/usage")
        assert status == 200 and totals["input_tokens"] == bounds.MAX_TOKENS


async def test_an_output_cap_past_the_bound_is_refused_before_anything_is_reserved(
    gw: Gateway,
) -> None:
    import openai

    state, token = await gw.start_run()
    client = gw.openai(token)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=10**30,
        )
    assert gw.fake.stats.total == 0
    run = await gw.runs.load(state.run_id)
    assert run.version == state.version  # nothing reserved, nothing recorded


# -- what a valid event carries, the read models hold ---------------------------------------


async def test_sums_of_events_at_their_bounds_do_not_overflow_the_read_models(
    api: Api, http: aiohttp.ClientSession
) -> None:
    """Events whose every number is at its stored bound, many of them on one run and one
    day: the totals (numeric columns) hold their sums exactly."""
    runs = api.app[keys.RUNS]
    project = str(await api.app[keys.STORE].pool.fetchval("SELECT project_id FROM projects"))
    top = bounds.INT64_MAX
    state = await runs.queue(
        ev.RunQueued(
            run_id="maxed",
            project_id=project,
            agent_id="agent-max",
            budget_micro_usd=top,
            budget_total_tokens=top,
            max_steps=bounds.MAX_STEPS,
        )
    )
    state = await runs.append(state, [ev.RunStarted(attempt=1)])
    calls = 4
    for n in range(calls):
        call_at_bound = ev.LlmCallRecorded(
            step_number=n, provider="openai", model="m", fingerprint="f",
            input_tokens=top, cached_input_tokens=top, cache_write_tokens=top,
            output_tokens=top, reasoning_tokens=top, cost_micro_usd=top,
        )  # fmt: skip
        state = await runs.append(
            state,
            [
                ev.StepStarted(step_number=n, step_type="response"),
                call_at_bound,
                ev.StepCompleted(step_number=n),
            ],
        )
    await catch_up(api)
    row = (await listed(http, api))["maxed"]
    assert row["total_input_tokens"] == 3 * top * calls
    assert row["total_output_tokens"] == 2 * top * calls
    assert row["total_cost_cents"] == cents_up(top * calls)
    assert row["budget_cents"] == cents_up(top) and row["current_step"] == calls
    for path in ("/v1/usage", "/v1/usage/daily", "/v1/usage/breakdown", "/v1/usage/runs"):
        status, answer = await call(http, api, "GET", path)
        assert status == 200, (path, answer)
    status, totals = await call(http, api, "GET", "/v1/usage")
    assert totals["calls"] == calls and totals["input_tokens"] == 3 * top * calls
    status, overview = await call(http, api, "GET", "/v1/overview")
    assert status == 200, overview


# -- the property: anything the API accepts can be projected --------------------------------


def _numbers_of(body_type: Any, examples: int) -> list[dict[str, Any]]:
    info = mi.type_info(body_type)
    assert isinstance(info, mi.StructType)
    return collect(numeric_fields(info), examples)


async def test_any_run_the_api_accepts_can_be_projected_and_listed(
    api: Api, http: aiohttp.ClientSession
) -> None:
    """Numbers drawn by hypothesis from each run-making body's own types (at, just past and
    far past their bounds) are sent; whatever is accepted must project and be listed as the
    run's own document says."""
    status, _ = await call(
        http, api, "POST", "/v1/agents", {"name": "P", "slug": "prop", "config": {}}
    )
    assert status == 201
    status, source = await call(http, api, "POST", "/v1/agents/prop/runs", {})
    assert status == 201
    accepted: list[str] = []
    refused = 0

    async def send(method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal refused
        status, answer = await call(http, api, method, path, body)
        if status >= 400:
            assert_error(status, answer, status)
            assert status < 500, answer
            refused += 1
            return None
        return dict(answer)

    for numbers in _numbers_of(OpenRunBody, 40):
        if "from_step" in numbers:
            numbers["replay_of"] = source["id"]
        run_id = f"d-{uuid.uuid4().hex[:12]}"
        opened = await send("POST", "/v1/durable/runs", {"run_id": run_id, "agent": "a", **numbers})
        if opened is None:
            continue
        accepted.append(opened["id"])  # the project-scoped id the rest of the API knows
        for checkpoint in _numbers_of(CheckpointBody, 3):
            await send(
                "POST", f"/v1/durable/runs/{run_id}/checkpoints", {"label": "t", **checkpoint}
            )
    for numbers in _numbers_of(RunOptions, 40):
        made = await send("POST", "/v1/agents/prop/runs", numbers)
        if made is not None:
            accepted.append(made["id"])
    for numbers in _numbers_of(ReplayRun, 20):
        made = await send("POST", f"/v1/runs/{source['id']}/replay", numbers)
        if made is not None:
            accepted.append(made["id"])
    for numbers in _numbers_of(ResumeRun, 10):
        await send("POST", f"/v1/runs/{source['id']}/resume", numbers)  # 409: not exceeded
    assert accepted and refused  # the draws reached both sides of the bounds

    processed = await catch_up(api)
    assert all(n > 0 for n in processed.values()), processed
    shown = await listed(http, api)
    for run_id in accepted:
        status, own = await call(http, api, "GET", f"/v1/runs/{run_id}")
        assert status == 200, own
        assert shown[run_id] == own, run_id


def test_bounds_leave_room_for_what_they_feed() -> None:
    """The arithmetic the bounds module's comments promise."""
    assert bounds.MAX_MICRO_USD * 100 < bounds.INT64_MAX
    # Five clamped buckets at the dearest rate-card price stay a bigint cost.
    assert 5 * bounds.MAX_TOKENS * 10**6 < bounds.INT64_MAX
    assert bounds.MAX_STEPS < bounds.INT32_MAX
    # The gateway reserves one cap for each of chat's n answers: the product is a token count.
    assert providers.MAX_OUTPUT_CAP * providers.MAX_CHOICES <= bounds.MAX_TOKENS
