"""The CIFAR-10 reproduction script's data step: checksum verification and extraction."""

import hashlib
import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_cifar10.py"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_cifar10", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_archive(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name in ("train/cat/0.jpg", "test/cat/0.jpg"):
            data = b"not really a jpeg"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_prepare_data_verifies_and_extracts_once(tmp_path):
    script = load_script()
    archive = tmp_path / "cifar.tar.gz"
    make_archive(archive)
    Path(f"{archive}.sha256").write_text(hashlib.sha256(archive.read_bytes()).hexdigest() + "  cifar.tar.gz\n")
    root = script.prepare_data(archive, tmp_path / "cache")
    assert (root / "train" / "cat" / "0.jpg").exists() and (root / ".extracted").exists()
    archive.unlink()  # a second call must not need the archive
    assert script.prepare_data(archive, tmp_path / "cache") == root


def test_prepare_data_refuses_a_corrupt_archive(tmp_path):
    script = load_script()
    archive = tmp_path / "cifar.tar.gz"
    make_archive(archive)
    Path(f"{archive}.sha256").write_text("0" * 64 + "  cifar.tar.gz\n")
    with pytest.raises(SystemExit, match="does not match"):
        script.prepare_data(archive, tmp_path / "cache")
    assert not (tmp_path / "cache" / ".extracted").exists()


@pytest.mark.skipif(not SHARED.exists(), reason="the shared CIFAR-10 JPEG archive is not on this machine")
def test_shared_archive_checksum_matches():
    script = load_script()
    assert script.sha256(SHARED) == Path(f"{SHARED}.sha256").read_text().split()[0]
