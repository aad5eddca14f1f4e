"""CORS for browser clients: Starlette's pure-ASGI middleware, in front of the key check.

A browser's preflight carries no key, so it is answered here before `GatewayApp` would refuse
it; every other answer (errors and streams included) gets the CORS headers on its way out.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from chatbridge.api.errors import ApiError

# Response headers a page may read: request ids (ours and the Anthropic SDK's), timing, rate limits.
EXPOSED_HEADERS = ("x-request-id", "request-id", "x-chatbridge-overhead-ms", "retry-after")


class GatewayCORS(CORSMiddleware):
    """Starlette's CORS with a refused preflight in the OpenAI error envelope, like every other refusal."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        what = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        error = ApiError(400, f"CORS preflight refused ({what}): not allowed by the gateway's CORS_ORIGINS.",
                         "invalid_request_error", "cors_not_allowed")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return Response(error.openai_body(), status_code=400, headers=headers, media_type="application/json")


def with_cors(app: ASGIApp, origins: list[str]) -> ASGIApp:
    """`app` behind CORS for `origins` (`*`: any); no middleware at all, so no cost, when there are none.

    Keys travel in headers, not cookies, so credentials stay disallowed and `*` is a plain wildcard.
    Private-network preflights (a public page calling a gateway on localhost or the LAN) are allowed:
    listing an origin is the operator's consent.
    """
    if not origins:
        return app
    return GatewayCORS(app, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                       expose_headers=EXPOSED_HEADERS, allow_private_network=True, max_age=600)
