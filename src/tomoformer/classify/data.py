"""Labelled image sets for classification: ImageFolder trees or ``.npz`` arrays, held in memory as tensors.

Two layouts are read:

* an ImageFolder tree ``root/<class name>/<image>.png|jpg|...`` (classes sorted by name, as torchvision does);
* an ``.npz`` file with ``images [N, C, H, W]`` (or ``[N, H, W]`` for grey) and ``labels [N]`` (int class
  indices), optionally ``class_names [K]``. ``uint8`` images are 0-255; float images are taken as given and
  should lie in [0, 1].

Every image set is returned as float32 ``[N, C, H, W]`` in [0, 1]; models see ``(x - 0.5) / 0.5``
(:data:`MEAN`, :data:`STD`, the normalisation of timm's AugReg ViT weights).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tomoformer.errors import DataError

MEAN = 0.5
STD = 0.5
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
MAX_IMAGE_PIXELS = 1 << 24  # per image, read from its header before it is decoded


@dataclass
class ImageSet:
    """Images ``[N, C, H, W]`` float32 in [0, 1], labels ``[N]`` int64 in [0, K), and the K class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageSet:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index])

    def with_channels(self, channels: int) -> ImageSet:
        """The same images with ``channels`` channels (grey ↔ RGB); other conversions are refused."""
        if channels == self.channels:
            return self
        if self.channels == 1:
            return dataclasses.replace(self, images=self.images.expand(-1, channels, -1, -1).contiguous())
        if channels == 1 and self.channels == 3:
            # ITU-R 601 luma, as PIL's convert("L").
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            return dataclasses.replace(self, images=(self.images * weights).sum(1, keepdim=True))
        raise DataError(f"images have {self.channels} channels; the model expects {channels}")


def load_images(path: str | Path, image_size: int | None = None) -> ImageSet:
    """Read an ImageFolder tree or an ``.npz`` file (see the module docstring); ``image_size`` resizes folder
    images to ``image_size x image_size`` (without it, they must all have the same size)."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, image_size)
    if not path.exists():
        raise DataError(f"{path}: no such image folder or .npz file")
    if path.suffix != ".npz":
        raise DataError(f"{path}: expected an image folder (root/class/*.png) or an .npz file")
    return _load_npz(path)


def _load_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__})") from None
    for key in ("images", "labels"):
        if key not in arrays:
            raise DataError(f"{path}: no '{key}' array (found: {', '.join(sorted(arrays)) or 'nothing'})")
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{path}: 'images' must be [N, C, H, W] or [N, H, W], got shape {list(images.shape)}")
    if len(images) == 0:
        raise DataError(f"{path}: no images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{path}: 'labels' must be [N] = [{len(images)}], got shape {list(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{path}: 'labels' must be non-negative integer class indices")
    if images.dtype == np.uint8:
        pixels = torch.from_numpy(images.astype(np.float32) / 255.0)
    elif np.issubdtype(images.dtype, np.floating):
        pixels = torch.from_numpy(images.astype(np.float32))
        if not torch.isfinite(pixels).all():
            raise DataError(f"{path}: 'images' contains NaN or infinite values")
    else:
        raise DataError(f"{path}: 'images' must be uint8 (0-255) or float, got {images.dtype}")
    k = int(labels.max()) + 1
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else [str(i) for i in range(k)]
    if len(names) < k:
        raise DataError(f"{path}: label {k - 1} but only {len(names)} class_names")
    return ImageSet(pixels, torch.from_numpy(labels.astype(np.int64)), names)


def _load_folder(root: Path, image_size: int | None) -> ImageSet:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(root))
        samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=False)
    except FileNotFoundError as err:
        raise DataError(f"{root}: {str(err).splitlines()[0]} (expected root/<class name>/<image>.png)") from None
    pictures, labels = [], []
    for file, label in samples:
        try:
            if not os.path.isfile(file):
                raise DataError(f"{file}: not a regular file (a FIFO or device?); it is not read")
            with Image.open(file) as picture:
                if picture.width * picture.height > MAX_IMAGE_PIXELS:  # from the header, before decoding
                    raise DataError(
                        f"{file}: {picture.width} x {picture.height} pixels, more than {MAX_IMAGE_PIXELS:,}"
                    )
                picture.load()
                pictures.append(picture.copy())
        except (OSError, UnidentifiedImageError):
            raise DataError(f"{file}: not a readable image") from None
        labels.append(label)
    grey = all(p.mode in _GREY_MODES for p in pictures)
    arrays = []
    for (file, _), picture in zip(samples, pictures, strict=True):
        picture = picture.convert("L" if grey else "RGB")
        if image_size is not None:
            picture = picture.resize((image_size, image_size), Image.Resampling.BILINEAR)
        array = np.asarray(picture, dtype=np.uint8)
        if arrays and array.shape != arrays[0].shape:
            raise DataError(
                f"{file}: image of size {array.shape[1]}x{array.shape[0]}, but {samples[0][0]} is "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]} (resize them all with --image-size N)"
            )
        arrays.append(array)
    stacked = np.stack(arrays)
    stacked = stacked[:, None] if grey else stacked.transpose(0, 3, 1, 2)
    pixels = torch.from_numpy(stacked.astype(np.float32) / 255.0)
    return ImageSet(pixels, torch.tensor(labels, dtype=torch.int64), list(classes))


def split(images: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded random (train, validation) split; the validation part has at least one image."""
    n = len(images.labels)
    if n < 2:
        raise DataError(f"{n} image(s): need at least 2 to hold some out for validation (or give --val-data)")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    return images.subset(np.sort(order[n_val:])), images.subset(np.sort(order[:n_val]))


def match_classes(data: ImageSet, class_names: list[str], what: str) -> ImageSet:
    """``data`` with labels as indices into a model's ``class_names``: named classes are matched by name (a test
    folder may hold only some of them), unnamed ones (an .npz without class_names) by index."""
    default = [str(i) for i in range(len(data.class_names))]
    if data.class_names != default:
        unknown = [name for name in data.class_names if name not in class_names]
        if unknown:
            raise DataError(f"{what}: classes {unknown[:5]} are not among the model's {class_names[:5]}...")
        index = torch.tensor([class_names.index(name) for name in data.class_names])
        return dataclasses.replace(data, labels=index[data.labels], class_names=list(class_names))
    if int(data.labels.max()) >= len(class_names):
        raise DataError(f"{what}: label {int(data.labels.max())} but the model knows only {len(class_names)} classes")
    return dataclasses.replace(data, class_names=list(class_names))


class ImageDataModule(L.LightningDataModule):
    """Train/validation loaders over two in-memory :class:`ImageSet` s. The training order depends only on (seed,
    epoch) (:class:`~tomoformer.data.datamodule.EpochShuffleSampler`), so a resumed run repeats bit for bit."""

    def __init__(self, train: ImageSet, val: ImageSet, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> DataLoader:
        from tomoformer.data.datamodule import EpochShuffleSampler

        dataset = TensorDataset(self.train_set.images, self.train_set.labels)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=EpochShuffleSampler(len(dataset), self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.val_set.images, self.val_set.labels), batch_size=max(self.batch_size, 256))
