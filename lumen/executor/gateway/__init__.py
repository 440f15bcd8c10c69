"""The gateway of the executor cluster (docs/gateway.md).

OpenAI-compatible completions over HTTP in front of worker processes: per-request token
histories, least-loaded dispatch, checkpoint holders chosen by the policy's placement rule,
failure detection by heartbeat and forward progress, and recovery planned by the planner
service (or locally when it is unreachable) so that a client's stream survives a worker's death
without a lost or repeated token.
"""

from lumen.executor.gateway.config import GatewayConfig
from lumen.executor.gateway.gateway import Gateway, GatewayError
from lumen.executor.gateway.health import HealthSettings
from lumen.executor.gateway.server import GatewayHTTPServer
from lumen.executor.gateway.tokenizer import ByteTokenizer

__all__ = [
    "ByteTokenizer",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayHTTPServer",
    "HealthSettings",
]
