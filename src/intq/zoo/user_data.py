"""The user's own data: a folder of images, or a ``.npy`` / ``.npz`` array file.

Images are converted to the model's channels (``L`` for 1, ``RGB`` for 3), scaled (bilinear,
antialiased) by the smallest factor that makes them cover ``H x W`` (for a square target: the
shorter side becomes ``H``), center cropped to ``H x W`` and normalized as the model
expects (``intq.zoo.normalization``; by default the ImageNet statistics for 3 channels, the
Fashion-MNIST ones for 1). A folder whose sub-folders hold images is labelled: class ``k`` is the
``k``-th sub-folder in sorted order (numerically when every name is an integer), files are
read in name order and the classes take turns (file 0 of every class, then file 1, ...), so
the first ``n`` samples spread evenly over the classes. A flat folder has no labels. With
``crops=K`` a folder gives K samples instead, random-resized crops (``intq.zoo.crops``) taken
in turn from its images (sample i from image i mod the number of images, with its label),
crop i drawn from a generator seeded with ``(seed, i)``: few photographs, many samples.
Array files hold already preprocessed float32 NCHW inputs (``.npy``; ``.npz`` with ``x`` and
optional integer labels ``y``) and are read without unpickling.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from intq.errors import IntqError
from intq.zoo.arrays import array_names, read_array
from intq.zoo.crops import random_resized_crop
from intq.zoo.dataset import Dataset
from intq.zoo.normalization import Normalization, default_normalization

__all__ = ["IMAGE_SUFFIXES", "load_user_data"]

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_MODES = {1: "L", 3: "RGB"}
_MAX_LABEL = 2**31 - 1


def load_user_data(
    path: str | Path,
    *,
    input_shape: tuple[int, int, int],
    n: int | None = None,
    normalization: Normalization | None = None,
    crops: int | None = None,
    seed: int = 0,
) -> Dataset:
    """A folder of images, a ``.npy`` or a ``.npz`` file, as a Dataset of ``input_shape``
    samples; the first ``n >= 1`` samples when ``n`` is given (with ``crops``: of the first
    ``n`` images, ``crops`` random crops, see the module docstring). ``normalization`` applies
    to images (default: ``default_normalization`` of the channel count)."""
    path = Path(path)
    if n is not None and n < 1:
        raise IntqError(f"the number of samples must be >= 1, got {n}")
    if crops is not None and crops < 1:
        raise IntqError(f"the number of crops must be >= 1, got {crops}")
    if path.is_dir():
        return _load_image_folder(path, input_shape, n, normalization, crops, seed)
    if crops is not None:
        raise IntqError(f"{path}: random crops need a folder of images, not a file "
                        "(an array file is already preprocessed)")
    if path.suffix in (".npy", ".npz") and path.is_file():
        return _load_array_file(path, input_shape, n)
    if path.is_file():
        raise IntqError(f"{path}: unsupported data file; use a folder of images, .npy or .npz")
    raise IntqError(f"{path}: no such file or folder")


def _load_image_folder(folder: Path, input_shape: tuple[int, int, int], n: int | None,
                       normalization: Normalization | None, crops: int | None,
                       seed: int) -> Dataset:
    """The images of ``folder`` (flat: no labels; class sub-folders: labels), preprocessed:
    one center crop each, or ``crops`` random crops in all."""
    normalization = normalization or default_normalization(input_shape[0])
    try:
        files, labels = _list_images(folder)
    except OSError as exc:  # a folder without read/execute permission
        raise IntqError(f"cannot list {exc.filename or folder}: {exc.strerror}") from None
    files, labels = files[:n], None if labels is None else labels[:n]
    if crops is None:
        pixels = np.stack([_preprocess_image(path, input_shape) for path in files])
        name = f"folder:{folder}"
    else:
        pixels = _random_crops(files, input_shape, crops, seed)
        labels = None if labels is None else [labels[i % len(files)] for i in range(crops)]
        name = f"folder:{folder} ({crops} random crops)"
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return Dataset(name, normalization.apply(pixels), y)


def _random_crops(files: list[Path], input_shape: tuple[int, int, int], count: int,
                  seed: int) -> np.ndarray:
    """uint8 (count, H, W, C): crop i of image ``files[i % len(files)]``, drawn with a
    generator seeded ``(seed, i)``; each image is decoded once."""
    channels, height, width = input_shape
    pixels = np.empty((count, height, width, channels), dtype=np.uint8)
    for j, path in enumerate(files):
        image = _open_image(path, channels)
        for i in range(j, count, len(files)):
            rng = np.random.default_rng((seed, i))
            pixels[i] = random_resized_crop(image, height, width, rng)
    return pixels


def _load_array_file(path: Path, input_shape: tuple[int, int, int], n: int | None) -> Dataset:
    """Inputs from a ``.npy`` (float32 NCHW) or ``.npz`` (``x``, optional ``y``) file."""
    arrays = _read_arrays(path, n)
    x, y = arrays["x"], arrays["y"]
    _check_inputs(path, x, input_shape)
    if y is not None:
        _check_labels(path, y, len(x))
        y = torch.from_numpy(y.astype(np.int64))
    return Dataset(f"file:{path}", torch.from_numpy(np.array(x, dtype=np.float32)), y)


def _list_images(folder: Path) -> tuple[list[Path], list[int] | None]:
    """Image files in reading order and their labels (``None`` for a flat folder)."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    classes = _sorted_class_names([p.name for p in entries if p.is_dir()])
    flat = [p for p in entries if _is_image(p)]
    per_class = [sorted(p for p in (folder / c).iterdir() if _is_image(p)) for c in classes]
    if flat and any(per_class):
        raise IntqError(
            f"{folder} has images both at the top and in class sub-folders; "
            "put every image in a class sub-folder, or use a flat folder"
        )
    if flat:
        return flat, None
    if not any(per_class):
        raise IntqError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return _interleave(per_class)


