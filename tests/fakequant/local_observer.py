"""A minimal observer implementing the interface Quantizer relies on (independent of
intq.observers): running min/max per tensor or per channel, counting ranges() calls."""

import torch
from torch import nn


class LocalMinMaxObserver(nn.Module):
    def __init__(self, per_channel: bool = False, axis: int = 0) -> None:
        super().__init__()
        self.per_channel, self.axis = per_channel, axis
        self.ranges_calls = 0
        self.register_buffer("min_val", torch.zeros(0))
        self.register_buffer("max_val", torch.zeros(0))

    def update(self, x: torch.Tensor) -> None:
        rows = x.movedim(self.axis, 0).reshape(x.shape[self.axis], -1) if self.per_channel \
            else x.reshape(1, -1)
        lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
        if self.min_val.numel():
            lo, hi = torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)
        self.min_val, self.max_val = lo, hi

    def ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.ranges_calls += 1
        if not self.min_val.numel():
            raise ValueError("LocalMinMaxObserver: no data")
        if self.per_channel:
            return self.min_val.clone(), self.max_val.clone()
        return self.min_val[0].clone(), self.max_val[0].clone()

    def reset(self) -> None:
        self.min_val, self.max_val = torch.zeros(0), torch.zeros(0)

    def replace(self, x: torch.Tensor) -> None:
        self.reset()
        self.update(x)

    def merge(self, other: "LocalMinMaxObserver") -> None:
        self.update(torch.stack([other.min_val, other.max_val], dim=1).T)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("min_val", "max_val"):
            self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
