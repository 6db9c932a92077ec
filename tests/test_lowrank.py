"""Low-rank math against independent references: LAPACK's SVD in float64 and hand counts."""

import math

import pytest
import torch

from trp.criteria import (
    EnergyCriterion,
    FixedRankCriterion,
    FractionCriterion,
    ValueCriterion,
    criterion_from_dict,
    parse_criterion,
)
from trp.lowrank import matrix_to_weight, round_rank, truncated_svd, weight_to_matrix


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_reshape_round_trip(scheme, groups):
    weight = torch.randn(6, 4 // groups, 3, 5)
    matrix = weight_to_matrix(weight, scheme, groups)
    assert torch.equal(matrix_to_weight(matrix, tuple(weight.shape), scheme), weight)


def test_channel_matrix_layout_by_hand():
    weight = torch.randn(6, 4, 3, 5)
    matrix = weight_to_matrix(weight, "channel")[0]
    assert matrix.shape == (6, 4 * 3 * 5)
    for n, c, i, j in [(0, 0, 0, 0), (5, 3, 2, 4), (2, 1, 1, 3)]:
        assert matrix[n, c * 15 + i * 5 + j] == weight[n, c, i, j]


def test_spatial_matrix_layout_by_hand():
    weight = torch.randn(6, 4, 3, 5)
    matrix = weight_to_matrix(weight, "spatial")[0]
    assert matrix.shape == (4 * 3, 6 * 5)
    for n, c, i, j in [(0, 0, 0, 0), (5, 3, 2, 4), (2, 1, 1, 3)]:
        assert matrix[c * 3 + i, n * 5 + j] == weight[n, c, i, j]


def test_grouped_matrices_are_per_group_blocks():
    weight = torch.randn(6, 2, 3, 3)  # groups=2: 3 filters of 2 channels per group
    matrix = weight_to_matrix(weight, "channel", groups=2)
    assert matrix.shape == (2, 3, 18)
    assert torch.equal(matrix[1], weight[3:].reshape(3, 18))


@pytest.mark.parametrize("shape", [(40, 90), (90, 40), (3, 30, 30)])
@pytest.mark.parametrize("rank", [1, 7, 25])
def test_truncation_error_is_the_singular_value_tail(shape, rank):
    """Eckart–Young: ||M - M_r||_F^2 is the sum of the discarded s_j^2 (LAPACK reference)."""
    generator = torch.Generator().manual_seed(rank)
    matrix = torch.randn(*shape, generator=generator, dtype=torch.float64)
    solution = truncated_svd(matrix, FixedRankCriterion(rank))
    batch = matrix if matrix.dim() == 3 else matrix.unsqueeze(0)
    reference = torch.linalg.svdvals(batch)
    measured = (solution.reconstruct() - batch).norm() / batch.norm()
    tail = math.sqrt(float(reference[:, rank:].square().sum() / reference.square().sum()))
    assert solution.rank == rank
    assert solution.full_rank == min(shape[-2:])
    torch.testing.assert_close(solution.singular_values, reference, rtol=1e-9, atol=1e-9)
    assert solution.relative_error == pytest.approx(tail, rel=1e-9)
    assert float(measured) == pytest.approx(tail, rel=1e-9)


def test_factors_are_orthonormal_and_balanced():
    matrix = torch.randn(2, 20, 50, dtype=torch.float64)
    solution = truncated_svd(matrix, FixedRankCriterion(8))
    eye = torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(solution.u.mT @ solution.u, eye.expand(2, 8, 8))
    torch.testing.assert_close(solution.vh @ solution.vh.mT, eye.expand(2, 8, 8))
    torch.testing.assert_close(solution.left @ solution.right, solution.reconstruct())
    torch.testing.assert_close(solution.left.norm(dim=-2), solution.right.norm(dim=-1))


SPECTRUM = torch.tensor([4.0, 2.0, 1.0, 0.5])  # energies 16, 4, 1, 0.25; total 21.25


@pytest.mark.parametrize(
    "pruned, rank",
    [(0.0, 4), (0.011, 4), (0.012, 3), (0.05, 3), (0.06, 2), (0.25, 1), (0.999, 1)],
)
def test_energy_criterion_by_hand(pruned, rank):
    # tails after rank 1, 2, 3: 5.25/21.25 = 0.247, 1.25/21.25 = 0.0588, 0.25/21.25 = 0.01176
    assert EnergyCriterion(pruned).select_rank(SPECTRUM) == rank


def test_energy_zero_keeps_exactly_the_nonzero_values():
    assert EnergyCriterion(0.0).select_rank(torch.tensor([3.0, 1.0, 0.0, 0.0])) == 2


@pytest.mark.parametrize("seed", range(20))
def test_energy_criterion_matches_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(30, generator=generator, dtype=torch.float64).sort(descending=True).values
    pruned = float(torch.rand(1, generator=generator)) * 0.5
    energies = [float(v) ** 2 for v in values]
    total = sum(energies)
    expected = next(k for k in range(1, 31) if sum(energies[k:]) <= pruned * total)
    assert EnergyCriterion(pruned).select_rank(values) == expected


def test_value_criterion():
    assert ValueCriterion(1.0).select_rank(SPECTRUM) == 3
    assert ValueCriterion(10.0).select_rank(SPECTRUM) == 1  # never rank 0


def test_fixed_rank_and_fraction():
    assert FixedRankCriterion(2).select_rank(SPECTRUM) == 2
    assert FractionCriterion(0.5).select_rank(torch.ones(64)) == 32
    assert FractionCriterion(0.01).select_rank(torch.ones(10)) == 1
    assert FractionCriterion(1.0).select_rank(torch.ones(10)) == 10


def test_rank_above_full_rank_is_a_clear_error():
    with pytest.raises(ValueError, match="exceeds the full rank 4"):
        FixedRankCriterion(5).select_rank(SPECTRUM)
    with pytest.raises(ValueError, match="exceeds the full rank 10"):
        truncated_svd(torch.randn(10, 20), FixedRankCriterion(11))


@pytest.mark.parametrize(
    "make",
    [
        lambda: EnergyCriterion(1.0),
        lambda: EnergyCriterion(-0.1),
        lambda: EnergyCriterion(float("nan")),
        lambda: ValueCriterion(-1.0),
        lambda: FixedRankCriterion(0),
        lambda: FixedRankCriterion(2.5),
        lambda: FractionCriterion(0.0),
        lambda: FractionCriterion(1.5),
    ],
)
def test_impossible_criteria_are_rejected(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("text", ["energy:0.02", "value:0.05", "rank:16", "fraction:0.5"])
def test_criterion_text_and_dict_round_trip(text):
    criterion = parse_criterion(text)
    assert criterion_from_dict(criterion.to_dict()) == criterion


@pytest.mark.parametrize("text", ["energy", "energy:x", "entropy:0.1", "rank:1.5", ""])
def test_bad_criterion_text(text):
    with pytest.raises(ValueError, match="criterion"):
        parse_criterion(text)


def test_rank_multiple_rounds_up_and_caps_at_full_rank():
    assert round_rank(5, 8, 64) == 8
    assert round_rank(16, 8, 64) == 16
    assert round_rank(5, 8, 6) == 6
    solution = truncated_svd(torch.randn(64, 100), FixedRankCriterion(5), rank_multiple=8)
    assert solution.rank == 8
    with pytest.raises(ValueError, match="multiple"):
        round_rank(5, 0, 64)


def test_group_rank_is_the_largest_group_needs():
    low = torch.randn(10, 2) @ torch.randn(2, 30)  # rank 2
    high = torch.randn(10, 30)  # rank 10
    solution = truncated_svd(torch.stack([low, high]).double(), EnergyCriterion(1e-9))
    assert solution.rank == 10


def test_all_zero_weight_is_handled_explicitly():
    solution = truncated_svd(torch.zeros(16, 27), EnergyCriterion(0.02))
    assert solution.rank == 1
    assert solution.relative_error == 0.0
    assert torch.count_nonzero(solution.reconstruct()) == 0
    assert torch.isfinite(solution.left).all() and torch.isfinite(solution.right).all()


def test_non_finite_weight_is_rejected():
    matrix = torch.randn(4, 5)
    matrix[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        truncated_svd(matrix, EnergyCriterion(0.02))


def test_half_precision_is_promoted():
    matrix = torch.randn(8, 12).half()
    solution = truncated_svd(matrix, FixedRankCriterion(8))
    assert solution.u.dtype == torch.float32
    torch.testing.assert_close(solution.reconstruct()[0], matrix.float(), atol=1e-3, rtol=1e-3)


def test_non_convergence_falls_back_to_float64_svd(monkeypatch):
    matrix = torch.randn(3, 12, 20)

    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("simulated: eigh did not converge")

    monkeypatch.setattr(torch.linalg, "eigh", fail)
    calls = []
    real_svd = torch.linalg.svd

    def recording_svd(a, *args, **kwargs):
        calls.append(a.dtype)
        return real_svd(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", recording_svd)
    solution = truncated_svd(matrix, FixedRankCriterion(12))
    assert calls == [torch.float64]
    assert solution.u.dtype == torch.float32
    torch.testing.assert_close(solution.reconstruct(), matrix, atol=1e-5, rtol=1e-5)


def test_total_non_convergence_is_a_clear_error(monkeypatch):
    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("simulated")

    monkeypatch.setattr(torch.linalg, "eigh", fail)
    monkeypatch.setattr(torch.linalg, "svd", fail)
    with pytest.raises(RuntimeError, match="did not converge, even in float64"):
        truncated_svd(torch.randn(5, 6), FixedRankCriterion(2))


def test_float32_spectrum_is_accurate_far_below_sqrt_eps():
    """The Gram-matrix SVD must not floor small singular values at sqrt(eps) * s_max."""
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(64, 5, generator=generator) @ torch.randn(5, 576, generator=generator)  # rank 5
    solution = truncated_svd(matrix, ValueCriterion(0.01))
    assert solution.rank == 5
    values = solution.singular_values[0]
    assert float(values[5:].max()) < 1e-5 * float(values[0])
    reference = torch.linalg.svdvals(matrix.double())
    torch.testing.assert_close(values[:5].double(), reference[:5], rtol=1e-5, atol=0)
