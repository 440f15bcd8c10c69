"""The planner service: the online controller, the gRPC servicer, server and client.

``controller`` keeps the cluster view and makes plans without gRPC; ``broadcast``, ``errors``,
``auth`` and ``metrics`` are its helpers. ``servicer``, ``wire``, ``server`` and ``client`` are
the gRPC adapters, the only modules here that import generated stubs (tests/test_proto.py).
Plans in cluster ids (:mod:`lumen.planner.decisions`) are domain words shared with the gateway
and the CLI, so they live outside this package.
"""
