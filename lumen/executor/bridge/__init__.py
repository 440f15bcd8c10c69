"""The bridge from the live cluster to the simulator (docs/cluster.md).

- :mod:`~lumen.executor.bridge.calibrate`: measures the workers' model on this machine;
- :mod:`~lumen.executor.bridge.prediction`: turns that measurement into a cost model and runs
  the simulator's prediction of a live run (the only executor module that uses the simulator).

Importing this package imports nothing (no torch, no simulator); each module is imported on its
own.
"""