def _sorted_class_names(names: list[str]) -> list[str]:
    if names and all(name.isdecimal() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _interleave(per_class: list[list[Path]]) -> tuple[list[Path], list[int]]:
    """Round-robin over classes: file 0 of every class, then file 1, ..."""
    order = sorted(
        ((rank, label) for label, paths in enumerate(per_class) for rank in range(len(paths)))
    )
    return [per_class[label][rank] for rank, label in order], [label for _, label in order]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _open_image(path: Path, channels: int) -> Image.Image:
    """The decoded image in the mode of ``channels`` (L or RGB)."""
    try:
        with Image.open(path) as image:
            return image.convert(_MODES[channels])
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise IntqError(f"cannot read image {path}: {exc}") from None


def _preprocess_image(path: Path, input_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (H, W, C): converted, resized to cover H x W (bilinear), center cropped."""
    channels, height, width = input_shape
    image = _open_image(path, channels)
    scale = max(height / image.height, width / image.width)
    box_w, box_h = width / scale, height / scale
    left, top = (image.width - box_w) / 2, (image.height - box_h) / 2
    resized = image.resize(
        (width, height), Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h)
    )
    return np.asarray(resized).reshape(height, width, channels)


def _read_arrays(path: Path, n: int | None) -> dict[str, np.ndarray | None]:
    """``{"x": ..., "y": ... or None}``: the first ``n`` rows of each (``zoo.arrays``)."""
    names = array_names(path)
    if "x" not in names:
        raise IntqError(f"{path}: a .npz needs an array 'x' (and optionally 'y'); "
                        f"it has {', '.join(map(repr, names)) or 'no arrays'}")
    y = read_array(path, "y", n) if "y" in names else None
    return {"x": read_array(path, "x", n), "y": y}


def _check_inputs(path: Path, x: np.ndarray, input_shape: tuple[int, int, int]) -> None:
    expected = f"float32 of shape (N, {', '.join(map(str, input_shape))})"
    if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != tuple(input_shape):
        raise IntqError(
            f"{path}: expected inputs {expected}, got {x.dtype} of shape {tuple(x.shape)}"
        )
    if len(x) == 0:
        raise IntqError(f"{path}: holds no samples (shape {tuple(x.shape)})")
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise IntqError(
            f"{path}: {len(bad)} samples hold NaN or Inf values (first: sample {bad[0]})"
        )


def _check_labels(path: Path, y: np.ndarray, count: int) -> None:
    if y.dtype.kind not in "iu" or y.shape != (count,):
        raise IntqError(
            f"{path}: expected labels 'y' as integers of shape ({count},), "
            f"got {y.dtype} of shape {tuple(y.shape)}"
        )
    if count and y.min() < 0:
        raise IntqError(f"{path}: labels must be >= 0, got {y.min()}")
    if count and int(y.max()) > _MAX_LABEL:  # uint64 beyond int64 would wrap to negative
        raise IntqError(f"{path}: labels are class indices and must be below 2^31, got "
                        f"{int(y.max())}")
