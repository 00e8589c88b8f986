"""A local run (the research agent in its own process, HTTP mode) on the dashboard: its
checkpoints with their results, its model call, and its cost against its budget."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.async_api import expect

from tests.support.browser import Dash
from tests.support.cloud import Cloud
from tests.support.localpath import RESEARCH_AGENT, run_script, script_env

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_local_run_page_shows_its_checkpoints_model_call_and_cost(
    dash: Dash, stack: Cloud
) -> None:
    env = script_env(PAPAYYA_BASE_URL=stack.url, PAPAYYA_API_KEY=stack.key)
    code, out, err = await run_script(RESEARCH_AGENT, "local-dash", "tides", env=env)
    assert (code, err) == (0, ""), out
    status, doc = await stack.call("GET", "/v1/durable/runs/local-dash")
    assert status == 200, doc
    await dash.sign_in()
    page = dash.page
    await dash.goto(f"/runs/{quote(doc['id'], safe='')}")
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator('dd[data-fact="Budget"]')).to_have_text("$0.50")
    await expect(
        page.get_by_role("img", name="Cumulative cost per step against the budget")
    ).to_be_visible()
    search = page.locator('li[data-step="0"]')
    await search.get_by_role("button").first.click()
    detail = search.locator(".step-detail")
    await expect(detail.get_by_role("heading", name="Checkpoint: search")).to_be_visible()
    await expect(detail.get_by_label("Checkpoint result")).to_contain_text("tides: an overview")
    model = page.locator('li[data-step="1"]')
    await model.get_by_role("button").first.click()
    await expect(
        model.locator(".step-detail").get_by_role(
            "heading", name="Model call 1: openai gpt-4o-mini"
        )
    ).to_be_visible()
    assert not dash.unexpected_errors()
    await dash.shot("local-run")
