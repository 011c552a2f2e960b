"""The in-memory dataset every intq loader returns: float32 NCHW inputs, optional labels."""

from dataclasses import dataclass

import torch

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """``x``: float32 ``(N, C, H, W)``; ``y``: int64 ``(N,)`` class labels or ``None``."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.dim() != 4:
            raise ValueError(
                f"dataset {self.name!r}: inputs must be float32 NCHW, got "
                f"{self.x.dtype} with shape {tuple(self.x.shape)}"
            )
        if self.y is not None and self.y.shape != (len(self.x),):
            raise ValueError(
                f"dataset {self.name!r}: {len(self.x)} inputs but labels of shape "
                f"{tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> "Dataset":
        """The first ``n`` samples."""
        return Dataset(self.name, self.x[:n], None if self.y is None else self.y[:n])

    def batches(self, batch_size: int):
        """Yield ``(x, y)`` mini-batches in order (``y`` is ``None`` without labels)."""
        for i in range(0, len(self.x), batch_size):
            y = None if self.y is None else self.y[i : i + batch_size]
            yield self.x[i : i + batch_size], y
