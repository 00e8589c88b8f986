"""Admin routes under ``/_fake/``, for tests and demos driving a fake in another process.

``GET|POST /_fake/config`` (POST takes a partial config and merges it), ``POST /_fake/script``
(one reply or a list, queued), ``GET /_fake/stats`` and ``POST /_fake/reset``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from fakellm import http
from fakellm.config import Reply
from fakellm.state import FAKE

routes = web.RouteTableDef()


@routes.get("/_fake/config")
async def get_config(request: web.Request) -> web.Response:
    return http.json(request.app[FAKE].config)


@routes.post("/_fake/config")
async def patch_config(request: web.Request) -> web.Response:
    patch = await _json(request)
    if not isinstance(patch, dict):
        return _invalid("expected a JSON object")
    try:
        config = request.app[FAKE].configure(patch)
    except msgspec.ValidationError as exc:
        return _invalid(str(exc))
    return http.json(config)


@routes.post("/_fake/script")
async def append_script(request: web.Request) -> web.Response:
    raw = await _json(request)
    try:
        replies = msgspec.convert(raw if isinstance(raw, list) else [raw], list[Reply])
    except msgspec.ValidationError as exc:
        return _invalid(str(exc))
    script = request.app[FAKE].script
    script.extend(replies)
    return http.json({"queued": len(script)})


@routes.get("/_fake/stats")
async def stats(request: web.Request) -> web.Response:
    return http.json(request.app[FAKE].stats.to_json())


@routes.post("/_fake/reset")
async def reset(request: web.Request) -> web.Response:
    request.app[FAKE].reset()
    return http.json({"reset": True})


async def _json(request: web.Request) -> Any:
    try:
        return msgspec.json.decode(await request.read())
    except msgspec.DecodeError as exc:
        body = msgspec.json.encode({"error": f"invalid JSON: {exc}"})
        raise web.HTTPBadRequest(body=body, content_type="application/json") from exc


def _invalid(message: str) -> web.Response:
    return http.json({"error": message}, status=400)
