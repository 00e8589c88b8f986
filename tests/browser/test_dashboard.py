"""The dashboard end to end in headless Chromium: sign in, every page, a run updating live,
a step opened, replay from a step, cancel, resume with a larger budget, the login link, a
phone's screen and the keyboard. Screenshots of every page land in the test's tmp_path."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from fakellm import Reply, ToolCall
from papayya.triggers.firing import start_scheduled_run
from papayya.triggers.scheduler import Scheduler
from tests.support.agentloop import running_http_tool
from tests.support.agents import AGENT
from tests.support.browser import CRASHY, PHONE, SLOW, Dash, open_dash
from tests.support.cloud import Cloud
from web import keys
from web.routes import login

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def ensure_agent(stack: Cloud, slug: str, source: str, **config: object) -> None:
    status, _ = await stack.call("GET", f"/v1/agents/{slug}")
    if status == 404:
        await stack.register(slug, source, **config)


async def fire_a_schedule(stack: Cloud, slug: str) -> tuple[str, str]:
    """A schedule of ``slug`` that has fired once (a scheduler with a clock of its own)."""
    status, schedule = await stack.call(
        "POST", f"/v1/agents/{slug}/schedules",
        {"cron_expression": "*/5 * * * *", "timezone": "Europe/Paris",
         "input": {"question": "weather in Lyon?"}},
    )  # fmt: skip
    assert status == 201, schedule
    store = stack.app[keys.STORE]
    later = datetime.fromisoformat(schedule["next_fire_times"][0]) + timedelta(seconds=1)
    [fire] = await Scheduler(store, start_scheduled_run(store), clock=lambda: later).tick()
    assert fire.run_id, fire
    return schedule["id"], fire.run_id


async def test_sign_in_and_every_page(dash: Dash, stack: Cloud) -> None:
    await ensure_agent(stack, "weather", AGENT, model="gpt-4o", budget_usd="1.00")
    run_id = await stack.start("weather", input={"question": "weather in Paris?"})
    await stack.wait(run_id)
    _, fired = await fire_a_schedule(stack, "weather")
    status, hook = await stack.call("POST", "/v1/agents/weather/webhooks", {"name": "github"})
    assert status == 201, hook
    page = dash.page

    await dash.goto("/runs")  # signed out: to the login page, and back after
    await expect(page).to_have_url(re.compile(r"/login\?next=%2Fruns$"))
    await dash.shot("login")
    await page.get_by_label("API key").fill("cpk_not_a_key_at_all_0000")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That API key is not valid.")
    dash.allowed.append("401 (Unauthorized)")  # the browser logs the refused key check
    await page.get_by_label("API key").fill(dash.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    await expect(page.get_by_text("● live")).to_be_visible()
    await dash.shot("runs")
    row = page.locator(f'tr[data-run="{run_id}"]')
    await page.get_by_label("Agent").select_option(label="weather")
    await page.get_by_label("Status").select_option("completed")
    await page.get_by_label("Created").select_option("15")
    await expect(page).to_have_url(re.compile(r"/runs\?agent=agent_\w+&status=completed&since=15$"))
    await expect(row).to_be_visible()
    await page.get_by_label("Status").select_option("failed")
    await expect(row).to_have_count(0)
    await expect(page.get_by_text("No runs match these filters.")).to_be_visible()

    for name, path, heading in (
        ("overview", "/", "Overview"),
        ("cost", "/cost", "Cost"),
        ("agents", "/agents", "Agents"),
        ("schedules", "/schedules", "Schedules"),
        ("webhooks", "/webhooks", "Webhooks"),
    ):
        await page.get_by_role("navigation", name="Main").get_by_role("link", name=heading).click()
        await expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        await expect(page).to_have_url(dash.url + path)
        if name == "schedules":
            await page.get_by_role("button", name="Fire history").click()
            history = page.get_by_role("table", name="Fire history")
            await expect(history.get_by_role("link", name=fired)).to_be_visible()
        if name == "webhooks":
            await expect(page.get_by_text(hook["trigger_url"])).to_be_visible()
            assert hook["secret"] not in await page.content()  # secrets are never shown
        await dash.shot(name)
    await page.get_by_role("link", name="weather").first.click()
    await expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    await dash.shot("agent")
    await page.go_back()
    await expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    assert not dash.unexpected_errors(), dash.errors


async def test_a_running_run_updates_live_and_a_step_opens(dash: Dash, stack: Cloud) -> None:
    await ensure_agent(stack, "slow", SLOW)
    await dash.sign_in()
    page = dash.page
    run_id = await stack.start("slow", input={"steps": 6, "pause": 0.6})
    await dash.goto(f"/runs/{run_id}")
    await page.evaluate("window.samePage = true")  # gone if anything reloads the page
    first, last = page.locator('li[data-step="0"]'), page.locator('li[data-step="5"]')
    await expect(first).to_be_visible()
    assert await last.count() == 0  # the steps after it have not happened yet
    await expect(page.get_by_text("● live")).to_be_visible()
    await expect(page.locator("#run-status")).to_have_text("running")
    await dash.shot("run-live")
    await expect(page.locator('li[data-step="2"]')).to_be_visible()
    await expect(last).to_be_visible(timeout=20_000)
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator(".live")).to_have_text("ended")
    assert await page.evaluate("window.samePage") is True
    await expect(page.locator('[data-fact="Steps"]')).to_have_text(
        "6 of at most 50"
    )  # the project default
    step = page.locator('li[data-step="2"]')
    await step.get_by_role("button").first.click()
    await expect(step.get_by_role("button").first).to_have_attribute("aria-expanded", "true")
    detail = step.locator(".step-detail")
    await expect(detail.get_by_role("heading", name="Checkpoint: step-2")).to_be_visible()
    await expect(detail.get_by_label("Checkpoint result")).to_have_text("2")
    await expect(detail.get_by_text("CheckpointSaved")).to_be_visible()
    await dash.shot("run")


async def test_open_a_model_step_and_replay_from_it(dash: Dash, stack: Cloud) -> None:
    await ensure_agent(stack, "weather", AGENT, model="gpt-4o", budget_usd="1.00")
    run_id = await stack.start("weather", input={"question": "weather in Oslo?"})
    assert (await stack.wait(run_id)).status == "completed"
    await dash.sign_in()
    page = dash.page
    await dash.goto(f"/runs/{run_id}")
    await expect(page.locator("#run-status")).to_have_text("completed")
    model_step = page.locator('li[data-step="0"]')
    await model_step.get_by_role("button").first.click()
    detail = model_step.locator(".step-detail")
    await expect(detail.get_by_role("heading", name="Model call 1: openai gpt-4o")).to_be_visible()
    await expect(detail.get_by_role("heading", name="Tool call: lookup")).to_be_visible()
    await expect(detail.get_by_label("Tool output")).to_contain_text('"temp": 21')
    await detail.get_by_text("Request (").click()
    await expect(detail.get_by_label("Request")).to_contain_text("weather in Oslo?")
    await detail.get_by_text("Response (").click()
    await expect(detail.get_by_label("Response")).to_contain_text("tool_calls")
    await dash.shot("run-step")

    task_step = page.locator('li[data-step="1"]')
    await task_step.get_by_role("button").first.click()
    await task_step.get_by_role("button", name="Replay from step 1").click()
    await task_step.get_by_role("button", name="Start replay from step 1").click()
    await expect(page).not_to_have_url(re.compile(re.escape(run_id) + "$"))
    await expect(page.get_by_role("link", name=run_id)).to_be_visible()  # "Replay of <source>"
    await expect(page.locator("#run-status")).to_have_text("completed", timeout=20_000)
    replay_id = page.url.rsplit("/", 1)[1]
    assert replay_id.startswith("run_") and replay_id != run_id
    await expect(page.locator(".marker-replay")).to_contain_text("live from step 1")
    await expect(page.locator('li[data-step="0"] .badge-recorded')).to_be_visible()
    await dash.shot("run-replay")
    status, replay = await stack.call("GET", f"/v1/runs/{replay_id}")
    assert status == 200 and replay["replayed_from"] == run_id and replay["replay_from_step"] == 1


async def test_a_built_in_loop_run_shows_its_model_calls_and_tool_arguments_and_result(
    dash: Dash, stack: Cloud
) -> None:
    async with running_http_tool() as tool:
        config = {
            "model": "gpt-4o-mini",
            "tools": [{"name": "weather", "description": "Today's weather", "url": tool.url,
                       "parameters": {"type": "object",
                                      "properties": {"city": {"type": "string"}}}}],
        }  # fmt: skip
        status, made = await stack.call(
            "POST", "/v1/agents", {"name": "Looped", "slug": "looped", "config": config}
        )
        assert status == 201, made
        stack.fake.script.extend([
            Reply(tool_calls=[ToolCall("weather", {"city": "Grenoble"})]),
            Reply(text="Sunny in Grenoble."),
        ])  # fmt: skip
        run_id = await stack.start("looped", input="Weather in Grenoble?")
        run = await stack.wait(run_id)
    assert run.status == "completed" and run.output == "Sunny in Grenoble.", run.error_message
    await dash.sign_in()
    page = dash.page
    await dash.goto(f"/runs/{run_id}")
    await expect(page.locator("#run-status")).to_have_text("completed")
    step = page.locator('li[data-step="0"]')
    await step.get_by_role("button").first.click()
    detail = step.locator(".step-detail")
    await expect(
        detail.get_by_role("heading", name="Model call 1: openai gpt-4o-mini")
    ).to_be_visible()
    await expect(detail.get_by_role("heading", name="Tool call: weather")).to_be_visible()
    await expect(detail.get_by_label("Tool input")).to_contain_text('"city": "Grenoble"')
    await expect(detail.get_by_label("Tool output")).to_contain_text('"sky": "sunny"')
    await detail.get_by_text("Response (").click()
    await expect(detail.get_by_label("Response")).to_contain_text("weather")
    answer = page.locator('li[data-step="1"]')
    await answer.get_by_role("button").first.click()
    await expect(answer.locator(".step-detail").get_by_label("Response")).to_contain_text(
        "Sunny in Grenoble."
    )
    await dash.shot("run-loop")


async def test_cancel_a_running_run(dash: Dash, stack: Cloud) -> None:
    await ensure_agent(stack, "slow", SLOW)
    await dash.sign_in()
    page = dash.page
    run_id = await stack.start("slow", input={"steps": 60, "pause": 0.3})
    await dash.goto(f"/runs/{run_id}")
    await expect(page.locator('li[data-step="0"]')).to_be_visible()
    await page.get_by_role("button", name="Cancel run").click()
    await page.get_by_role("button", name="Yes, cancel it").click()
    await expect(page.locator("#run-status")).to_have_text("cancelled", timeout=20_000)
    await expect(page.locator(".timeline")).to_contain_text("cancel requested")
    await expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    await dash.shot("run-cancelled")
    assert (await stack.wait(run_id)).status == "cancelled"


async def test_resume_a_run_with_a_larger_budget(dash: Dash, stack: Cloud) -> None:
    await ensure_agent(stack, "weather", AGENT, model="gpt-4o", budget_usd="1.00")
    run_id = await stack.start("weather", input={"question": "weather in Rome?"}, budget_cents=0)
    assert (await stack.wait(run_id)).status == "budget_exceeded"
    await dash.sign_in()
    page = dash.page
    await dash.goto(f"/runs/{run_id}")
    await expect(page.locator("#run-status")).to_have_text("budget exceeded")
    await expect(page.locator(".timeline .marker-budget")).to_be_visible()
    await dash.shot("run-over-budget")
    await page.get_by_label("New budget (cents)").fill("100")
    await page.get_by_role("button", name="Resume with this budget").click()
    await expect(page.locator("#run-status")).to_have_text("completed", timeout=20_000)
    await expect(page.locator('[data-fact="Budget"]')).to_have_text("$1.00")
    await expect(page.locator('li[data-step="2"]')).to_be_visible()


async def test_a_recovered_run_shows_where_its_attempt_was_lost(dash: Dash, stack: Cloud) -> None:
    await ensure_agent(stack, "crashy", CRASHY)
    run_id = await stack.start("crashy")
    run = await stack.wait(run_id)
    assert run.status == "completed" and run.attempt == 2, (run.status, run.error_message)
    await dash.sign_in()
    page = dash.page
    await dash.goto(f"/runs/{run_id}")
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator('[data-fact="Attempt"]')).to_have_text("2")
    recovery = page.locator(".waterfall .marker-recovery")
    await expect(recovery).to_contain_text("attempt 1 lost (agent_exit_3)")
    # The marker sits after the step that finished before the crash.
    before = await page.locator(".waterfall > li").evaluate_all(
        "items => items.map(li => li.dataset.step ?? li.className)"
    )
    assert before.index("0") < next(i for i, c in enumerate(before) if "recovery" in c), before
    await expect(page.locator(".timeline")).to_contain_text("attempt 2 started")
    await dash.shot("run-recovered")


async def test_the_login_link_signs_in_once(browser: Browser, stack: Cloud, tmp_path: Path) -> None:
    link = await login.login_link(stack.app[keys.STORE].pool, stack.url)
    assert link is not None and "#token=" in link
    context, dash = await open_dash(browser, stack.url, stack.key, tmp_path)
    try:
        page = dash.page
        await page.goto(link)
        await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
        await expect(page).to_have_url(dash.url + "/")  # the token left the address bar
        await expect(page.locator("#project-name")).to_have_text("default")
        stored = await page.evaluate("localStorage.getItem('papayya.session')")
        assert stored and "cpk_" in stored
        assert "cpk_" not in await page.content()  # the key is never rendered
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("heading", name="Sign in to Papayya")).to_be_visible()
        _, listed = await stack.call("GET", "/v1/projects")
        project = listed[0]["id"]
        _, keys_ = await stack.call("GET", f"/v1/projects/{project}/api-keys")
        dashboard_keys = [k for k in keys_ if k["name"] == "dashboard"]
        assert dashboard_keys and all(k["revoked_at"] for k in dashboard_keys)
        dash.allowed.append("400 (Bad Request)")  # the used link's refused exchange
        await page.goto(link)
        await expect(page.get_by_role("alert")).to_contain_text("already used")
        assert not dash.unexpected_errors(), dash.errors
    finally:
        await context.close()


async def test_a_phone_and_the_keyboard(browser: Browser, stack: Cloud, tmp_path: Path) -> None:
    await ensure_agent(stack, "slow", SLOW)
    run_id = await stack.start("slow", input={"steps": 3, "pause": 0.05})
    await stack.wait(run_id)
    context, dash = await open_dash(browser, stack.url, stack.key, tmp_path, viewport=PHONE)
    try:
        page = dash.page
        await dash.goto("/login")
        await expect(page.get_by_label("API key")).to_be_focused()
        await page.keyboard.type(dash.key)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
        await dash.shot("phone-overview")
        runs_link = page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs")
        for _ in range(10):  # the page's content has the focus: back up to the Runs link
            await page.keyboard.press("Shift+Tab")
            if await runs_link.evaluate("a => a === document.activeElement"):
                break
        await expect(runs_link).to_be_focused()
        outline = await runs_link.evaluate("a => getComputedStyle(a).outlineStyle")
        assert outline not in ("none", ""), outline  # a visible focus ring
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
        await dash.shot("phone-runs")
        await dash.goto(f"/runs/{run_id}")
        await expect(page.locator("#run-status")).to_have_text("completed")
        toggle = page.locator('li[data-step="1"]').get_by_role("button").first
        await toggle.focus()
        await page.keyboard.press("Enter")
        await expect(toggle).to_have_attribute("aria-expanded", "true")
        await expect(page.get_by_role("heading", name="Checkpoint: step-1")).to_be_visible()
        await dash.shot("phone-run")
        for path in ("/", "/runs", f"/runs/{run_id}", "/cost", "/agents", "/schedules"):
            await dash.goto(path)
            await expect(page.locator("main h1")).to_be_visible()
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, (path, overflow)  # nothing wider than the phone's screen
        assert not dash.unexpected_errors(), dash.errors
    finally:
        await context.close()
