"""Two claims of one queued run: one starts it, and that one holds the lease.

A run can be claimed twice at once: a duplicate queue message (the dispatcher and the sweeper's
re-queue both enqueue it), read by two workers or twice by one. The claim that loses used to
delete the lease, or to leave it in its own name, which the winner never renews: either way
the run went on running with no lease, and was stranded (or declared lost while alive). Seen
under ``make chaos`` (issue 14 §7).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cloud import Cloud, running_cloud
from web import keys
from workers.worker import Worker

pytestmark = pytest.mark.timeout(60)

AGENT = """
from papayya import agent

@agent
def idle(input):
    return input
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as running:
        yield running


async def lease_of(cloud: Cloud, run_id: str) -> tuple[int, str] | None:
    row = await cloud.app[keys.STORE].pool.fetchrow(
        "SELECT attempt, worker FROM run_leases WHERE run_id = $1", run_id
    )
    return None if row is None else (row["attempt"], row["worker"])


async def claim_twice(cloud: Cloud, first: Worker, second: Worker) -> tuple[str, str]:
    """Queue a run and claim it with both workers at once; the run and the winner's name."""
    await cloud.register("idle", AGENT)
    run_id = await cloud.start("idle")
    claims = await asyncio.gather(first._claim(run_id), second._claim(run_id))
    won = [
        worker for worker, claim in zip((first, second), claims, strict=True) if claim is not None
    ]
    assert len(won) == 1, claims
    return run_id, won[0].name


async def test_a_duplicate_claim_in_one_worker_leaves_the_lease_to_the_run(cloud: Cloud) -> None:
    worker = cloud.in_process_worker()
    run_id, winner = await claim_twice(cloud, worker, worker)
    state = await cloud.runs.load(run_id)
    assert (state.status, state.attempt) == ("running", 1)
    assert await lease_of(cloud, run_id) == (1, winner)


async def test_of_two_workers_claiming_one_run_the_one_that_started_it_holds_the_lease(
    cloud: Cloud,
) -> None:
    first = cloud.in_process_worker()
    second = cloud.in_process_worker()
    assert first.name != second.name
    run_id, winner = await claim_twice(cloud, first, second)
    # The winner's heartbeat renews only leases in its own name: this one must be.
    assert await lease_of(cloud, run_id) == (1, winner)


async def test_a_claim_that_loses_to_a_cancel_gives_its_lease_back(cloud: Cloud) -> None:
    await cloud.register("idle", AGENT)
    run_id = await cloud.start("idle")
    worker = cloud.in_process_worker()
    state = await cloud.runs.load(run_id)
    status, body = await cloud.call("POST", f"/v1/runs/{run_id}/cancel")
    assert status in (200, 202), body
    # The claim was decided on the queued state it read before the cancel committed.
    await cloud.app[keys.STORE].pool.execute(
        "INSERT INTO run_leases (run_id, attempt, worker, expires_at) VALUES ($1, $2, $3, now())",
        run_id, state.attempt + 1, worker.name,
    )  # fmt: skip
    await worker._release_claim(run_id, state.attempt + 1)
    assert await lease_of(cloud, run_id) is None
