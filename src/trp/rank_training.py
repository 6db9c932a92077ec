"""Trained Rank Pruning as a component of any training loop (TRP paper, section 3).

Two mechanisms, each optional, act on the layers :func:`trp.decompose_` would factorize
(same :class:`~trp.DecomposeConfig`, same ``filter_fn``):

* **Projection** (paper Eq. 2). Every ``period`` optimizer steps each targeted weight ``W``
  is replaced by its truncated-SVD reconstruction ``U_k S_k V_k^T`` (reshaped back, so the
  net keeps its dense shape), with ``k`` from the config's rank criterion (by default the
  energy criterion). It happens right after step ``t`` when ``t % period == 0``, so the
  forward and gradient of the next iteration are computed at the projected weights.
* **Speed-up cap** (``max_speedup``, not in the paper). A projection keeps each conv layer at
  least at the rank :func:`trp.target.ranks_for_speedup` allocates it, from the current
  weights, for that conv-MAC speed-up, so training settles near it rather than wherever the
  criterion stops.
* **Nuclear norm** (paper Eq. 6). ``lambda * sum_l ||W_l||_*`` enters through its
  sub-gradient ``lambda * U V^T`` (``U``, ``V`` truncated to the numerical rank), added to
  each weight's gradient just before every ``nuclear_every``-th optimizer step.

No SVD is computed that is not needed: a step right after a projection reuses the factors
of the projection; matrices of one shape are decomposed in one batched call. Frozen weights
(``requires_grad=False``) are never touched. Non-finite weights (a diverged run) are left
alone: the loss shows the divergence. The sub-gradient is added inside ``optimizer.step()``,
so after any gradient clipping the loop does.

Example, inside a plain loop::

    handle = trp.attach_trp(model, optimizer, trp.TRPConfig(period=20, nuclear_weight=3e-4))
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()          # TRP acts in the step's hooks
    handle.remove()
    trp.decompose_(model, handle.config.decompose, example_input)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import DecomposeConfig
from .counting import count_macs
from .criteria import EnergyCriterion, FixedRankCriterion
from .lowrank import batched_thin_svd, matrix_to_weight, select_rank, solution_from_svd, weight_to_matrix
from .surgery import FilterFn, factorizable_layers
from .target import LayerSpectrum, allocate_ranks

__all__ = ["TRPConfig", "TRPHandle", "attach_trp", "criterion_ranks", "projection_ranks"]


@dataclass
class TRPConfig:
    """Options of TRP training.

    Attributes:
        period: ``m``, optimizer steps between projections (paper: 20). ``>= 1``.
        project: do the periodic low-rank projection (TRP).
        nuclear_weight: ``lambda`` of the nuclear-norm regularizer (paper: 3e-4); 0 turns it off.
        nuclear_every: apply the nuclear-norm sub-gradient every this many steps (default 1).
        svd_on_host: for weights on an accelerator, compute the per-step SVDs on the CPU and
            copy the factors back (default): a GPU solves these many small eigenproblems
            slower than its host (:func:`svds_on_host`). ``False`` keeps them on the device.
            Weights on the CPU are not affected.
        decompose: which layers, which reshape (scheme) and which rank criterion; by default
            the channel scheme with the energy criterion, ``e = 0.02`` (paper, CIFAR-10).
        max_speedup: 0 (off), or a conv-MAC speed-up ``X >= 1`` that projections do not cut
            past: each conv layer keeps ``max(criterion's rank, allocated rank)``, the
            allocated ranks being :func:`trp.target.ranks_for_speedup`'s for ``X`` from the
            weights at that projection. :func:`attach_trp` then needs ``example_input``, and
            the trained net should be decomposed at :func:`projection_ranks`.
        max_speedup_tolerance: how far above ``max_speedup``, as a fraction, the cap's
            allocation may stop (:func:`trp.target.ranks_for_speedup`'s ``tolerance``). 0
            (default) takes the allocation closest above it that the bisection finds. The net
            can still sit below the cap where the criterion keeps more rank than the
            allocation. Each projection allocates afresh: with 0.02, a 164-epoch CIFAR-10
            TRP2+Nu run capped at 2.84x moved from 2.85x to 2.89x within that band
            (``benchmarks/RESULTS.md``).
    """

    period: int = 20
    project: bool = True
    nuclear_weight: float = 0.0
    nuclear_every: int = 1
    svd_on_host: bool = True
    decompose: DecomposeConfig = field(default_factory=lambda: DecomposeConfig(criterion=EnergyCriterion(0.02)))
    max_speedup: float = 0.0
    max_speedup_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not (self.max_speedup == 0 or (math.isfinite(self.max_speedup) and self.max_speedup >= 1)):
            raise ValueError(f"TRP max_speedup must be 0 (off) or a conv-MAC speed-up >= 1, got {self.max_speedup}.")
        if self.max_speedup and not self.project:
            raise ValueError("TRP max_speedup caps what projections cut, so it needs project = true.")
        tolerance = self.max_speedup_tolerance
        if isinstance(tolerance, bool) or not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError("TRP max_speedup_tolerance is the fraction the capped speed-up may exceed max_speedup by: "
                             f"finite and >= 0 (0 lands closest), got {tolerance!r}.")
        if tolerance and not self.max_speedup:
            raise ValueError("TRP max_speedup_tolerance only applies to a speed-up cap: set max_speedup too, or leave "
                             "the tolerance at 0.")
        for name in ("period", "nuclear_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TRP {name} must be a positive integer (steps), got {value!r}.")
        if not isinstance(self.svd_on_host, bool):
            raise ValueError(f"TRP svd_on_host must be true or false, got {self.svd_on_host!r}.")
        if not (math.isfinite(self.nuclear_weight) and self.nuclear_weight >= 0):
            raise ValueError(f"TRP nuclear_weight must be finite and >= 0, got {self.nuclear_weight}.")
        if not self.project and self.nuclear_weight == 0:
            raise ValueError("TRP does nothing: enable project, or set a nuclear_weight > 0 (or both).")

    @property
    def nuclear(self) -> bool:
        return self.nuclear_weight > 0


@dataclass
class _Target:
    name: str
    module: nn.Module
    weight: nn.Parameter
    groups: int

    def matrix(self, scheme: str) -> torch.Tensor:
        return weight_to_matrix(self.weight.detach(), scheme, self.groups)


@dataclass
class _CachedDirection:
    """``U V^T`` of a weight as it was right after a projection, and the weight's version
    counter then: still valid while the weight has not been modified."""

    version: int
    direction: torch.Tensor


class TRPHandle:
    """Attached TRP: hooks on the optimizer's step. ``remove()`` detaches them.

    ``steps`` counts optimizer steps since attaching; save and restore it with
    ``state_dict()`` / ``load_state_dict()`` to resume exactly. Callables appended to
    ``projection_listeners`` are called as ``listener(steps, ranks)`` after every projection
    (e.g. to log rank dynamics, the paper's Fig. 2).
    """

    def __init__(self, targets: list[_Target], optimizer: torch.optim.Optimizer, config: TRPConfig,
                 cap: _SpeedupCap | None = None) -> None:
        self.config = config
        self.targets = targets
        self.cap = cap
        self.steps = 0
        self.last_ranks: dict[str, int] = {}
        self.projection_listeners: list[Callable[[int, dict[str, int]], None]] = []
        self._cache: dict[str, _CachedDirection] = {}
        self._optimizer = optimizer
        self._hooks = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    @property
    def names(self) -> list[str]:
        return [target.name for target in self.targets]

    def remove(self) -> None:
        """Detach from the optimizer; the model keeps its current weights."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._cache.clear()
        self._optimizer._trp_attached = False  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        """The step counter, and the factors of a projection not yet used by a nuclear step
        (so that a resumed run takes exactly the step an uninterrupted one would)."""
        return {"steps": self.steps, "directions": {name: cached.direction for name, cached in self._cache.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore after the model's weights have been loaded."""
        self.steps = int(state["steps"])
        weights = {target.name: target.weight for target in self.targets}
        self._cache = {
            name: _CachedDirection(weights[name]._version, direction.to(weights[name].device))
            for name, direction in state.get("directions", {}).items()
        }

    def _scheme(self) -> str:
        return self.config.decompose.scheme

    def _svds(self, targets: list[_Target] | None = None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Thin SVDs of ``targets`` (default: all) in their scheme's matrix form, where
        ``config.svd_on_host`` says."""
        matrices = [target.matrix(self._scheme()) for target in (self.targets if targets is None else targets)]
        with torch.no_grad():
            return svds_on_host(matrices) if self.config.svd_on_host else batched_thin_svd(matrices)

    @torch.no_grad()
    def project_(self) -> dict[str, int]:
        """Replace every targeted weight by its truncated-SVD reconstruction now.

        Returns:
            the rank each layer was projected to, by name.
        """
        svds = self._svds()
        ranks = _ranks_now(self.targets, [s for _, s, _ in svds], self.config.decompose, self.cap)
        for target, (u, s, vh) in zip(self.targets, svds):
            solution = solution_from_svd(u, s, vh, FixedRankCriterion(ranks[target.name]))
            ranks[target.name] = solution.rank  # 1 for an all-zero weight, whatever was asked
            shape = tuple(target.weight.shape)
            target.weight.copy_(matrix_to_weight(solution.reconstruct(), shape, self._scheme()))
            if self.config.nuclear:
                direction = _direction(solution.u, solution.s, solution.vh)
                self._cache[target.name] = _CachedDirection(
                    target.weight._version, matrix_to_weight(direction, shape, self._scheme())
                )
        self.last_ranks = ranks
        for listener in self.projection_listeners:
            listener(self.steps, ranks)
        return ranks

    @torch.no_grad()
    def add_nuclear_subgradient_(self) -> None:
        """``grad += lambda * U V^T`` for every targeted weight that has a gradient."""
        pending = [t for t in self.targets if t.weight.grad is not None]
        fresh = [t for t in pending if not self._cached(t)]
        for target, (u, s, vh) in zip(fresh, self._svds(fresh)):
            direction = matrix_to_weight(_direction(u, s, vh), tuple(target.weight.shape), self._scheme())
            target.weight.grad.add_(direction.to(target.weight.grad.dtype), alpha=self.config.nuclear_weight)
        for target in pending:
            if self._cached(target):
                direction = self._cache[target.name].direction
                target.weight.grad.add_(direction.to(target.weight.grad.dtype), alpha=self.config.nuclear_weight)
        self._cache.clear()

    def _cached(self, target: _Target) -> bool:
        cached = self._cache.get(target.name)
        return cached is not None and cached.version == target.weight._version

    def nuclear_norm(self) -> float:
        """``sum_l ||W_l||_*`` over the targeted weights (the regularizer without lambda)."""
        return float(sum(float(s.sum()) for _, s, _ in self._svds()))

    def energy_ranks(self) -> dict[str, int]:
        """The rank a projection would give each layer now: the configured criterion's, raised
        to the cap's where ``max_speedup`` is set (for rank dynamics)."""
        with torch.no_grad():
            spectra = [s for _, s, _ in self._svds()]
        return _ranks_now(self.targets, spectra, self.config.decompose, self.cap)

    def _finite(self) -> bool:
        """Every targeted weight finite: one fused reduction per device, so one host-device
        sync per step on a GPU rather than one per layer."""
        flags: dict[torch.device, list[torch.Tensor]] = {}
        for target in self.targets:
            flags.setdefault(target.weight.device, []).append(target.weight.detach().isfinite().all())
        return all(bool(torch.stack(device_flags).all()) for device_flags in flags.values())

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.config.nuclear and self.steps % self.config.nuclear_every == 0 and self._finite():
            self.add_nuclear_subgradient_()

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.steps += 1
        if self.config.project and self.steps % self.config.period == 0 and self._finite():
            self.project_()


def svds_on_host(matrices: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`batched_thin_svd` of ``(g, m, k)`` matrices, computed on the CPU; each matrix's
    factors come back on its own device, in float32 (float64 for float64 input), as
    :func:`batched_thin_svd` gives them. The matrices of one device and working precision go
    down in one copy and their factors come back in one.

    The per-step SVDs of TRP are many small eigenproblems, which a GPU solves slower than its
    host. On an H200 with 16 host cores, one SVD of every targeted weight took, on the GPU
    against through the host (copies included): ResNet-20 8.4 against 5.2 ms (channel scheme)
    and 41.5 against 18.7 ms (spatial); ResNet-56 17.9 against 12.5 and 121.6 against 42.7 ms.
    A spatial TRP+Nu step (batch 128) took 25.7 ms instead of 53.9 (ResNet-20) and 77.2 instead
    of 155.5 (ResNet-56): ``benchmarks/trp_overhead.py --device cuda``, one run,
    ``benchmarks/results/trp_overhead_cuda.json``. A weaker host may not win: see
    ``TRPConfig.svd_on_host``.
    """
    if all(matrix.device.type == "cpu" for matrix in matrices):
        return batched_thin_svd(matrices)
    return _svds_through_host(matrices)


def _svds_through_host(matrices: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * len(matrices)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, matrix in enumerate(matrices):
        working = torch.float64 if matrix.dtype == torch.float64 else torch.float32
        groups.setdefault((matrix.device, working), []).append(index)
    for (device, working), indices in groups.items():
        group = [matrices[i].to(working) for i in indices]
        host = torch.cat([matrix.reshape(-1) for matrix in group]).cpu().split([m.numel() for m in group])
        factors = batched_thin_svd([flat.view(m.shape) for flat, m in zip(host, group)])
        parts = [part for triple in factors for part in triple]
        back = torch.cat([part.reshape(-1) for part in parts]).to(device).split([part.numel() for part in parts])
        shaped = [flat.view(part.shape) for flat, part in zip(back, parts)]
        for slot, index in enumerate(indices):
            results[index] = (shaped[3 * slot], shaped[3 * slot + 1], shaped[3 * slot + 2])
    return results  # type: ignore[return-value]


def criterion_ranks(model: nn.Module, config: DecomposeConfig, filter_fn: FilterFn | None = None) -> dict[str, int]:
    """The rank ``config.criterion`` would give each layer ``decompose_`` considers, now,
    without changing the model (e.g. to log rank dynamics of any run)."""
    targets = _targets(model, config, filter_fn)
    return _ranks_now(targets, _spectra(targets, config.scheme), config, None)


def projection_ranks(
    model: nn.Module,
    config: TRPConfig,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    filter_fn: FilterFn | None = None,
) -> dict[str, int]:
    """The rank a TRP projection with ``config`` would give each layer of ``model`` now (the
    criterion's, raised to the allocation's for ``config.max_speedup``), without changing the
    model. Decompose a net trained with a cap at these ranks (``DecomposeConfig.ranks``):
    the criterion alone would cut past the cap. ``example_input`` as for :func:`attach_trp`."""
    targets = _trainable_targets(model, config.decompose, filter_fn)
    cap = _SpeedupCap.of(model, targets, config, example_input)
    return _ranks_now(targets, _spectra(targets, config.decompose.scheme), config.decompose, cap)


def _spectra(targets: list[_Target], scheme: str) -> list[torch.Tensor]:
    with torch.no_grad():
        return [s for _, s, _ in batched_thin_svd([target.matrix(scheme) for target in targets])]


def _targets(model: nn.Module, config: DecomposeConfig, filter_fn: FilterFn | None) -> list[_Target]:
    return [
        _Target(name, module, module.weight, getattr(module, "groups", 1))
        for name, module in factorizable_layers(model, config, filter_fn)
    ]


@dataclass
class _SpeedupCap:
    """``TRPConfig.max_speedup`` (and its tolerance) with what allocating ranks for it needs:
    each targeted conv's input shapes and the whole net's conv MACs."""

    speedup: float
    tolerance: float
    input_shapes: dict[str, list[tuple[int, ...]]]
    conv_total: int

    @classmethod
    def of(cls, model: nn.Module, targets: list[_Target], config: TRPConfig,
           example_input: torch.Tensor | tuple[torch.Tensor, ...] | None) -> _SpeedupCap | None:
        """The cap of ``config`` (``None`` where ``max_speedup`` is off)."""
        if not config.max_speedup:
            return None
        if example_input is None:
            raise TypeError("TRP max_speedup needs example_input (e.g. torch.zeros(1, 3, 32, 32)): one forward pass "
                            "measures each layer's input size, which its MAC cost depends on.")
        counted = count_macs(model, example_input)
        counts = counted.by_name()
        shapes = {t.name: counts[t.name].input_shapes for t in targets
                  if isinstance(t.module, nn.Conv2d) and t.name in counts}
        return cls(config.max_speedup, config.max_speedup_tolerance, shapes, counted.conv_macs)

    def ranks(self, targets: list[_Target], spectra: list[torch.Tensor], config: DecomposeConfig) -> dict[str, int]:
        """The ranks :func:`trp.target.ranks_for_speedup` allocates from these spectra."""
        layers = [LayerSpectrum.of(t.name, t.module, s.detach().cpu(), self.input_shapes[t.name], config.scheme)
                  for t, s in zip(targets, spectra) if t.name in self.input_shapes]
        return allocate_ranks(layers, self.conv_total, config, self.speedup, self.tolerance).ranks


def _ranks_now(targets: list[_Target], spectra: list[torch.Tensor], config: DecomposeConfig,
               cap: _SpeedupCap | None) -> dict[str, int]:
    """The rank a projection gives each target: its criterion's (or fixed) rank, raised to
    the capped allocation's where there is a cap."""
    ranks = {t.name: select_rank(s, config.criterion_for(t.name), config.rank_multiple) for t, s in zip(targets, spectra)}
    if cap is not None:
        for name, rank in cap.ranks(targets, spectra, config).items():
            ranks[name] = max(ranks[name], rank)
    return ranks


def _direction(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    """``U_r V_r^T`` with ``r`` the numerical rank: singular values above
    ``sqrt(eps) * s_max`` (the resolution of the Gram-matrix SVD). Shape ``(g, m, k)``."""
    tolerance = s[..., :1] * math.sqrt(torch.finfo(s.dtype).eps)
    kept = (s > tolerance).to(u.dtype)
    return (u * kept.unsqueeze(-2)) @ vh


def attach_trp(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TRPConfig | None = None,
    filter_fn: FilterFn | None = None,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
) -> TRPHandle:
    """Attach TRP to ``optimizer`` for the layers of ``model`` that ``config.decompose`` and
    ``filter_fn`` select (exactly those :func:`trp.decompose_` would consider), except
    frozen ones (``requires_grad=False``). One TRP per optimizer.

    Every targeted weight must be optimized by ``optimizer``. Works with DDP: pass the
    wrapped model's ``.module``; weights, gradients and therefore projections are identical
    on every rank.

    ``example_input`` (an input batch, run once in eval mode) is needed only for
    ``config.max_speedup``, whose MAC counts depend on each layer's input size.

    Raises:
        ValueError: no layer is selected, a targeted weight is not in the optimizer, TRP
            is already attached to it, or ``max_speedup`` is out of the layers' reach.
        TypeError: ``max_speedup`` without ``example_input``.
    """
    config = config if config is not None else TRPConfig()
    targets = _trainable_targets(model, config.decompose, filter_fn)
    if not targets:
        raise ValueError(
            "TRP found no trainable conv or linear layer to act on: check include/exclude, filter_fn and requires_grad."
        )
    if getattr(optimizer, "_trp_attached", False):
        raise ValueError("TRP is already attached to this optimizer: remove() the first handle before attaching again.")
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [target.name for target in targets if id(target.weight) not in optimized]
    if missing:
        raise ValueError(
            f"the optimizer does not update {len(missing)} targeted weight(s) (e.g. {missing[0]}): "
            "create the optimizer over model.parameters() before attaching TRP, or exclude those layers."
        )
    cap = _SpeedupCap.of(model, targets, config, example_input)
    if cap is not None:  # an unreachable cap fails now, not at the first projection
        cap.ranks(targets, _spectra(targets, config.decompose.scheme), config.decompose)
    handle = TRPHandle(targets, optimizer, config, cap)
    optimizer._trp_attached = True  # type: ignore[attr-defined]
    return handle


def _trainable_targets(model: nn.Module, config: DecomposeConfig, filter_fn: FilterFn | None) -> list[_Target]:
    return [target for target in _targets(model, config, filter_fn) if target.weight.requires_grad]
