"""The dashboard: one HTML page for every dashboard path, and its static assets.

The page holds no data and no secret: its scripts sign in with an API key kept in the browser
and read everything from the REST API. These routes are left out of ``/openapi.json`` on
purpose: they serve HTML and files, not the JSON API that the document describes (and that the
dashboard itself calls). A strict Content-Security-Policy allows only this server's own
scripts, styles and connections: no inline script or style, no frames, no other origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from papayya.errors import NotFound

ROOT: Final = Path(__file__).parents[1] / "dashboard"
# The single-page app's paths; each answers the same page, whose router draws the view.
PAGES: Final = (
    "/",
    "/login",
    "/runs",
    "/runs/{id}",
    "/cost",
    "/agents",
    "/agents/{id}",
    "/schedules",
    "/webhooks",
)
CSP: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # No build step, so no hashed file names: revalidate (ETag) on every load.
    "Cache-Control": "no-cache",
}
TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


def asset_files(root: Path = ROOT) -> dict[str, Path]:
    """The files that may be served, by their path under ``/assets/``: only these, so no
    request path can reach outside the directory."""
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in TYPES and p.name != "index.html"
    }


def _file(path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": TYPES[path.suffix]})


def install(app: web.Application, root: Path = ROOT) -> None:
    """Add the dashboard's routes to ``app`` (after the API's, which they never shadow)."""
    files = asset_files(root)
    index = root / "index.html"

    async def page(request: web.Request) -> web.FileResponse:
        return _file(index)

    async def asset(request: web.Request) -> web.FileResponse:
        path = files.get(request.match_info["path"])
        if path is None:
            raise NotFound(f"no dashboard asset {request.match_info['path']}")
        return _file(path)

    for route in PAGES:
        app.router.add_get(route, page)
    app.router.add_get("/assets/{path:.+}", asset)
