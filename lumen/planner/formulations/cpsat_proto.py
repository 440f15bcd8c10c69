"""Writing CP-SAT models straight into the solver's model message (``CpModelProto``).

Building through ``cp_model.CpModel`` costs a Python object per variable and constraint; the
exact placement and recovery models are large enough for that to eat into their time limits, so
they append variables and linear constraints to the message directly with these helpers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["int_var", "linear"]


def int_var(proto: Any, low: int, high: int) -> int:
    """A new integer variable in ``[low, high]``; returns its index."""
    var = proto.variables.add()
    var.domain.extend([int(low), int(high)])
    return len(proto.variables) - 1


def linear(proto: Any, var: list[int], coef: list[int], low: int, high: int) -> None:
    """``low <= sum coef * var <= high``."""
    ct = proto.constraints.add()
    ct.linear.vars.extend(var)
    ct.linear.coeffs.extend(coef)
    ct.linear.domain.extend([int(low), int(high)])
