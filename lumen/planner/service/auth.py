"""Bearer-token check for the planner server (a gRPC server interceptor).

A call must carry ``authorization: Bearer <token>`` metadata; otherwise it ends with
UNAUTHENTICATED before reaching the servicer, and before its request is decoded (the refusing
handler takes the raw bytes, which the server's message-size cap bounds). Health checks are
exempt so that load balancers and orchestrators can probe the server without the token; the
token is compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

#: Methods callable without the token (prefix match on the full method name).
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); it must not be empty."""
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse calls without the right bearer token (module docstring)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._expected = f"Bearer {token}".encode()

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        method: str = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES) or self._authorized(
            handler_call_details.invocation_metadata
        ):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        return None if handler is None else _refusing(handler)


def _deny(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def _refusing(handler: Any) -> Any:
    """A handler of the same shape as ``handler`` that refuses the call."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attr, make in kinds:
        if getattr(handler, attr) is not None:
            # No request deserializer: the refused request is never decoded.
            return make(_deny, response_serializer=handler.response_serializer)
    return handler
