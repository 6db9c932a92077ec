"""Image classification datasets decoded once into memory, plus batching and augmentation.

    from trp.data import load_dataset, TensorLoader, augment_crop_flip, normalize
    data = load_dataset("cifar10", "data/", download=True)
    loader = TensorLoader(data.train, batch_size=128, generator=torch.Generator().manual_seed(0))
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:
            x = normalize(augment_crop_flip(images, 4), data.mean, data.std)

Registered datasets: ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``, ``imagefolder``
and ``digits`` (see :func:`list_datasets`).
"""

from . import cifar, digits, imagefolder, mnist  # noqa: F401  (importing registers the datasets)
from .augment import augment_crop_flip, normalize
from .dataset import ImageDataset, ImageSplit, calibration_batches, channel_stats
from .loader import TensorLoader
from .registry import list_datasets, load_dataset, register_dataset
from .safe_pickle import UnsafePickleError

__all__ = [
    "ImageDataset",
    "ImageSplit",
    "channel_stats",
    "calibration_batches",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "augment_crop_flip",
    "normalize",
    "TensorLoader",
    "UnsafePickleError",
]
