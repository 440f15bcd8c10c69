"""A worker process: one engine behind the ``lumen.v1.Executor`` gRPC service.

The pieces, each in its own module (see docs/executor.md):

- :mod:`~lumen.executor.worker.api`: what the gateway and the launcher ask of a worker, in
  domain types (:class:`~lumen.executor.worker.api.WorkerAPI`);
- :mod:`~lumen.executor.worker.client`: that API over gRPC (an adapter), also the worker's
  client of its peers;
- :mod:`~lumen.executor.worker.store`: the host-memory checkpoint store;
- :mod:`~lumen.executor.worker.metrics`: Prometheus metrics;
- :mod:`~lumen.executor.worker.loop`: the engine step loop, in its own thread;
- :mod:`~lumen.executor.worker.streamer`: checkpoint pages to the holder, off the decode path;
- :mod:`~lumen.executor.worker.stages`: staged recovery and rate-limited weight loading;
- :mod:`~lumen.executor.worker.assist`: the assisting draft's proposals for its survivor;
- :mod:`~lumen.executor.worker.assist_link`: the survivor reached over gRPC (an adapter);
- :mod:`~lumen.executor.worker.core`: the worker (engine loop + store + stages + peers);
- :mod:`~lumen.executor.worker.servicer`, :mod:`~lumen.executor.worker.wire`,
  :mod:`~lumen.executor.worker.server`: the gRPC adapters (the only ones that import stubs,
  with :mod:`~lumen.executor.worker.client`);
- ``python -m lumen.executor.worker``: the process entry point.

Importing this package imports neither torch nor the stubs.
"""
