"""One energy for every layer, or ranks allocated by energy per MAC: which decomposes a
trained CIFAR-10 net to a conv-MAC budget more accurately, with no fine-tuning?

    PYTHONPATH=benchmarks python benchmarks/allocation_cifar10.py [--nets LABEL ...] [--targets X ...]

For each trained net (dense checkpoints of ``benchmarks/reproduce_cifar10.py``'s runs, from
its cache) and each conv-MAC speed-up target, the net is decomposed three ways and each result
evaluated on the CIFAR-10 test set:

* ``energy``: one pruned energy ``e`` for every layer, bisected to the target
  (``trp.target.criterion_for_speedup``, the paper's criterion);
* ``fraction``: one fraction of full rank for every layer, bisected the same way;
* ``allocate``: a rank per conv layer, keeping the singular values that hold the most energy
  per MAC they cost (``trp.target.ranks_for_speedup``, its default objective: the summed
  ``-log`` of each layer's kept energy fraction);
* ``allocate-lost``: the same with the summed fraction of energy lost as the objective.

Each point is saved as it is measured in ``benchmarks/results/cifar10/allocation.json`` (with
the checkpoint's SHA-256); a rerun measures only the points missing for the same checkpoint.
It prints its table and writes it into ``benchmarks/RESULTS.md`` (the ALLOCATION section).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path

import torch

from reproduce_cifar10 import prepare_data, sha256
from results_markdown import replace_section
from trp.config import DecomposeConfig
from trp.data import load_dataset
from trp.surgery import decompose_
from trp.target import criterion_for_speedup, ranks_for_speedup
from trp.train.sweep import accuracy_on, load_trained

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "cifar10" / "allocation.json"
WORK = Path.home() / ".cache" / "trp" / "reproduce-cifar10"
METHODS = ("energy", "fraction", "allocate", "allocate-lost")
OBJECTIVE = {"allocate": "log_kept", "allocate-lost": "lost"}
# label: (reproduction run whose dense.pt is decomposed, scheme, its decomposed speed-up's neighbourhood and beyond)
NETS = {
    "trp2-nu-e0.01-paper": ("trp2-nu-e0.01-paper", "spatial", (3.3, 4.0, 5.0)),
    "trp2-nu-e0.01-factorized": ("trp2-nu-e0.01-factorized", "spatial", (3.0, 4.0, 5.0)),
    "trp1-nu-factorized": ("trp1-nu-factorized", "channel", (2.2, 3.0, 4.0)),
}


def decompose_at(model: torch.nn.Module, config: DecomposeConfig, example: torch.Tensor, method: str,
                 target: float) -> tuple[torch.nn.Module, dict]:
    """A decomposed copy of ``model`` at ``target`` by ``method``, and what it chose."""
    if method in OBJECTIVE:
        allocated = ranks_for_speedup(model, config, example, target, objective=OBJECTIVE[method])
        chosen, setting = allocated.config, {"ranks": allocated.ranks, "energy_lost": allocated.energy_lost}
    else:
        found = criterion_for_speedup(model, config, example, target, family=method)
        chosen, setting = dataclasses.replace(config, criterion=found.criterion), {"criterion": found.criterion.to_dict()}
    candidate = copy.deepcopy(model)
    report = decompose_(candidate, chosen, example)
    ranks = {layer.name: layer.rank for layer in report.layers if layer.decomposed}
    return candidate, {**setting, "conv_speedup": report.conv_speedup, "params": report.params_after,
                       "decomposed_ranks": ranks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=list(NETS))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--work", type=Path, default=WORK, help="reproduce_cifar10.py's work directory")
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {"nets": {}}
    dataset = load_dataset("imagefolder", prepare_data(args.data, args.work / "cifar10-jpeg"))
    accuracy = accuracy_on(dataset)
    example = torch.zeros(1, *dataset.input_size)
    for label in args.nets:
        run, scheme, targets = NETS[label]
        path = args.work / "runs" / run / "dense.pt"
        if not path.exists():
            print(f"{label}: {path} is missing (train it with reproduce_cifar10.py --methods {run}); skipped")
            continue
        digest = sha256(path)
        entry = results["nets"].get(label)
        if entry is None or entry["sha256"] != digest:
            entry = results["nets"][label] = {"run": run, "scheme": scheme, "sha256": digest, "points": []}
        model = load_trained(path, None, dataset)
        entry["dense_accuracy"] = accuracy(model)
        config = DecomposeConfig(scheme=scheme, decompose_linear=False)
        for target in targets:
            for method in METHODS:
                if any(p["target"] == target and p["method"] == method for p in entry["points"]):
                    continue
                candidate, point = decompose_at(model, config, example, method, target)
                entry["points"].append({"target": target, "method": method, "accuracy": accuracy(candidate), **point})
                OUT.write_text(json.dumps(results, indent=2) + "\n")
                print(f"{label} {target}x {method}: {100 * entry['points'][-1]['accuracy']:.2f} % at {point['conv_speedup']:.2f}x")
        OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    replace_section("ALLOCATION", table(results))


def table(results: dict) -> str:
    """Markdown: per net and target, each method's top-1 and conv-MAC speed-up."""
    lines = ["| net | scheme | dense top-1 | target | " + " | ".join(f"{m}: top-1 at speed-up" for m in METHODS) + " |",
             "|---|---|---|---|" + "---|" * len(METHODS)]
    for label, entry in results["nets"].items():
        for target in sorted({p["target"] for p in entry["points"]}):
            cells = []
            for method in METHODS:
                point = next((p for p in entry["points"] if p["target"] == target and p["method"] == method), None)
                cells.append(f"{100 * point['accuracy']:.2f} at {point['conv_speedup']:.2f}x" if point else "")
            lines.append(f"| {label} | {entry['scheme']} | {100 * entry['dense_accuracy']:.2f} | {target}x | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
