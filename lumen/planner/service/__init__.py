"""The planner service: the online controller's helpers, the gRPC server and its hygiene.

The domain-facing parts (``outcomes``, ``errors``, ``broadcast``, ``auth``, ``metrics``) never
import generated stubs; ``wire`` and ``server`` are gRPC adapters (see tests/test_proto.py).
"""
