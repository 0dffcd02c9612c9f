"""ASGI middleware refusing request bodies over a size limit with a JSON 413, before they are parsed."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from feature_pipelines.serving.errors import TooLargeError


class BodyLimit:
    """Refuse bodies over `max_bytes` with a JSON 413, before they are parsed.

    A declared Content-Length over the limit is refused before anything is read; a body
    without one (chunked) is counted as it streams in, and the read stops at the limit. (Used
    rather than FastAPI's `max_body_size`, which answers the first case in plain text.)
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = TooLargeError(
                f"request body of {int(declared)} bytes exceeds this server's limit of {self.max_bytes} bytes"
            )
            await JSONResponse(error.to_error_detail(), status_code=error.http_status)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Only an HTTPException passes through FastAPI's body parsing as itself (any
                    # other error there becomes a 400); its handler renders it as JSON.
                    raise HTTPException(
                        status_code=TooLargeError.http_status,
                        detail=f"request body exceeds this server's limit of {self.max_bytes} bytes",
                    )
            return message

        await self.app(scope, limited_receive, send)
