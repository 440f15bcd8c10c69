"""Errors the controller and the wire layer raise; the servicer maps each to one status code.

They carry the *field path* of the offending input (``state.requests[3].max_tokens``,
``failed_workers[0]``) so that a caller can fix its request without reading server logs. No gRPC
import here: the mapping to status codes is one table in :mod:`lumen.planner.service.servicer`.
"""

from __future__ import annotations

from lumen.planner.decisions import Status


class ServiceError(Exception):
    """Base class: ``path`` names the field (empty when the whole request is at fault)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class InvalidField(ServiceError):
    """Malformed or out-of-range input (INVALID_ARGUMENT)."""


class NotFound(ServiceError):
    """A worker or request id that the planner does not know (NOT_FOUND)."""


class AlreadyExists(ServiceError):
    """A new request whose id is already in the planner's state (ALREADY_EXISTS)."""


class NotReady(ServiceError):
    """The call needs state the planner does not have yet, e.g. no ReportClusterState since
    start, or no draft model configured (FAILED_PRECONDITION)."""


class OutOfTime(ServiceError):
    """The solver stopped (time limit, deadline or cancellation) without any plan
    (DEADLINE_EXCEEDED); ``status`` says how far it got."""

    def __init__(self, message: str, status: Status | None = None) -> None:
        super().__init__("", message)
        self.status = status
