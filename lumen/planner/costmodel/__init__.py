"""The cost model: one interface for prefill, decode, restore, transfer and reload times.

The planner, the simulator and the analysis all time work through :class:`CostModel`.
:class:`RooflineCostModel` is the default (analytic, from profiles); :class:`TableCostModel`
interpolates measured iteration times and satisfies the same protocol.

>>> from lumen.planner.costmodel import Deployment, RooflineCostModel, get_hardware_profile
>>> from lumen.planner.costmodel import get_model_profile
>>> worker = Deployment(get_model_profile("Llama-3-70B"), get_hardware_profile("A100-80GB"), 4)
>>> model = RooflineCostModel(worker, draft=get_model_profile("Llama-3-8B"))
>>> round(model.reload_timeline().total_s)
72
"""

from lumen.planner.costmodel.base import (
    BatchShape,
    CostModel,
    DeploymentCosts,
    NoDraftModelError,
    ProgressiveTimeline,
    ReloadTimeline,
    progressive_timeline,
)
from lumen.planner.costmodel.deployment import Deployment
from lumen.planner.costmodel.profiles import (
    HARDWARE_PROFILES,
    MODEL_PROFILES,
    HardwareProfile,
    ModelProfile,
    UnknownProfileError,
    draft_compatible,
    get_hardware_profile,
    get_model_profile,
)
from lumen.planner.costmodel.roofline import (
    DEFAULT_EFFICIENCY,
    RooflineBreakdown,
    RooflineCostModel,
    RooflineEfficiency,
)
from lumen.planner.costmodel.table import (
    DEFAULT_TABLE_GRIDS,
    Grid2D,
    TableCostModel,
    TableFormatError,
    TableGrids,
)

__all__ = [
    "DEFAULT_EFFICIENCY",
    "DEFAULT_TABLE_GRIDS",
    "HARDWARE_PROFILES",
    "MODEL_PROFILES",
    "BatchShape",
    "CostModel",
    "Deployment",
    "DeploymentCosts",
    "Grid2D",
    "HardwareProfile",
    "ModelProfile",
    "NoDraftModelError",
    "ProgressiveTimeline",
    "ReloadTimeline",
    "RooflineBreakdown",
    "RooflineCostModel",
    "RooflineEfficiency",
    "TableCostModel",
    "TableFormatError",
    "TableGrids",
    "UnknownProfileError",
    "draft_compatible",
    "get_hardware_profile",
    "get_model_profile",
    "progressive_timeline",
]
