"""Errors a worker raises at its boundary; the servicer maps each to one status code.

No gRPC import here: the table lives in :mod:`lumen.executor.worker.servicer`. The checkpoint
store's own errors (:class:`~lumen.executor.worker.store.BudgetExceededError`,
:class:`~lumen.executor.worker.store.NotReservedError`) are mapped there too.
"""

from __future__ import annotations

__all__ = ["InvalidField", "NotReady", "WorkerError", "WorkerStopping"]


class WorkerError(Exception):
    """Base class: ``path`` names the offending field (empty when the whole call is at fault)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class InvalidField(WorkerError):
    """Malformed or out-of-range input (INVALID_ARGUMENT)."""


class NotReady(WorkerError):
    """The call needs a state the worker is not in, e.g. a request while no target model is
    loaded, or Assisting before the draft is loaded (FAILED_PRECONDITION)."""


class WorkerStopping(WorkerError):
    """The worker is shutting down (UNAVAILABLE: the caller should go elsewhere)."""
