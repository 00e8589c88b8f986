"""Routes declared once, with the types of their bodies and answers, so that ``/openapi.json``
is generated from the same msgspec types that decode requests."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiohttp import web

from papayya import __version__
from web.http import ErrorBody

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# "signature": a Standard Webhooks signature, checked by the handler (webhook triggers).
Auth = Literal["api_key", "run_token", "signature", "none"]
_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth
    body: Any = None
    response: Any = None
    status: int = 200
    query: tuple[tuple[str, str], ...] = ()
    tag: str = "api"
    content_type: str = "application/json"
    # Error answers besides the ones every route may give: (status, when).
    errors: tuple[tuple[int, str], ...] = ()


@dataclass
class Api:
    routes: list[Route] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        auth: Auth = "api_key",
        body: Any = None,
        response: Any = None,
        status: int = 200,
        query: tuple[tuple[str, str], ...] = (),
        tag: str = "api",
        content_type: str = "application/json",
        errors: tuple[tuple[int, str], ...] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            handler.papayya_auth = auth  # type: ignore[attr-defined]
            self.routes.append(
                Route(
                    method,
                    path,
                    handler,
                    summary,
                    auth,
                    body,
                    response,
                    status,
                    query,
                    tag,
                    content_type,
                    errors,
                )
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for r in self.routes:
            app.router.add_route(r.method, r.path, r.handler)

    def spec(self) -> dict[str, Any]:
        types = {t for r in self.routes for t in (r.body, r.response) if t is not None}
        types.add(ErrorBody)
        ordered = sorted(types, key=repr)
        schemas, components = msgspec.json.schema_components(
            ordered, ref_template="#/components/schemas/{name}"
        )
        refs = dict(zip(ordered, schemas, strict=True))
        paths: dict[str, dict[str, Any]] = {}
        for r in self.routes:
            path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", r.path)
            paths.setdefault(path, {})[r.method.lower()] = _operation(r, refs)
        return {
            "openapi": "3.1.0",
            "info": {"title": "Papayya API", "version": __version__},
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                    "bearer": {"type": "http", "scheme": "bearer"},
                },
            },
        }


def _operation(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    error = {"application/json": {"schema": refs[ErrorBody]}}
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        + [
            {"name": name, "in": "query", "required": False, "schema": {"type": kind}}
            for name, kind in route.query
        ],
        "responses": {
            str(route.status): {
                "description": "success",
                "content": {
                    route.content_type: {"schema": refs[route.response] if route.response else {}}
                },
            },
            "400": {"description": "bad input", "content": error},
            "404": {"description": "not found", "content": error},
            "409": {"description": "conflicts with the current state", "content": error},
            "413": {"description": "body too large", "content": error},
            "408": {"description": "the request came too slowly", "content": error},
        },
    }
    if any(name == "cursor" for name, _ in route.query):
        # Lists answer a bare array; the next page is in the headers, not the body.
        op["responses"][str(route.status)]["headers"] = {
            "Link": {
                "description": 'the next page, as `<url>; rel="next"`; absent on the last page',
                "schema": {"type": "string"},
            },
            "X-Next-Cursor": {
                "description": "the next page's `cursor`; absent on the last page",
                "schema": {"type": "string"},
            },
        }
    for status, when in route.errors:
        op["responses"][str(status)] = {"description": when, "content": error}
    if route.status == 201:
        # Creating endpoints are safe to retry: a repeat answers 200 with what exists.
        op["responses"]["200"] = {
            "description": "already existed (an idempotent repeat)",
            "content": op["responses"]["201"]["content"],
        }
    if route.auth == "api_key":
        op["security"] = [{"apiKey": []}, {"bearer": []}]
        op["responses"]["401"] = {"description": "no valid API key", "content": error}
    elif route.auth == "run_token":
        op["security"] = [{"bearer": []}]
        op["responses"]["401"] = {"description": "no valid run token", "content": error}
    elif route.auth == "signature":
        op["responses"]["401"] = {"description": "no valid signature", "content": error}
        op["responses"]["429"] = {"description": "rate limited", "content": error}
        op["responses"]["200"] = {
            "description": "a repeated webhook-id: the first request's answer",
            "content": op["responses"][str(route.status)]["content"],
        }
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[route.body]}},
        }
    return op


api = Api()
