"""Tests for trp.data: every format read from small files written here, downloads from a
local HTTP server, the restricted unpickler, augmentation and the tensor loader."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trp.data import (
    ImageSplit,
    TensorLoader,
    UnsafePickleError,
    augment_crop_flip,
    channel_stats,
    imagefolder,
    list_datasets,
    load_dataset,
    normalize,
)
from trp.data.download import extract_tar
from trp.data.safe_pickle import load_numpy_pickle

# ---------------------------------------------------------------- file writers


def write_pickle(path: Path, obj: object, legacy_numpy: bool = False) -> None:
    """Protocol-2 pickle like the CIFAR authors'; ``legacy_numpy`` names numpy 1.x's module."""
    data = pickle.dumps(obj, protocol=2)
    if legacy_numpy:
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(data)


def cifar_batch(rng: np.random.Generator, n: int, label_key: bytes, num_classes: int) -> dict:
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, num_classes, n).tolist(),
        b"batch_label": b"testing batch",
    }


def write_cifar10(root: Path, per_batch: int = 4) -> dict[str, dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": cifar_batch(rng, per_batch, b"labels", 10) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, 3, b"labels", 10)
    for name, batch in batches.items():
        write_pickle(folder / name, batch, legacy_numpy=name == "test_batch")
    write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return batches


def write_cifar100(root: Path) -> dict[str, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {"train": cifar_batch(rng, 7, b"fine_labels", 100), "test": cifar_batch(rng, 2, b"fine_labels", 100)}
    for name, batch in batches.items():
        write_pickle(folder / name, batch)
    names = {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": [b"x"] * 20}
    write_pickle(folder / "meta", names)
    return batches


def write_image(path: Path, size: tuple[int, int], seed: int) -> np.ndarray:
    """Write a random RGB image of ``size`` (W, H) in the format of ``path``'s suffix."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def write_imagefolder(root: Path, test_name: str = "val", size: tuple[int, int] = (6, 5)) -> None:
    for seed, (split, cls, ext) in enumerate(
        [("train", "cat", "png"), ("train", "cat", "jpg"), ("train", "dog", "png"), (test_name, "dog", "jpeg")]
    ):
        write_image(root / split / cls / f"{seed}.{ext}", size, seed)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, gz: bool, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


# ---------------------------------------------------------------- registry


def test_registry_lists_all_datasets():
    assert {"cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "digits"} <= set(list_datasets())


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*cifar10"):
        load_dataset("imagenet", "data")


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no option 'image_size'.*download, url, md5"):
        load_dataset("cifar10", tmp_path, image_size=32)
    with pytest.raises(ValueError, match="no option 'download'"):
        load_dataset("mnist", tmp_path, download=True)


def test_missing_root_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"root directory .*nowhere does not exist.*download=True"):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_dataset("imagefolder", tmp_path / "nowhere")


# ---------------------------------------------------------------- CIFAR


def test_cifar10_reads_python_pickles(tmp_path):
    batches = write_cifar10(tmp_path)
    data = load_dataset("cifar10", str(tmp_path))
    assert data.name == "cifar10" and data.num_classes == 10 and data.input_size == (3, 32, 32)
    assert data.train.images.shape == (20, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (3, 3, 32, 32) and data.test.labels.dtype == torch.int64
    assert data.train.classes[3] == "c3"
    first = batches["data_batch_1"]
    np.testing.assert_array_equal(data.train.images[0].numpy().reshape(-1), first[b"data"][0])
    assert data.train.labels[:4].tolist() == first[b"labels"]
    assert data.test.labels.tolist() == batches["test_batch"][b"labels"]
    expected_mean = (data.train.images.double() / 255).mean(dim=(0, 2, 3))
    expected_std = (data.train.images.double() / 255).std(dim=(0, 2, 3), unbiased=False)
    assert data.mean == pytest.approx(expected_mean.tolist()) and data.std == pytest.approx(expected_std.tolist())


def test_cifar100_reads_fine_labels(tmp_path):
    batches = write_cifar100(tmp_path)
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and data.train.classes[99] == "f99"
    assert len(data.train) == 7 and len(data.test) == 2
    assert data.train.labels.tolist() == batches["train"][b"fine_labels"]


def test_cifar_missing_file_says_how_to_get_it(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3 is missing; pass download=True"):
        load_dataset("cifar10", tmp_path)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "batches.meta", {b"label_names": _RunsShell(marker)})
    with pytest.raises(UnsafePickleError, match=r"references (posix|os)\.system"):
        load_dataset("cifar10", tmp_path)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_RunsShell(marker)))
    with pytest.raises(UnsafePickleError, match="only numpy arrays"):
        load_numpy_pickle(evil)
    assert not marker.exists()


def test_restricted_unpickler_reads_modern_numpy_pickles(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps({b"data": array}, protocol=protocol))
        np.testing.assert_array_equal(load_numpy_pickle(path)[b"data"], array)


