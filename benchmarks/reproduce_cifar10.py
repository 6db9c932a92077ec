"""Reproduce the TRP paper's CIFAR-10 ResNet-20 comparison on the real CIFAR-10 JPEGs.

    python benchmarks/reproduce_cifar10.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--work DIR]

Runs, one after the other, every method from its committed config in configs/cifar10/
(resnet20-{baseline,nu,trp1,trp1-nu,trp2,trp2-nu}-cpu.toml: one 30-epoch one-cycle schedule
for all, baseline included), then sweeps each trained net over energy criteria with no
fine-tuning ("basic" = the baseline decomposed with either scheme). Everything resumes: run
the script again after an interruption and it continues each run from its last completed
epoch and skips finished work. Checkpoints live in the work directory (default
``~/.cache/trp/reproduce-cifar10``, outside git); the small JSON summaries, metrics and
sweeps are copied to ``benchmarks/results/cifar10/`` to be committed.

This first version trains and sweeps; the RESULTS.md table and figures against the paper are
written by a later step once all runs have finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

from trp.criteria import EnergyCriterion
from trp.data import load_dataset
from trp.data.download import extract_tar
from trp.train import load_train_config, run_training
from trp.train.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "cifar10"
METHODS = ("baseline", "nu", "trp1", "trp1-nu", "trp2", "trp2-nu")
SWEEP_ENERGIES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_data(archive: Path, cache: Path) -> Path:
    """Verify ``archive`` against its ``.sha256`` file and extract it once into ``cache``."""
    done = cache / ".extracted"
    if done.exists():
        return cache
    if not archive.is_file():
        raise SystemExit(f"{archive} does not exist: pass --data PATH to the CIFAR-10 JPEG archive.")
    expected = Path(f"{archive}.sha256").read_text().split()[0]
    actual = sha256(archive)
    if actual != expected:
        raise SystemExit(f"{archive}: SHA-256 {actual} does not match {expected}; the archive is corrupt.")
    cache.mkdir(parents=True, exist_ok=True)
    extract_tar(archive, cache)
    done.write_text(actual + "\n")
    return cache


def train_method(method: str, data_root: Path, work: Path) -> dict:
    config_path = REPO / "configs" / "cifar10" / f"resnet20-{method}-cpu.toml"
    run_dir = work / "runs" / method
    overrides = [
        "data.dataset=imagefolder", f"data.root={json.dumps(str(data_root))}", "data.download=false",
        f"run.out_dir={json.dumps(str(run_dir))}", f"run.progress={str(sys.stderr.isatty()).lower()}",
    ]
    config = load_train_config(config_path, overrides)
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        summary = run_training(config, resume=(run_dir / "last.pt").exists())
    target = RESULTS / method
    target.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "metrics.jsonl", "projections.jsonl"):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, target / name)
    return summary


def sweep_method(method: str, data_root: Path, work: Path) -> None:
    """Accuracy against speed-up with no fine-tuning; the baseline with both schemes."""
    dataset = load_dataset("imagefolder", data_root)
    config = load_train_config(REPO / "configs" / "cifar10" / f"resnet20-{method}-cpu.toml").decompose_config()
    schemes = ("channel", "spatial") if method == "baseline" else (config.scheme,)
    for scheme in schemes:
        label = f"basic-{scheme}" if method == "baseline" else method
        out = RESULTS / "sweeps" / label
        if (out / "sweep.json").exists():
            continue
        run_sweep(
            [work / "runs" / method / "dense.pt"], [label], dataset, dataclasses.replace(config, scheme=scheme),
            [EnergyCriterion(e) for e in SWEEP_ENERGIES], out, model_name="resnet20",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "trp" / "reproduce-cifar10")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args()
    data_root = prepare_data(args.data, args.work / "cifar10-jpeg")
    for method in args.methods:
        print(f"== {method}", flush=True)
        train_method(method, data_root, args.work)
        sweep_method(method, data_root, args.work)
    print(f"all runs finished; summaries in {RESULTS}")


if __name__ == "__main__":
    main()
