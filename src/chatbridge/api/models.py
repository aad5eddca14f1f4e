"""`/v1/models` in the shape of the asking client's API: Anthropic's when it sends `anthropic-version`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chatbridge.api import errors
from chatbridge.api.anthropic import models as anthropic_models
from chatbridge.api.openai import models as openai_models


def is_anthropic(request: Request) -> bool:
    """The shape (and error envelope) of an Anthropic client: decided where errors decide it."""
    return errors.is_anthropic(request.url.path, request.scope["headers"])


async def list_models(request: Request) -> Response:
    if is_anthropic(request):
        return await anthropic_models.list_models(request)
    return await openai_models.list_models(request)


async def get_model(request: Request) -> Response:
    if is_anthropic(request):
        return await anthropic_models.get_model(request)
    return await openai_models.get_model(request)
