"""The REST API's optional bearer token: every request but the liveness answer at `/` must carry
`Authorization: Bearer <token>`; the others get 401 in Merak's envelope."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

# Open without the token: `/` answers "OK" and nothing else (a probe's target, as Merak's was).
OPEN_PATHS = frozenset({"/"})
UNAUTHORIZED = "Unauthorized: send the API's token as Authorization: Bearer <token>"


def presented_token(request: Request) -> bytes:
    """The token of the request's `Authorization: Bearer …` header (b"" when there is none)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" else b""


def require_token(app: FastAPI, token: str) -> None:
    """Refuse every request without `token` (compared in constant time) with 401."""
    expected = token.encode()

    @app.middleware("http")
    async def bearer(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        if request.url.path in OPEN_PATHS or hmac.compare_digest(presented_token(request), expected):
            return await call_next(request)
        return JSONResponse(
            {"data": None, "message": UNAUTHORIZED, "status": "FAILED"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="merak"'},
        )