def test_truncated_pickle_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def cifar10_server(tmp_path):
    """Serve a CIFAR-10-format tar.gz on 127.0.0.1; yields (url, md5)."""
    source, served = tmp_path / "source", tmp_path / "served"
    write_cifar10(source)
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{archive.name}", hashlib.md5(archive.read_bytes()).hexdigest()
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_extracts(tmp_path, cifar10_server, capsys, monkeypatch):
    url, md5 = cifar10_server
    monkeypatch.setenv("TRP_CIFAR10_URL", url)
    root = tmp_path / "fresh" / "data"
    data = load_dataset("cifar10", root, download=True, md5=md5)
    assert len(data.train) == 20 and len(data.test) == 3
    assert (root / "cifar-10-python.tar.gz").is_file()
    assert "100%" in capsys.readouterr().err
    assert len(load_dataset("cifar10", root).train) == 20  # files now present: no download needed


def test_download_with_bad_checksum_leaves_nothing(tmp_path, cifar10_server):
    url, md5 = cifar10_server
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=rf"MD5 mismatch .*expected 0+, got {md5}"):
        load_dataset("cifar10", root, download=True, url=url, md5="0" * 32)
    assert list(root.iterdir()) == []


def test_extract_refuses_escaping_members(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="escapes"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


# ---------------------------------------------------------------- ImageFolder


@pytest.mark.parametrize("workers", [1, 2])
def test_imagefolder_reads_png_and_jpeg(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(imagefolder, "_CHUNK", 2)  # several chunks, so workers=2 uses the process pool
    write_imagefolder(tmp_path)
    data = load_dataset("imagefolder", tmp_path, workers=workers)
    assert data.train.classes == ["cat", "dog"] and data.input_size == (3, 5, 6)
    assert data.train.labels.tolist() == [0, 0, 1] and data.test.labels.tolist() == [1]
    png = np.asarray(Image.open(tmp_path / "train" / "cat" / "0.png"))
    np.testing.assert_array_equal(data.train.images[0].permute(1, 2, 0).numpy(), png)


def test_imagefolder_uses_test_when_no_val_and_resizes(tmp_path):
    write_imagefolder(tmp_path, test_name="test")
    write_image(tmp_path / "train" / "dog" / "big.png", (20, 12), seed=9)
    data = load_dataset("imagefolder", tmp_path, image_size=(4, 7))
    assert data.train.images.shape == (4, 3, 4, 7) and data.test.images.shape == (1, 3, 4, 7)


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    write_imagefolder(tmp_path)
    write_image(tmp_path / "train" / "dog" / "big.png", (20, 12), seed=9)
    with pytest.raises(ValueError, match=r"big.png is 20x12 but other images are 6x5.*image_size="):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_test_class_must_exist_in_train(tmp_path):
    write_imagefolder(tmp_path)
    write_image(tmp_path / "val" / "bird" / "0.png", (6, 5), seed=0)
    with pytest.raises(ValueError, match=r"val/bird has no counterpart in .*train"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_needs_a_test_split(tmp_path):
    write_image(tmp_path / "train" / "cat" / "0.png", (6, 5), seed=0)
    with pytest.raises(FileNotFoundError, match=r"val or .*test does not exist; expected layout"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_memory_cap(tmp_path):
    write_imagefolder(tmp_path)
    with pytest.raises(ValueError, match=r"would take .* GiB decoded \(4 images of 3x5x6\), above max_bytes=100"):
        load_dataset("imagefolder", tmp_path, max_bytes=100)


def test_imagefolder_corrupt_image_in_a_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(imagefolder, "_CHUNK", 1)
    write_imagefolder(tmp_path)
    (tmp_path / "train" / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode image .*bad.png") as caught:
        load_dataset("imagefolder", tmp_path, workers=2)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# ---------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz)
    data = load_dataset("mnist", tmp_path)
    assert data.train.images.shape == (5, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(data.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert data.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_in_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    data = load_dataset("fashion_mnist", tmp_path)
    assert data.train.classes[9] == "Ankle boot" and len(data.train) == 5


def test_idx_bad_magic_and_truncation(tmp_path):
    write_mnist(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(b"\x00\x00\x0d\x03" + data[4:])
    with pytest.raises(ValueError, match=r"bad IDX magic number 00000d03, expected 00000803"):
        load_dataset("mnist", tmp_path)
    images.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"shape \(5, 28, 28\) should be 3936 bytes but is 3926"):
        load_dataset("mnist", tmp_path)


def test_mnist_missing_file(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte .*is missing"):
        load_dataset("mnist", tmp_path)


# ---------------------------------------------------------------- digits


def test_digits_is_a_fixed_stratified_split():
    pytest.importorskip("sklearn", reason="digits needs scikit-learn (pip install 'trp[quickstart]')")
    data = load_dataset("digits", None)
    assert data.train.images.shape == (1438, 1, 8, 8) and data.test.images.shape == (359, 1, 8, 8)
    assert int(data.train.images.max()) == 255 and data.num_classes == 10
    train_counts, test_counts = torch.bincount(data.train.labels), torch.bincount(data.test.labels)
    assert ((test_counts.double() / (train_counts + test_counts) - 0.2).abs() < 0.02).all()
    again = load_dataset("digits", "ignored")
    assert torch.equal(again.test.images, data.test.images) and torch.equal(again.test.labels, data.test.labels)


# ---------------------------------------------------------------- dataset containers


def test_split_validates_labels():
    with pytest.raises(ValueError, match=r"labels range over \[0, 5\] but there are 2 classes"):
        ImageSplit(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 5]), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        ImageSplit(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), ["a", "b"])


def test_channel_stats_matches_float_computation():
    images = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(images)
    as_float = images.double() / 255
    assert mean == pytest.approx(as_float.mean(dim=(0, 2, 3)).tolist())
    assert std == pytest.approx(as_float.std(dim=(0, 2, 3), unbiased=False).tolist())


# ---------------------------------------------------------------- augmentation


def crop_flip_candidates(image: torch.Tensor, padding: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Reference: every (top, left, flip) crop of one (C, H, W) image padded with zeros."""
    _, height, width = image.shape
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + height, left : left + width]
            out += [(top, left, False, crop), (top, left, True, crop.flip(-1))]
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_matches_a_per_image_crop_and_flip(dtype):
    images = torch.randint(1, 256, (64, 3, 6, 5), generator=torch.Generator().manual_seed(2)).to(dtype)  # no zeros
    out = augment_crop_flip(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == dtype
    seen = set()
    for image, result in zip(images, out, strict=True):
        matches = [
            (top, left, flip) for top, left, flip, crop in crop_flip_candidates(image, 2) if torch.equal(crop, result)
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len({(top, left) for top, left, _ in seen}) > 5 and {flip for _, _, flip in seen} == {False, True}
    again = augment_crop_flip(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augment_without_padding_only_flips():
    images = torch.randint(0, 256, (32, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    out = augment_crop_flip(images, 0, torch.Generator().manual_seed(1))
    flipped = (out != images).flatten(1).any(1)
    assert torch.equal(out[~flipped], images[~flipped]) and torch.equal(out[flipped], images[flipped].flip(-1))
    assert 0 < int(flipped.sum()) < 32


def test_normalize():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = normalize(images, mean, std)
    expected = (images.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and torch.allclose(out.double(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(images, (0.5,), (0.2,))


# ---------------------------------------------------------------- loader


def indexed_split(n: int) -> ImageSplit:
    """A split whose label ``i`` marks sample ``i``."""
    return ImageSplit(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n), [str(i) for i in range(n)])


def epoch_indices(loader: TensorLoader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return torch.cat([labels for _, labels in loader]).tolist()


def test_loader_shards_cover_every_index_once_plus_padding():
    split, world = indexed_split(10), 3
    loaders = [
        TensorLoader(split, 3, generator=torch.Generator().manual_seed(7), rank=r, world_size=world)
        for r in range(world)
    ]
    shards = [epoch_indices(loader, 0) for loader in loaders]
    assert all(len(shard) == 4 and len(loader) == 2 for shard, loader in zip(shards, loaders, strict=True))
    counts = Counter(index for shard in shards for index in shard)
    assert sorted(counts) == list(range(10)) and sorted(counts.values()) == [1] * 8 + [2] * 2  # 2 padding repeats


def test_loader_reshuffles_per_epoch_deterministically():
    split = indexed_split(50)
    loader = TensorLoader(split, 8, generator=torch.Generator().manual_seed(3))
    other = TensorLoader(split, 8, generator=torch.Generator().manual_seed(3))
    first, second = epoch_indices(loader, 0), epoch_indices(loader, 1)
    assert sorted(first) == list(range(50)) and first != second
    assert epoch_indices(other, 1) == second and epoch_indices(loader, 0) == first


def test_loader_batches_and_drop_last():
    split = indexed_split(10)
    loader = TensorLoader(split, 4, shuffle=False)
    images, labels = next(iter(loader))
    assert images.shape == (4, 1, 1, 1) and images.dtype == torch.uint8 and labels.tolist() == [0, 1, 2, 3]
    assert [len(labels) for _, labels in loader] == [4, 4, 2] and len(loader) == 3
    dropping = TensorLoader(split, 4, shuffle=False, drop_last=True)
    assert [len(labels) for _, labels in dropping] == [4, 4] and len(dropping) == 2


def test_training_pipeline_throughput_is_reported():
    """Loader + augmentation + normalization over CIFAR-sized images; prints images/s (see -s)."""
    count = 2560
    split = ImageSplit(
        torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8), torch.zeros(count, dtype=torch.int64), ["x"]
    )
    loader = TensorLoader(split, 128, generator=torch.Generator().manual_seed(0))
    augment_generator = torch.Generator().manual_seed(1)
    start, seen = time.perf_counter(), 0
    for images, _ in loader:
        batch = normalize(augment_crop_flip(images, 4, augment_generator), (0.5,) * 3, (0.25,) * 3)
        seen += len(batch)
    assert seen == count and batch.shape == (128, 3, 32, 32) and batch.dtype == torch.float32
    print(f"TensorLoader + augment_crop_flip + normalize: {seen / (time.perf_counter() - start):.0f} images/s")
