"""What a paper row costs on a GPU, read from the latest ``gpu-report`` (``results/gpu.csv``).

Every results table has a *GPU-hours (estimated, device)* column for its paper rows: the
training steps of the ``paper`` profile divided by the steps per second that
``python -m benchmarks gpu-report`` measured in the real training loop on the named device.
Without a report (or for a model it did not measure) the cell says *not measured*; rows of
other profiles have no estimate (``—``).

Example:
    >>> costs = GpuCosts({("cifar", "revnet110"): (1.93, "NVIDIA H200")})
    >>> costs.cell("cifar", "revnet110"), costs.cell("cifar", "resnet32")
    ('1.9 (NVIDIA H200)', 'not measured')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["GPU_HOURS_HEADER", "GpuCosts", "load_gpu_costs"]

GPU_HOURS_HEADER = "GPU-hours (estimated, device)"
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class GpuCosts:
    """``(config name, model) -> (estimated hours of the paper profile, device name)``."""

    hours: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    def cell(self, config: str, model: str) -> str:
        found = self.hours.get((config, model))
        if found is None or math.isnan(found[0]):
            return NOT_MEASURED
        hours, device = found
        return f"{hours:,.1f} ({device})"


def load_gpu_costs(results: Path) -> GpuCosts:
    """The paper-profile estimates of ``results/gpu.csv`` (none if there is no report)."""
    path = Path(results) / "gpu.csv"
    if not path.is_file():
        return GpuCosts()
    frame = pd.read_csv(path)
    paper = frame[frame["profile"] == "paper"] if "profile" in frame else frame.iloc[0:0]
    return GpuCosts(
        {
            (str(row.config), str(row.model)): (float(row.estimated_hours), str(row.device_name))
            for row in paper.itertuples(index=False)
        }
    )
