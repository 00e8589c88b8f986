"""The project's callback signing secret: verify a callback as a Standard Webhooks message
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) with it."""

from __future__ import annotations

import msgspec
from aiohttp import web

from web import http, keys
from web.openapi import api


class CallbackSecret(msgspec.Struct):
    secret: str


@api.route(
    "GET", "/v1/callbacks/secret",
    "The whsec_ secret that signs this project's run callbacks (made on first use)",
    response=CallbackSecret, tag="callbacks",
)  # fmt: skip
async def get_secret(request: web.Request) -> web.Response:
    secret = await request.app[keys.SECRETS].callbacks(http.project_id(request))
    return http.json(CallbackSecret(secret))


@api.route(
    "POST", "/v1/callbacks/secret/rotate",
    "Replace the callback signing secret; callbacks sent from now on use the new one",
    response=CallbackSecret, tag="callbacks",
)  # fmt: skip
async def rotate_secret(request: web.Request) -> web.Response:
    secret = await request.app[keys.SECRETS].callbacks(http.project_id(request), rotate=True)
    return http.json(CallbackSecret(secret))
