"""``papayya schedules`` and ``papayya webhooks`` as a user types them, against a running
server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from typing import Any

from papayya.triggers.firing import start_scheduled_run
from papayya.triggers.scheduler import Scheduler
from tests.support.api import Api, create_agent
from tests.support.db import db_fetch
from web import keys


async def cli(api: Api, *args: str, **env: str) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    environment.update(PAPAYYA_BASE_URL=api.url, PAPAYYA_API_KEY=api.key, **env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


async def test_schedules_commands(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "digest")
    code, out, err = await cli(
        api, "schedules", "create", "--agent", "digest", "--cron", "*/5 * * * *",
        "--timezone", "Europe/Paris", "--input", '{"q": 1}', "--budget-cents", "30",
    )  # fmt: skip
    assert code == 0, err
    schedule = json.loads(out)
    sid = schedule["id"]
    assert schedule["budget_cents"] == 30 and schedule["input"] == {"q": 1}
    assert len(schedule["next_fire_times"]) == 5
    code, out, _ = await cli(api, "schedules", "list", "--agent", "digest")
    assert code == 0 and sid in out and "*/5 * * * *" in out and "enabled" in out
    code, out, _ = await cli(api, "schedules", "get", sid)
    assert json.loads(out)["id"] == sid

    code, out, err = await cli(
        api, "schedules", "update", sid, "--cron", "0 * * * *", "--overlap", "allow"
    )
    assert code == 0, err
    changed = json.loads(out)
    assert changed["cron_expression"] == "0 * * * *" and changed["overlap_policy"] == "allow"
    code, _, err = await cli(api, "schedules", "update", sid)
    assert code == 2 and "nothing to change" in err
    code, out, _ = await cli(api, "schedules", "disable", sid)
    assert code == 0 and "paused" in out
    code, out, _ = await cli(api, "schedules", "enable", sid)
    assert code == 0 and "enabled" in out

    # A fire, so that `fires` has something to show.
    [row] = await db_fetch(dsn, "SELECT next_fire_at FROM schedules WHERE schedule_id = $1", sid)
    store = api.app[keys.STORE]
    moment = row["next_fire_at"] + timedelta(seconds=1)
    [fire] = await Scheduler(store, start_scheduled_run(store), clock=lambda: moment).tick()
    code, out, _ = await cli(api, "schedules", "fires", sid)
    assert code == 0 and f"started  {fire.run_id}" in out

    code, out, _ = await cli(api, "schedules", "delete", sid)
    assert code == 0 and f"deleted {sid}" in out
    code, _, err = await cli(api, "schedules", "get", sid)
    assert code == 1 and "not found" in err


async def test_schedules_bad_input_is_clear(api: Api, http: Any) -> None:
    await create_agent(api, http, "picky")
    for args, message in [
        (("--cron", "61 * * * *"), "minute: 61 is not from 0 to 59"),
        (("--cron", "* * *"), "has 3 fields"),
        (("--cron", "@daily", "--timezone", "Mars/Olympus"), "unknown timezone"),
        (("--cron", "@daily", "--budget-usd", "-1"), "-1"),
    ]:
        code, _, err = await cli(api, "schedules", "create", "--agent", "picky", *args)
        assert code != 0 and message in err, err
    code, _, err = await cli(api, "schedules", "create", "--agent", "nobody", "--cron", "@daily")
    assert code == 1 and "agent nobody not found" in err


async def test_webhooks_commands(api: Api, http: Any) -> None:
    await create_agent(api, http, "hooked")
    code, out, err = await cli(api, "webhooks", "create", "--agent", "hooked", "--name", "ci")
    assert code == 0 and "shown again" in err
    hook = json.loads(out)
    hid, secret = hook["id"], hook["secret"]
    code, out, _ = await cli(api, "webhooks", "list", "--agent", "hooked")
    assert code == 0 and hid in out and hook["trigger_url"] in out and secret not in out

    code, out, err = await cli(
        api, "webhooks", "test", hid, "--secret", secret, "--data", '{"x": 1}'
    )
    assert code == 0, err
    run = json.loads(out)
    assert run["trigger"] == "webhook" and run["input"] == {"x": 1}
    code, out, err = await cli(
        api, "webhooks", "test", hid, "--data", "plain words", PAPAYYA_WEBHOOK_SECRET=secret
    )
    assert code == 0 and json.loads(out)["input"] == "plain words", err

    code, _, err = await cli(api, "webhooks", "test", hid)
    assert code == 2 and "PAPAYYA_WEBHOOK_SECRET" in err
    code, _, err = await cli(api, "webhooks", "test", hid, "--secret", "hunter2")
    assert code == 2 and "whsec_" in err
    code, out, _ = await cli(api, "webhooks", "rotate", hid)
    rotated = json.loads(out)["secret"]
    assert code == 0 and rotated != secret
    code, _, err = await cli(api, "webhooks", "test", hid, "--secret", secret)
    assert code == 1 and "signature" in err
    code, _, err = await cli(api, "webhooks", "test", hid, "--secret", rotated)
    assert code == 0, err

    code, out, _ = await cli(api, "webhooks", "delete", hid)
    assert code == 0 and f"deleted {hid}" in out
    code, _, err = await cli(api, "webhooks", "test", hid, "--secret", rotated)
    assert code == 1 and "not found" in err
    code, _, err = await cli(api, "webhooks", "create", "--agent", "nobody", "--name", "x")
    assert code == 1 and "not found" in err
