"""A run's output: what its agent wrote to stdout and stderr (and its logging), by attempt,
which ``papayya runs logs`` interleaves with the run's steps."""

from __future__ import annotations

from aiohttp import web

from papayya.models import RunLogsOut, run_logs_out
from web import http
from web.openapi import api
from web.routes.run_detail import _events as run_events


@api.route(
    "GET", "/v1/runs/{id}/logs",
    "The agent's output (stdout, stderr and its logging), oldest first, each line with when "
    "it was read and its attempt; a running attempt's is recorded every few seconds, and "
    "`attempts` lists those whose output is all recorded",
    response=RunLogsOut, tag="runs",
)  # fmt: skip
async def run_logs(request: web.Request) -> web.Response:
    _, events = await run_events(request)  # another project's run answers as a missing one
    return http.json(run_logs_out(events))
