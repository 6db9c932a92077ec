"""Is data loading a bottleneck? Images/s of the in-memory pipeline (TensorLoader +
pad-crop-flip augmentation + normalization) against images/s of a ResNet-20 training step,
measured in one run on 50,000 random 3x32x32 uint8 images (CIFAR-10's size), batch 128.

    python benchmarks/data_throughput.py

Writes ``benchmarks/results/data_throughput.json``. Loading is not the bottleneck when its
rate is many times the training rate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import trp
from trp.data import ImageSplit, TensorLoader, augment_crop_flip, normalize

RESULTS = Path(__file__).parent / "results" / "data_throughput.json"
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def loading_rate(split: ImageSplit, batch: int) -> float:
    loader = TensorLoader(split, batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    augment = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    seen = 0
    for images, _ in loader:
        normalize(augment_crop_flip(images, 4, augment), MEAN, STD)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def training_rate(batch: int, steps: int = 10) -> float:
    torch.manual_seed(0)
    model = trp.models.create_model("resnet20").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    split = ImageSplit(images, torch.randint(0, 10, (50_000,), generator=generator), [str(i) for i in range(10)])
    load = loading_rate(split, 128)
    train = training_rate(128)
    result = {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "loading_images_per_second": round(load), "resnet20_training_images_per_second": round(train),
        "loading_over_training": round(load / train, 1),
    }
    print(f"loading {load:,.0f} img/s, ResNet-20 training {train:,.0f} img/s: loading is {load / train:.0f}x faster")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
