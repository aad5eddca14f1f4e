"""The admin web page at `/admin`: static files, open to anyone, because they hold no data.

What the page shows it reads from `/health` and the admin API with the admin key the user types,
kept in the tab's sessionStorage; so serving the page needs no key, and the API's checks stay the
only ones. The headers keep the page from running anything but its own script and from being
framed by another site (a clickjacked "Revoke" button).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

PAGE_PATHS = ("/admin", "/admin/")
ASSET_PREFIX = "/admin/ui/"
_TYPES = {"admin.js": "text/javascript; charset=utf-8", "admin.css": "text/css; charset=utf-8"}
_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("chatbridge.api").joinpath("static", name).read_bytes()


def is_page(path: str) -> bool:
    """The page and its assets: served without a key (`auth.key_kind`)."""
    return path in PAGE_PATHS or (path.startswith(ASSET_PREFIX) and path[len(ASSET_PREFIX):] in _TYPES)


def install(app: FastAPI) -> None:
    page = _read("admin.html")
    assets = {name: _read(name) for name in _TYPES}

    async def admin_page(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def admin_asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:  # answered as every unknown admin route is (`app._install_error_handlers`)
            raise HTTPException(404)
        return Response(assets[name], media_type=_TYPES[name], headers=_HEADERS)

    for path in PAGE_PATHS:
        app.add_api_route(path, admin_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(ASSET_PREFIX + "{name}", admin_asset, methods=["GET"], include_in_schema=False)
