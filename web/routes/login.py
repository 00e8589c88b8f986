"""One-time login links for the dashboard: ``papayya server`` prints one at start, and opening
it signs the browser in with a new API key of the project (named ``dashboard``).

A link is ``<base>/login#token=<token>``: the token rides in the fragment, which browsers never
send to a server or put in a Referer. The token is signed (HMAC-SHA256 with a server secret
made once per database) and holds the project, an expiry and a nonce, so making one writes
nothing. Exchanging it appends ``LoginLinkUsed`` to the stream ``login-<nonce>`` expecting no
stream, in the same transaction as the new key: the stream's version guard makes each link
work once, even under concurrent exchanges.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Final

import msgspec
from aiohttp import web

from eventstore.types import NewEvent
from papayya.database import server_secret
from papayya.errors import ConcurrencyError, InvalidInput, NotFound
from papayya.readmodels import Db
from papayya.readmodels.projects import first_project_id
from web import http, keys
from web.openapi import api

SECRET_NAME: Final = "login_links"
TTL_SECONDS: Final = 3600
VERSION: Final = "v1"
CATEGORY: Final = "login"
INVALID: Final = "this login link is invalid, expired or already used"
log = logging.getLogger(__name__)

Token = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class LoginExchange(msgspec.Struct, forbid_unknown_fields=True):
    """The token of a login link (what follows ``#token=``)."""

    token: Token


class LoginOut(msgspec.Struct):
    """A new API key of the link's project, shown this once."""

    api_key: str
    key_id: str
    project_id: str
    project_name: str


class _Claims(msgspec.Struct, frozen=True):
    project_id: str = msgspec.field(name="p")
    expires: int = msgspec.field(name="e")
    nonce: str = msgspec.field(name="n")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, f"{VERSION}.{body}".encode(), hashlib.sha256).digest())


def make_token(secret: bytes, project_id: str, now: float, ttl: int = TTL_SECONDS) -> str:
    claims = _Claims(project_id, int(now) + ttl, secrets.token_hex(16))
    body = _b64(msgspec.json.encode(claims))
    return f"{VERSION}.{body}.{_sign(secret, body)}"


def read_token(secret: bytes, token: str, now: float) -> _Claims:
    """The claims of a genuine, unexpired token; ``InvalidInput`` otherwise (400, as OAuth
    answers a bad, expired or used grant: the request carries no credential to refuse)."""
    version, _, rest = token.partition(".")
    body, _, signature = rest.partition(".")
    expected = _sign(secret, body).encode()
    if version != VERSION or not hmac.compare_digest(signature.encode(), expected):
        raise InvalidInput(INVALID)
    try:
        claims = msgspec.json.decode(_unb64(body), type=_Claims)
    except (ValueError, msgspec.DecodeError):
        raise InvalidInput(INVALID) from None
    if claims.expires < now or not claims.nonce.isalnum():
        raise InvalidInput(INVALID)
    return claims


async def login_link(pool: Db, base_url: str, now: float | None = None) -> str | None:
    """A link that signs in to the oldest project (``None`` before any project exists)."""
    project_id = await first_project_id(pool)
    if project_id is None:
        return None
    return _link(await server_secret(pool, SECRET_NAME), project_id, base_url, now)


def _link(secret: bytes, project_id: str, base_url: str, now: float | None = None) -> str:
    token = make_token(secret, project_id, time.time() if now is None else now)
    return f"{base_url.rstrip('/')}/login#token={token}"


def announce(base_url: str) -> Callable[[web.Application], Awaitable[None]]:
    """An ``on_startup`` hook (after the store is open) that prints a login link."""

    async def print_link(app: web.Application) -> None:
        project_id = await app[keys.PROJECTS].first_id()
        if project_id is not None:
            link = _link(await app[keys.SECRETS].server(SECRET_NAME), project_id, base_url)
            minutes = TTL_SECONDS // 60
            print(f"Dashboard: {link}  (signs in once, within {minutes} minutes)", flush=True)

    return print_link


@api.route(
    "POST", "/v1/dashboard/login",
    "Exchange a one-time login link's token for a new API key of its project",
    auth="none", body=LoginExchange, response=LoginOut, status=201, tag="projects",
)  # fmt: skip
async def exchange(request: web.Request) -> web.Response:
    req = await http.body(request, LoginExchange)
    projects = request.app[keys.PROJECTS]
    secret = await request.app[keys.SECRETS].server(SECRET_NAME)
    claims = read_token(secret, req.token, time.time())
    try:
        project = await projects.get(claims.project_id)
    except NotFound:
        raise InvalidInput(INVALID) from None
    used = NewEvent("LoginLinkUsed", {"project_id": project.id, "expires": claims.expires})
    stream = f"{CATEGORY}-{claims.nonce}"
    try:
        key = await projects.create_key_once(stream, used, project.id, "dashboard")
    except ConcurrencyError:
        raise InvalidInput(INVALID) from None
    log.info("a login link signed in to project %s as key %s", project.id, key.id)
    return http.json(LoginOut(key.key, key.id, project.id, project.name), 201)
