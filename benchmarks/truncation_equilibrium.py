"""Where TRP's projection alone would leave a trained net: repeat it until no rank changes.

    python benchmarks/truncation_equilibrium.py [--checkpoint PATH] [--energies E ...]

TRP replaces each targeted weight by its truncated SVD at energy ``e`` every m iterations.
Without training in between, repeating that projection keeps cutting each layer until its
smallest kept singular value holds more than ``e`` of the kept energy. This script repeats it
on a trained checkpoint (default: the CIFAR-10 reproduction's baseline, from
``benchmarks/reproduce_cifar10.py``'s cache) for both schemes and several energies, and
prints and saves the rank sum and conv-MAC speed-up where it settles
(``benchmarks/results/cifar10/truncation_equilibrium.json``). The from-baseline search configs
(``configs/cifar10/resnet20-trp{1,2}-nu-from-baseline-cpu.toml``) pick their energies from it:
the smallest that settles at or above the target's speed-up.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
from pathlib import Path

import torch

from trp.config import DecomposeConfig
from trp.criteria import EnergyCriterion
from trp.lowrank import matrix_to_weight, truncated_svd, weight_to_matrix
from trp.models import create_model
from trp.surgery import decompose_, factorizable_layers
from trp.train.sweep import load_decomposed

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "cifar10" / "truncation_equilibrium.json"
BASELINE = Path.home() / ".cache" / "trp" / "reproduce-cifar10" / "runs" / "baseline" / "dense.pt"
MAX_PROJECTIONS = 1000  # far more than any layer needs: ranks only fall, so a layer settles within full rank + 1


@torch.no_grad()
def project_until_stable(model: torch.nn.Module, config: DecomposeConfig) -> tuple[dict[str, int], int]:
    """Project every targeted weight (float64 SVD) until its rank stops changing; returns the
    ranks by layer name and the most projections any layer took (counting the one that
    confirms the rank)."""
    ranks, most = {}, 0
    for name, module in factorizable_layers(model, config):
        shape, rank = tuple(module.weight.shape), None
        for count in range(1, MAX_PROJECTIONS + 1):
            solution = truncated_svd(weight_to_matrix(module.weight.double(), config.scheme), config.criterion)
            module.weight.copy_(matrix_to_weight(solution.reconstruct(), shape, config.scheme))
            if solution.rank == rank:
                break
            rank = solution.rank
        else:
            raise RuntimeError(f"{name}: rank still changing after {MAX_PROJECTIONS} projections.")
        ranks[name], most = rank, max(most, count)
    return ranks, most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=BASELINE, help="a trained ResNet-20 for CIFAR-10")
    parser.add_argument("--energies", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.04, 0.05])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint} does not exist: train the baseline first "
                         "(python benchmarks/reproduce_cifar10.py --methods baseline) or pass --checkpoint.")
    trained = load_decomposed(args.checkpoint, create_model("resnet20", num_classes=10)).eval()
    example = torch.zeros(1, 3, 32, 32)
    points = []
    for scheme in ("channel", "spatial"):
        for energy in args.energies:
            model = copy.deepcopy(trained)
            config = DecomposeConfig(scheme=scheme, criterion=EnergyCriterion(energy))
            ranks, projections = project_until_stable(model, config)
            speedup = decompose_(model, config, example).conv_speedup
            points.append({"scheme": scheme, "pruned_energy": energy, "rank_sum": sum(ranks.values()),
                           "conv_speedup": speedup, "most_projections": projections, "ranks": ranks})
            print(f"{scheme:8s} e = {energy:<5g} rank sum {sum(ranks.values()):4d}  conv-MAC speed-up {speedup:.2f}x "
                  f"(settled within {projections} projections)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"file": args.checkpoint.name, "sha256": hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()}
    args.out.write_text(json.dumps({"checkpoint": checkpoint, "points": points}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
