"""Schedules over HTTP: create, read, list, pause and resume, change, delete, fires; keys,
isolation between projects, and bad input that writes nothing."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.support.api import SCHEDULE, Api, call, create_agent, create_schedule, new_project, page
from tests.support.db import db_fetch


async def test_create_read_list(api: Api, http: Any) -> None:
    agent = await create_agent(api, http, "reporter")
    before = datetime.now(UTC)
    schedule = await create_schedule(
        api, http, "reporter", input={"report": "daily"}, budget_cents=25, max_steps=4
    )
    assert schedule["id"].startswith("sch_") and schedule["agent_id"] == agent["id"]
    assert schedule["input"] == {"report": "daily"} and schedule["budget_cents"] == 25
    assert schedule["overlap_policy"] == "skip" and schedule["catchup_policy"] == "latest"
    assert schedule["enabled"] is True and schedule["last_run_id"] is None
    fires = [datetime.fromisoformat(f) for f in schedule["next_fire_times"]]
    assert len(fires) == 5 and fires == sorted(fires) and fires[0] > before
    paris = ZoneInfo("Europe/Paris")
    for fire in fires:
        local = fire.astimezone(paris)
        assert (local.hour, local.minute) == (9, 0) and local.isoweekday() <= 5
        assert fire.utcoffset() == local.utcoffset()  # shown in the schedule's timezone

    status, got = await call(api, http, "GET", f"/v1/schedules/{schedule['id']}")
    assert status == 200 and got == schedule
    other = await create_schedule(api, http, agent["id"], cron_expression="@hourly")
    await create_agent(api, http, "quiet")
    await create_schedule(api, http, "quiet", timezone="UTC")
    status, listed = await call(api, http, "GET", "/v1/agents/reporter/schedules")
    assert [s["id"] for s in listed] == [other["id"], schedule["id"]]
    listed, more = await page(api, http, "/v1/schedules")
    assert len(listed) == 3 and more is None
    everything = [s["id"] for s in listed]
    status, listed = await call(api, http, "GET", f"/v1/schedules?agent_id={agent['id']}")
    assert {s["id"] for s in listed} == {schedule["id"], other["id"]}
    status, listed = await call(api, http, "GET", "/v1/schedules?agent_id=reporter")
    assert {s["id"] for s in listed} == {schedule["id"], other["id"]}
    status, listed = await call(api, http, "GET", "/v1/schedules?agent_id=nobody")
    assert status == 200 and listed == []

    first, more = await page(api, http, "/v1/schedules", limit=2)
    assert len(first) == 2 and more
    second, more = await page(api, http, "/v1/schedules", cursor=more)
    assert [s["id"] for s in first + second] == everything
    assert more is None
    status, _ = await call(api, http, "GET", "/v1/schedules?cursor=garbage")
    assert status == 400


async def test_pause_resume_change_delete(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "nightly")
    schedule = await create_schedule(api, http, "nightly", cron_expression="*/5 * * * *")
    sid = schedule["id"]
    # Paused: no next fires, and the scheduler's row is not due any more.
    status, paused = await call(api, http, "PATCH", f"/v1/schedules/{sid}", {"enabled": False})
    assert status == 200 and paused["enabled"] is False and paused["next_fire_times"] == []
    # Resuming does not catch up the time it was paused: the next fire is from now.
    old = datetime.now(UTC) - timedelta(days=3)
    await db_fetch(dsn, "UPDATE schedules SET next_fire_at = $1 WHERE schedule_id = $2", old, sid)
    status, resumed = await call(api, http, "PATCH", f"/v1/schedules/{sid}", {"enabled": True})
    assert status == 200 and len(resumed["next_fire_times"]) == 5
    [row] = await db_fetch(dsn, "SELECT next_fire_at FROM schedules WHERE schedule_id = $1", sid)
    assert row["next_fire_at"] > datetime.now(UTC) - timedelta(seconds=1)
    assert row["next_fire_at"] == datetime.fromisoformat(resumed["next_fire_times"][0])

    change = {
        "cron_expression": "0 6 * * *", "timezone": "Asia/Tokyo", "input": "hello",
        "max_steps": 9, "budget_cents": None, "overlap_policy": "allow", "catchup_policy": "all",
    }  # fmt: skip
    status, changed = await call(api, http, "PATCH", f"/v1/schedules/{sid}", change)
    assert status == 200, changed
    assert {k: changed[k] for k in change} == change
    local = datetime.fromisoformat(changed["next_fire_times"][0])
    assert (local.hour, local.utcoffset()) == (6, timedelta(hours=9))
    status, same = await call(api, http, "PATCH", f"/v1/schedules/{sid}", {})
    assert status == 200 and same["updated_at"] == changed["updated_at"]

    status, fires = await call(api, http, "GET", f"/v1/schedules/{sid}/fires")
    assert status == 200 and fires == []
    status, deleted = await call(api, http, "DELETE", f"/v1/schedules/{sid}")
    assert status == 200 and deleted["id"] == sid
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/fires")]:
        status, error = await call(api, http, method, f"/v1/schedules/{sid}{path}")
        assert status == 404 and error["error"]["code"] == "not_found"
    assert await db_fetch(dsn, "SELECT * FROM schedules") == []


async def test_invalid_cron_or_timezone_says_why(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "strict")
    cases = [
        ({"cron_expression": "61 * * * *"}, "invalid_cron", "minute: 61 is not from 0 to 59"),
        ({"cron_expression": "* * * *"}, "invalid_cron", "has 4 fields"),
        ({"cron_expression": "0 0 30 2 *"}, "invalid_cron", "never fires"),
        ({"cron_expression": "0 0 L * *"}, "invalid_cron", "'L' is not a number"),
        ({"timezone": "Mars/Olympus"}, "invalid_timezone", "unknown timezone 'Mars/Olympus'"),
        ({"timezone": "EST5EDT "}, "invalid_timezone", "unknown timezone"),
    ]
    for change, code, reason in cases:
        async with http.post(
            f"{api.url}/v1/agents/strict/schedules",
            json={**SCHEDULE, **change},
            headers=api.headers(),
        ) as resp:
            assert resp.status == 400, change
            error = (await resp.json())["error"]
            assert error["code"] == code and reason in error["message"], error
    schedule = await create_schedule(api, http, "strict")
    for change, code, reason in cases:
        status, body = await call(api, http, "PATCH", f"/v1/schedules/{schedule['id']}", change)
        assert (
            status == 400 and body["error"]["code"] == code and reason in body["error"]["message"]
        )
    [row] = await db_fetch(dsn, "SELECT cron_expression, timezone FROM schedules")
    assert tuple(row) == (SCHEDULE["cron_expression"], SCHEDULE["timezone"])


async def test_key_required(api: Api, http: Any) -> None:
    await create_agent(api, http, "locked")
    schedule = await create_schedule(api, http, "locked")
    sid = schedule["id"]
    for method, path in [
        ("POST", "/v1/agents/locked/schedules"),
        ("GET", "/v1/agents/locked/schedules"),
        ("GET", "/v1/schedules"),
        ("GET", f"/v1/schedules/{sid}"),
        ("PATCH", f"/v1/schedules/{sid}"),
        ("DELETE", f"/v1/schedules/{sid}"),
        ("GET", f"/v1/schedules/{sid}/fires"),
    ]:
        async with http.request(method, api.url + path, json={"enabled": False}) as resp:
            assert resp.status == 401, (method, path)
            assert (await resp.json())["error"]["code"] == "unauthorized"
    status, still = await call(api, http, "GET", f"/v1/schedules/{sid}")
    assert status == 200 and still == schedule


async def test_other_projects_schedules_are_not_found(api: Api, http: Any, dsn: str) -> None:
    _, other_key = await new_project(api, http)
    await create_agent(api, http, "mine")
    await create_agent(api, http, "theirs", key=other_key)
    mine = await create_schedule(api, http, "mine")
    theirs = await create_schedule(api, http, "theirs", key=other_key)
    for key, schedule, agent in [(api.key, theirs, "theirs"), (other_key, mine, "mine")]:
        sid = schedule["id"]
        for method, path, body in [
            ("GET", f"/v1/schedules/{sid}", None),
            ("PATCH", f"/v1/schedules/{sid}", {"enabled": False}),
            ("DELETE", f"/v1/schedules/{sid}", None),
            ("GET", f"/v1/schedules/{sid}/fires", None),
            ("POST", f"/v1/agents/{agent}/schedules", SCHEDULE),
            ("POST", f"/v1/agents/{schedule['agent_id']}/schedules", SCHEDULE),
            ("GET", f"/v1/agents/{schedule['agent_id']}/schedules", None),
        ]:
            status, error = await call(api, http, method, path, body, key=key)
            assert status == 404, (method, path)
            assert error["error"]["code"] == "not_found"
        status, listed = await call(api, http, "GET", "/v1/schedules", key=key)
        assert sid not in {s["id"] for s in listed}
    rows = await db_fetch(dsn, "SELECT schedule_id, enabled FROM schedules ORDER BY 1")
    assert sorted((r["schedule_id"], r["enabled"]) for r in rows) == sorted(
        [(mine["id"], True), (theirs["id"], True)]
    )


async def test_bad_bodies_write_nothing(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "steady")
    schedule = await create_schedule(api, http, "steady")
    h = {**api.headers(), "Content-Type": "application/json"}
    good = b'"cron_expression": "* * * * *", "timezone": "UTC"'
    create_cases = [
        (b"", 400),
        (b"{not json", 400),
        (b"[]", 400),
        (b"{" + good + b', "extra": 1}', 400),
        (b'{"cron_expression": "* * * * *", "timezone": null}', 400),  # UTC if left out
        (b'{"timezone": "UTC"}', 400),
        (b"{" + good + b', "overlap_policy": "queue"}', 400),
        (b"{" + good + b', "catchup_policy": "some"}', 400),
        (b"{" + good + b', "max_steps": 0}', 400),
        (b"{" + good + b', "budget_cents": -1}', 400),
        (b"{" + good + b', "enabled": "yes"}', 400),
        (b'{"cron_expression": "* * * * *\\u0000", "timezone": "UTC"}', 400),
        (b"{" + good + b', "input": "a\\u0000b"}', 400),
        (b'{"cron_expression": 5, "timezone": "UTC"}', 400),
        (b"{" + good + b', "input": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413),
        (b"{" + good + b', "input": "' + b"x" * (300 * 1024) + b'"}', 413),  # too big a run
    ]
    for raw, status in create_cases:
        async with http.post(
            f"{api.url}/v1/agents/steady/schedules", data=io.BytesIO(raw), headers=h
        ) as resp:
            assert resp.status == status, (raw[:80], await resp.text())
            assert "error" in await resp.json()
    patch_cases = [
        (b"{not json", 400),
        (b'{"enabled": true, "extra": 1}', 400),
        (b'{"enabled": null}', 400),
        (b'{"overlap_policy": null}', 400),
        (b'{"max_steps": 0}', 400),
        (b'{"input": "a\\u0000b"}', 400),
    ]
    for raw, status in patch_cases:
        async with http.patch(
            f"{api.url}/v1/schedules/{schedule['id']}", data=io.BytesIO(raw), headers=h
        ) as resp:
            assert resp.status == status, (raw[:80], await resp.text())
    rows = await db_fetch(dsn, "SELECT schedule_id, updated_at FROM schedules")
    assert [r["schedule_id"] for r in rows] == [schedule["id"]]
    assert rows[0]["updated_at"] == datetime.fromisoformat(schedule["updated_at"])
    for path in ["/v1/schedules/%00", "/v1/agents/%00/schedules"]:
        status, _ = await call(api, http, "GET", path)
        assert status == 404
    status, _ = await call(api, http, "GET", "/v1/schedules?limit=0")
    assert status == 400
