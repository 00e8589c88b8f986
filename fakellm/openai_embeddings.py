"""OpenAI ``POST /v1/embeddings``: unit vectors hashed from the input, as floats or base64.

The official SDK asks for base64 unless told otherwise (little-endian float32), so both forms
matter.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from aiohttp import web

from fakellm import http
from fakellm.errors import ProviderError
from fakellm.state import FAKE
from fakellm.turn import count_tokens

routes = web.RouteTableDef()


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    body = await http.json_body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProviderError(400, "you must provide a model parameter", param="model")
    inputs = _inputs(body.get("input"))
    dimensions = body.get("dimensions") or fake.config.embedding_dimensions
    if not isinstance(dimensions, int) or dimensions < 1:
        raise ProviderError(400, "Invalid 'dimensions': must be a positive integer.")
    await fake.admit("openai", model)
    as_base64 = body.get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector(x, dimensions), as_base64)}
        for i, x in enumerate(inputs)
    ]
    tokens = fake.config.usage.prompt_tokens
    if tokens is None:
        tokens = sum(len(x) if isinstance(x, list) else count_tokens(x) for x in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return http.json({"object": "list", "data": data, "model": model, "usage": usage})


def vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector for ``item``: equal inputs embed equally."""
    seed = item if isinstance(item, str) else ",".join(map(str, item))
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{block}:{seed}".encode()).digest()
        raw.extend(b / 127.5 - 1.0 for b in digest)
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        return list(value)
    raise ProviderError(
        400,
        "Missing or invalid parameter: 'input'.",
        code="missing_required_parameter" if value is None else None,
        param="input",
    )


def _encoded(values: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
