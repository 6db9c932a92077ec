"""Reproduce the TRP paper's CIFAR-10 ResNet-20 comparison on the real CIFAR-10 JPEGs.

    python benchmarks/reproduce_cifar10.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--work DIR]
        [--methods NAME ...] [--report]

Runs, one after the other, every method from its committed config in configs/cifar10/
(resnet20-{baseline,nu,trp1,trp1-nu,trp2,trp2-nu}-cpu.toml: one 30-epoch one-cycle schedule
for all, baseline included; resnet20-basic-ft-{channel,spatial}-cpu.toml: the baseline
decomposed at three conv-MAC speed-ups per scheme and briefly fine-tuned,
resnet20-basic-fit-ft-channel-cpu.toml the same from factors fitted to its responses, and
resnet20-basic-ft10-spatial-cpu.toml fine-tuned as long as TRP from our baseline trains;
resnet20-trp{1,2}-nu-e0.01-cpu.toml, resnet20-trp{1,2}-nu-lambda-cpu.toml,
resnet20-trp2-nu-m5{,-e0.0075}-cpu.toml, resnet20-{trp1-nu,trp2-nu-e0.01}-dense-stem-cpu.toml,
resnet20-trp{1,2}-nu-authors-code-cpu.toml and resnet20-trp{1,2}-nu-from-baseline-cpu.toml: the search for
better settings (the last TRP-train our trained baseline for 10 epochs, as the paper does
on ImageNet);
resnet20-trp1-fig2-cpu.toml: the paper's Fig. 2 conditions; the baseline and TRP2+Nu with e = 0.01
again on 15- and 60-epoch schedules, ``SCHEDULE_LENGTH_RUNS``, with another seed, ``SEED_RUNS``, and
on 15 epochs with option-B shortcuts (the authors' ResNet-20 variant; TRP2+Nu also with those 1x1
convs left out of TRP, as the authors' code leaves them; the pair again with seed 1, beside the
option-A pair again with seed 1), ``SHORTCUT_RUNS``;
the baseline, TRP2+Nu (also at e = 0.01) and TRP1+Nu, both TRP+Nu again capped at the speed-ups the
targets ask for, and TRP2 capped at 2.84x, on the paper's own 164-epoch schedule from
resnet20-{baseline,trp2-nu,trp1-nu,trp2}.toml, ``PAPER_SCHEDULE_RUNS``, about 5 hours each on two cores;
the ranks that TRP2+Nu (e = 0.01) and TRP1+Nu ended with, trained from scratch with no TRP on the
baseline's config, and those of the 164-epoch TRP2+Nu capped at 2.84x on the paper's baseline config,
``FACTORIZED_RUNS``, their plans written from the committed summaries; and the
first one's conv MACs with every layer at one fraction of its full rank, trained so too,
``UNIFORM_RUNS``),
sweeps each trained net over energy criteria with no fine-tuning ("basic" = the baseline decomposed
with either scheme, and with the channel scheme also fitted to its responses on training images;
the paper-schedule runs as ``PAPER_SCHEDULE_SWEEPS`` says), then writes
the table and figures (``report_cifar10.py``). Everything resumes: run the script
again after an interruption and it continues each run from its last completed epoch and
skips finished work; two invocations with different ``--methods`` may run side by side.
Checkpoints live in the work directory (default ``~/.cache/trp/reproduce-cifar10``, outside
git), so a run resumes only on a machine that still has that directory; the small JSON
summaries, metrics, projections and sweeps are copied to ``benchmarks/results/cifar10/`` to be
committed. ``--report`` only rewrites the report from those committed files; ``--collect``
first copies the small files of runs that have not finished (a long run's progress so far).
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
from trp.plan import PlanEntry, RankPlan
from trp.train import load_train_config, run_training
from trp.train.run import has_saved_state
from trp.train.sweep import run_sweep

from report_cifar10 import (AUTHORS_CODE_RUNS, CAP_RUNS, CALIBRATION_IMAGES, DATA_FIT, DENSE_STEM_RUNS, FACTORIZED_RUNS, LAYER,
                            UNIFORM_RUNS,
                            PAPER_SCHEDULE_RUNS, PAPER_SCHEDULE_SWEEPS, PERIOD_RUNS, RESULTS, SCHEDULE_LENGTH_RUNS,
                            SEED_RUNS, SHORTCUT_RUNS, TRP_FROM_BASELINE, config_path, on_paper_schedule, uniform_plan, variant_of,
                            write_report)

REPO = Path(__file__).resolve().parents[1]
METHODS = (
    "baseline", "nu", "trp1", "trp1-nu", "trp2", "trp2-nu", "basic-ft-channel", "basic-ft-spatial",
    "basic-fit-ft-channel",  # basic + fine-tune from factors fitted to the baseline's responses
    "basic-ft10-spatial",  # basic + a fine-tune as long as TRP from our baseline, at its speed-up
    "trp1-nu-e0.01", "trp2-nu-e0.01",  # the search: half the energy pruned per projection
    "trp1-nu-lambda", "trp2-nu-lambda",  # the search: e = 0.01, lambda restoring the paper's total push
    *PERIOD_RUNS,  # the search: projections four times as often (e/m as e = 0.01, then aimed at 2.8x)
    *CAP_RUNS,  # the search: the paper's settings, projections capped at the paper's speed-up
    *DENSE_STEM_RUNS.values(),  # the search: the stem conv left dense, as in the authors' code
    *AUTHORS_CODE_RUNS.values(),  # the paper's settings as the authors' code trains them
    "trp1-nu-from-baseline", "trp2-nu-from-baseline",  # the search: TRP+Nu briefly, from our baseline
    "trp1-fig2",  # 2 epochs under the paper's Fig. 2 conditions (rank dynamics only)
    *SCHEDULE_LENGTH_RUNS,  # the baseline and the nearest miss on other schedule lengths
    *SEED_RUNS,  # the baseline and the nearest miss with other seeds
    *SHORTCUT_RUNS,  # the baseline and the nearest miss with option-B shortcuts on 15 epochs, and seed 1 of both options
    *PAPER_SCHEDULE_RUNS,  # the baseline and TRP runs on the paper's 164 epochs (about 5 hours each on two cores)
    *FACTORIZED_RUNS,  # the ranks TRP+Nu found, trained from scratch with no TRP
    *UNIFORM_RUNS,  # the same MACs at one fraction of every layer's full rank, trained so too
)
# Methods that fine-tune the decomposed baseline: one run per conv-MAC speed-up target, no sweep.
BASIC_FT_SPEEDUPS = {
    "basic-ft-channel": (1.5, 2.2, 3.0), "basic-fit-ft-channel": (1.5, 2.2, 3.0),
    "basic-ft-spatial": (2.0, 2.8, 4.0), "basic-ft10-spatial": (2.9,),
}
FINETUNED = tuple(BASIC_FT_SPEEDUPS)
FROM_BASELINE = (*FINETUNED, *TRP_FROM_BASELINE)
SWEEP_ENERGIES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3)


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
    checksum = Path(f"{archive}.sha256")
    if not checksum.is_file():
        raise SystemExit(f"{checksum} does not exist: the archive's SHA-256 must lie beside it (as `sha256sum` writes it).")
    expected = checksum.read_text().split()[0]
    actual = sha256(archive)
    if actual != expected:
        raise SystemExit(f"{archive}: SHA-256 {actual} does not match {expected}; the archive is corrupt.")
    cache.mkdir(parents=True, exist_ok=True)
    extract_tar(archive, cache)
    done.write_text(actual + "\n")
    return cache


def runs_of(method: str) -> list[tuple[str, list[str]]]:
    """The runs a method stands for: (run name, config overrides). A FINETUNED method is one
    fine-tune per speed-up in its BASIC_FT_SPEEDUPS, so basic + fine-tune is a curve too."""
    if method not in FINETUNED:
        return [(method, [])]
    return [(f"{method}-{s}x", [f"decompose.target_speedup={s}"]) for s in BASIC_FT_SPEEDUPS[method]]


def config_of(method: str) -> tuple[Path, list[str]]:
    """The committed config a method trains from, and its overrides (a SCHEDULE_LENGTH_RUNS,
    SEED_RUNS or SHORTCUT_RUNS method trains its source method's config for other epochs, with
    another seed, or with either shortcut option on other epochs and seeds; a
    PAPER_SCHEDULE_RUNS method, and a FACTORIZED_RUNS one at such a run's ranks, trains the paper's
    config, in channels_last for speed)."""
    source, overrides = PAPER_SCHEDULE_RUNS[method] if method in PAPER_SCHEDULE_RUNS else variant_of(method)
    if on_paper_schedule(method):
        return config_path(source, paper_schedule=True), [*overrides, "run.channels_last=true"]
    return config_path(source), list(overrides)


def train_method(method: str, data_root: Path, work: Path) -> None:
    """Train (or resume, or skip when finished) every run of ``method``; copy its small files."""
    config_file, variant = config_of(method)
    for name, extra in runs_of(method):
        run_dir = work / "runs" / name
        overrides = [
            "data.dataset=imagefolder", f"data.root={json.dumps(str(data_root))}", "data.download=false",
            f"run.out_dir={json.dumps(str(run_dir))}", f"run.progress={str(sys.stderr.isatty()).lower()}",
            *variant, *extra,
        ]
        if method in FROM_BASELINE:
            baseline = work / "runs" / "baseline" / "dense.pt"
            if not baseline.exists():
                raise SystemExit(f"{method} starts from the trained baseline, and {baseline} does not exist yet: run the baseline first.")
            overrides.append(f"model.checkpoint={json.dumps(str(baseline))}")
        if method in FACTORIZED_RUNS:
            overrides.append(f"model.plan={json.dumps(str(write_plan(FACTORIZED_RUNS[method], work)))}")
        if method in UNIFORM_RUNS:
            overrides.append(f"model.plan={json.dumps(str(write_uniform_plan(UNIFORM_RUNS[method], work)))}")
        if not (run_dir / "summary.json").exists():
            run_training(load_train_config(config_file, overrides), resume=has_saved_state(run_dir))
        copy_small_files(run_dir, RESULTS / name)


def write_plan(trp_run: str, work: Path) -> Path:
    """The rank plan of a finished TRP run, from its committed summary (every conv layer it
    decomposed, at its rank, by its scheme), written to ``work/plans/<run>.json``."""
    summary_path = RESULTS / trp_run / "summary.json"
    if not summary_path.exists():
        raise SystemExit(f"{summary_path} does not exist: train {trp_run} first (its ranks are the plan).")
    summary = json.loads(summary_path.read_text())
    if summary["config"]["decompose"]["decompose_linear"]:
        raise SystemExit(f"{summary_path}: the run decomposed linear layers too, and its summary does not say which "
                         "layers are linear; write the plan from its decomposed.pt instead.")
    scheme = summary["config"]["decompose"]["scheme"]
    plan = RankPlan([PlanEntry(name, scheme, rank) for name, rank in summary["ranks"].items()])
    path = work / "plans" / f"{trp_run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.to_json() + "\n")
    return path


def write_uniform_plan(trp_run: str, work: Path) -> Path:
    """``uniform_plan(trp_run)``, written to ``work/plans/<run>-uniform.json``."""
    plan = uniform_plan(trp_run)
    path = work / "plans" / f"{trp_run}-uniform.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.to_json() + "\n")
    return path


def copy_small_files(run_dir: Path, target: Path) -> None:
    """Copy a run's summary, per-epoch metrics and projections (those it has so far) to
    ``target``, to be committed; of a log that the run may be appending to, only the complete lines."""
    target.mkdir(parents=True, exist_ok=True)
    if (run_dir / "summary.json").exists():
        shutil.copyfile(run_dir / "summary.json", target / "summary.json")
    for file in ("metrics.jsonl", "projections.jsonl"):
        if (run_dir / file).exists():
            text = (run_dir / file).read_text()
            (target / file).write_text(text[:text.rfind("\n") + 1])


def collect_unfinished(work: Path) -> None:
    """Copy the small files of every run that has started and not finished, so a long run's
    progress so far can be committed and reported while it trains or after it was stopped."""
    for method in METHODS:
        for name, _ in runs_of(method):
            run_dir = work / "runs" / name
            if (run_dir / "metrics.jsonl").exists() and not (run_dir / "summary.json").exists():
                copy_small_files(run_dir, RESULTS / name)


def sweep_method(method: str, data_root: Path, work: Path) -> None:
    """Accuracy against speed-up with no fine-tuning; the baseline ("basic") and the nuclear
    norm alone with both schemes, each TRP run with its own, the paper-schedule runs as
    PAPER_SCHEDULE_SWEEPS says (variants of a main run are not swept)."""
    if method in FINETUNED or variant_of(method)[1] or method == "trp1-fig2":
        return
    dataset = load_dataset("imagefolder", data_root)
    config = load_train_config(*config_of(method)).decompose_config()
    if method in PAPER_SCHEDULE_SWEEPS:
        sweeps = [(label, scheme, 0) for label, scheme in PAPER_SCHEDULE_SWEEPS[method]]
    else:
        schemes = ("channel", "spatial") if method in ("baseline", "nu") else (config.scheme,)
        sweeps = [({"baseline": f"basic-{scheme}", "nu": f"nu-{scheme}"}.get(method, method), scheme, 0)
                  for scheme in schemes]
    if method == "baseline":
        sweeps.append((DATA_FIT, "channel", CALIBRATION_IMAGES))
    for label, scheme, calibration_images in sweeps:
        out = RESULTS / "sweeps" / label
        done = out / "sweep.json"
        if done.exists() and f"{label}: {LAYER}" in json.loads(done.read_text())["spectra"]:
            continue
        run_sweep(
            [work / "runs" / method / "dense.pt"], [label], dataset, dataclasses.replace(config, scheme=scheme),
            [EnergyCriterion(e) for e in SWEEP_ENERGIES], out, model_name="resnet20", spectrum_layers=[LAYER],
            calibration_images=calibration_images,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "trp" / "reproduce-cifar10")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the committed results")
    parser.add_argument("--collect", action="store_true",
                        help="copy the small files of every unfinished run in the work directory (whatever "
                             "--methods says), then rewrite the report")
    args = parser.parse_args()
    if args.collect:
        collect_unfinished(args.work)
    elif not args.report:
        data_root = prepare_data(args.data, args.work / "cifar10-jpeg")
        for method in args.methods:
            print(f"== {method}", flush=True)
            train_method(method, data_root, args.work)
            sweep_method(method, data_root, args.work)
    write_report()
    print(f"summaries, figures and report in {RESULTS}")


if __name__ == "__main__":
    main()
