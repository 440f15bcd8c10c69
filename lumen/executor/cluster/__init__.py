"""A local cluster on loopback and the harness that measures it (docs/cluster.md).

- :mod:`~lumen.executor.cluster.launcher`: the planner service, N worker processes and the
  gateway, each its own process; SIGKILL and restart of a worker;
- :mod:`~lumen.executor.cluster.loadgen`: an open-loop load generator for the gateway's
  completions endpoint;
- :mod:`~lumen.executor.cluster.run`: one policy's run (workload, failure injection,
  measurements).

Importing this package imports nothing (no torch); each module is imported on its own.
"""
