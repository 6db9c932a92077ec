"""Factorized layers: a dense ``Conv2d`` or ``Linear`` as two thinner layers in sequence.

===================  =====================================  ====================================
layer                first                                  second
===================  =====================================  ====================================
ChannelWiseConv2d    ``kh x kw`` conv ``c -> g*r``, original  ``1 x 1`` conv ``g*r -> n``, bias
                     stride, padding, dilation
SpatialWiseConv2d    ``kh x 1`` conv ``c -> g*r``, stride     ``1 x kw`` conv ``g*r -> n``,
                     ``(sh, 1)``, padding ``(ph, 0)``         stride ``(1, sw)``, padding
                                                             ``(0, pw)``, bias
LowRankLinear        ``Linear(in -> r)``, no bias            ``Linear(r -> out)``, bias
===================  =====================================  ====================================

``r`` is the rank per group, ``g`` the dense layer's groups (both convs keep ``groups=g``, so
a grouped conv is factorized group by group). At full rank both conv schemes reproduce the
dense output exactly, for any stride, dilation, padding (ints, per-axis tuples, ``'same'``,
``'valid'``) and ``padding_mode``: the spatial split is exact because the ``kh x 1`` conv
acts on each input column independently, so padding columns before or after it commutes.

Each layer has ``from_dense(dense, criterion)`` (copies the truncated-SVD factors),
``like(dense, rank)`` (the architecture with zero weights, to load a checkpoint into) and
``to_dense()``.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import torch
from torch import nn

from .criteria import FractionCriterion, RankCriterion
from .lowrank import LowRankSolution, Scheme, matrix_to_weight, truncated_svd, weight_to_matrix

__all__ = [
    "FactorizedConv2d",
    "ChannelWiseConv2d",
    "SpatialWiseConv2d",
    "LowRankLinear",
    "FactorizedLayer",
    "FACTORIZED_CONVS",
    "unsupported_conv_reason",
]

FULL_RANK = FractionCriterion(1.0)
_Layer = TypeVar("_Layer", bound="FactorizedLayer")


def is_channels_last(weight: torch.Tensor) -> bool:
    """Whether a conv weight ``(n, c, kh, kw)`` has the strides ``.to(memory_format=
    torch.channels_last)`` gives it. Strides, not ``is_contiguous``: a weight with a size-1
    dimension, e.g. ``(n, c, 1, 1)``, passes both contiguity checks whichever layout it has."""
    if weight.dim() != 4:
        return False
    layouts = torch.empty(weight.shape, device="meta")
    channels_last = layouts.to(memory_format=torch.channels_last).stride()
    return weight.stride() == channels_last != layouts.stride()


def unsupported_conv_reason(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` cannot be factorized usefully, or ``None`` if it can."""
    if conv.groups > 1 and conv.in_channels == conv.groups:
        return (
            "depthwise conv (one input channel per group): each filter is already a single "
            f"{conv.kernel_size[0]}x{conv.kernel_size[1]} kernel, a low-rank form saves nothing"
        )
    return None


class FactorizedLayer(nn.Module):
    """Shared behaviour: ``forward = second(first(x))`` and construction from a dense layer.

    Subclasses define how the two factors ``left (g, m, r)`` and ``right (g, r, k)`` of the
    reshaped dense weight map onto ``first.weight`` and ``second.weight``.
    """

    scheme: ClassVar[str]
    first: nn.Module
    second: nn.Module
    rank: int

    def __init__(self, rank: int) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}.")
        self.rank = rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @classmethod
    def like(cls: type[_Layer], dense: nn.Module, rank: int) -> _Layer:
        """The factorized architecture for ``dense`` at ``rank``, on its device and dtype, in
        its train/eval mode and (for convs) its channels_last layout, with all weights zero (to
        be overwritten in place, e.g. by a checkpoint).
        """
        cls._check_dense(dense)
        layer = cls._architecture(dense, rank, device="meta").to_empty(device=dense.weight.device)
        if is_channels_last(dense.weight):
            layer.to(memory_format=torch.channels_last)
        with torch.no_grad():
            for parameter in layer.parameters():
                parameter.zero_()
        return layer.train(dense.training)

    @classmethod
    def from_dense(
        cls: type[_Layer],
        dense: nn.Module,
        criterion: RankCriterion = FULL_RANK,
        rank_multiple: int = 1,
    ) -> _Layer:
        """Factorize ``dense`` by truncated SVD at the rank ``criterion`` picks."""
        return cls.from_solution(dense, cls.solve(dense, criterion, rank_multiple))

    @classmethod
    def dense_matrix(cls, dense: nn.Module) -> torch.Tensor:
        """``dense``'s weight reshaped for this scheme, ``(g, m, k)``: a view where the layout
        allows one (the channel scheme of a contiguous weight), else a copy."""
        cls._check_dense(dense)
        return weight_to_matrix(dense.weight.detach(), cls.scheme, getattr(dense, "groups", 1))

    @classmethod
    def full_rank_of(cls, dense: nn.Module) -> int:
        """The largest rank this scheme can give ``dense``: ``min(m, k)``."""
        return min(cls.dense_matrix(dense).shape[-2:])

    @classmethod
    def solve(cls, dense: nn.Module, criterion: RankCriterion, rank_multiple: int = 1) -> LowRankSolution:
        """The truncated SVD of ``dense``'s reshaped weight, without building the layer."""
        return truncated_svd(cls.dense_matrix(dense), criterion, rank_multiple)

    @classmethod
    def from_solution(cls: type[_Layer], dense: nn.Module, solution: LowRankSolution) -> _Layer:
        """Build the layer from a solution computed by :meth:`solve` on ``dense``."""
        layer = cls.like(dense, solution.rank)
        with torch.no_grad():
            layer._set_factors(solution.left, solution.right)
            if dense.bias is not None:
                layer.second.bias.copy_(dense.bias)
        return layer.requires_grad_(dense.weight.requires_grad)

    def dense_weight(self) -> torch.Tensor:
        """The dense weight this layer computes, shape of the original layer's weight."""
        left, right = self._factors()
        return matrix_to_weight(left @ right, self._dense_weight_shape(), self.scheme)

    def to_dense(self) -> nn.Module:
        """The equivalent dense layer (same device, dtype, train/eval mode, ``requires_grad``,
        and channels_last layout where a factor has it)."""
        dense = self._empty_dense()
        if any(is_channels_last(factor.weight) for factor in (self.first, self.second)):
            dense.to(memory_format=torch.channels_last)
        with torch.no_grad():
            dense.weight.copy_(self.dense_weight())
            if dense.bias is not None:
                dense.bias.copy_(self.second.bias)
        return dense.train(self.training).requires_grad_(self.second.weight.requires_grad)

    @classmethod
    def _check_dense(cls, dense: nn.Module) -> None:
        raise NotImplementedError

    @classmethod
    def _architecture(cls: type[_Layer], dense: nn.Module, rank: int, device: str) -> _Layer:
        raise NotImplementedError

    def _set_factors(self, left: torch.Tensor, right: torch.Tensor) -> None:
        raise NotImplementedError

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _dense_weight_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _empty_dense(self) -> nn.Module:
        raise NotImplementedError


class FactorizedConv2d(FactorizedLayer):
    """Common constructor of the two conv schemes; the arguments mirror ``nn.Conv2d``
    plus ``rank``, the number of intermediate channels per group."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        rank: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(rank)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = nn.modules.utils._pair(kernel_size)
        self.stride = nn.modules.utils._pair(stride)
        self.padding = padding if isinstance(padding, str) else nn.modules.utils._pair(padding)
        self.dilation = nn.modules.utils._pair(dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.first, self.second = self._make_convs(bias, {"device": device, "dtype": dtype})

    def _make_convs(self, bias: bool, factory: dict) -> tuple[nn.Conv2d, nn.Conv2d]:
        raise NotImplementedError

    @classmethod
    def _architecture(cls, dense: nn.Conv2d, rank: int, device: str) -> FactorizedConv2d:
        return cls(
            dense.in_channels,
            dense.out_channels,
            dense.kernel_size,
            rank,
            stride=dense.stride,
            padding=dense.padding,
            dilation=dense.dilation,
            groups=dense.groups,
            bias=dense.bias is not None,
            padding_mode=dense.padding_mode,
            device=device,
            dtype=dense.weight.dtype,
        )

    @classmethod
    def _check_dense(cls, dense: nn.Module) -> None:
        if type(dense) is not nn.Conv2d:
            raise TypeError(f"{cls.__name__} factorizes an nn.Conv2d, got {type(dense).__name__}.")
        reason = unsupported_conv_reason(dense)
        if reason:
            raise ValueError(f"cannot factorize this conv: {reason}. Leave it dense.")

    def _dense_weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _empty_dense(self) -> nn.Conv2d:
        weight = self.second.weight
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.second.bias is not None,
            padding_mode=self.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
            f"stride={self.stride}, padding={self.padding}, groups={self.groups}"
        )


class ChannelWiseConv2d(FactorizedConv2d):
    """Channel-wise (TRP1) factorization: ``kh x kw`` conv to ``r`` channels per group, then
    a ``1 x 1`` conv. MACs per output pixel ``r*g*(c_g*kh*kw + n_g)`` (dense ``n*c_g*kh*kw``)."""

    scheme: ClassVar[Scheme] = "channel"

    def _make_convs(self, bias: bool, factory: dict) -> tuple[nn.Conv2d, nn.Conv2d]:
        width = self.groups * self.rank
        first = nn.Conv2d(
            self.in_channels, width, self.kernel_size, stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=self.groups, bias=False, padding_mode=self.padding_mode,
            **factory,
        )
        second = nn.Conv2d(width, self.out_channels, 1, groups=self.groups, bias=bias, **factory)
        return first, second

    def _set_factors(self, left: torch.Tensor, right: torch.Tensor) -> None:
        # left (g, n_g, r) -> second (n, r, 1, 1); right (g, r, c_g*kh*kw) -> first (g*r, c_g, kh, kw)
        self.second.weight.copy_(left.reshape(self.second.weight.shape))
        self.first.weight.copy_(right.reshape(self.first.weight.shape))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        g, r = self.groups, self.rank
        left = self.second.weight.reshape(g, self.out_channels // g, r)
        right = self.first.weight.reshape(g, r, -1)
        return left, right


class SpatialWiseConv2d(FactorizedConv2d):
    """Spatial-wise (TRP2) factorization: ``kh x 1`` conv to ``r`` channels per group at the
    input width, then a ``1 x kw`` conv. Exact cost depends on the input size: see
    :func:`trp.counting.conv2d_macs`."""

    scheme: ClassVar[Scheme] = "spatial"

    def _make_convs(self, bias: bool, factory: dict) -> tuple[nn.Conv2d, nn.Conv2d]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        if isinstance(self.padding, str):
            vertical_padding: str | tuple[int, int] = self.padding
            horizontal_padding: str | tuple[int, int] = self.padding
        else:
            vertical_padding, horizontal_padding = (self.padding[0], 0), (0, self.padding[1])
        width = self.groups * self.rank
        first = nn.Conv2d(
            self.in_channels, width, (kh, 1), stride=(sh, 1), padding=vertical_padding,
            dilation=(dh, 1), groups=self.groups, bias=False, padding_mode=self.padding_mode,
            **factory,
        )
        second = nn.Conv2d(
            width, self.out_channels, (1, kw), stride=(1, sw), padding=horizontal_padding,
            dilation=(1, dw), groups=self.groups, bias=bias, padding_mode=self.padding_mode,
            **factory,
        )
        return first, second

    def _set_factors(self, left: torch.Tensor, right: torch.Tensor) -> None:
        g, r = self.groups, self.rank
        (kh, kw), c_g, n_g = self.kernel_size, self.in_channels // g, self.out_channels // g
        # left (g, c_g*kh, r) -> first (g*r, c_g, kh, 1)
        self.first.weight.copy_(left.reshape(g, c_g, kh, r).permute(0, 3, 1, 2).reshape(g * r, c_g, kh, 1))
        # right (g, r, n_g*kw) -> second (n, r, 1, kw)
        self.second.weight.copy_(right.reshape(g, r, n_g, kw).permute(0, 2, 1, 3).reshape(g * n_g, r, 1, kw))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        g, r = self.groups, self.rank
        (kh, kw), c_g, n_g = self.kernel_size, self.in_channels // g, self.out_channels // g
        left = self.first.weight.reshape(g, r, c_g * kh).permute(0, 2, 1)
        right = self.second.weight.reshape(g, n_g, r, kw).permute(0, 2, 1, 3).reshape(g, r, n_g * kw)
        return left, right


class LowRankLinear(FactorizedLayer):
    """``Linear(in -> out)`` as ``Linear(in -> rank, no bias)`` then ``Linear(rank -> out)``.
    MACs per input row ``rank * (in + out)`` (dense ``in * out``)."""

    scheme: ClassVar[str] = "linear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(rank)
        self.in_features, self.out_features = in_features, out_features
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def _architecture(cls, dense: nn.Linear, rank: int, device: str) -> LowRankLinear:
        return cls(
            dense.in_features, dense.out_features, rank, bias=dense.bias is not None,
            device=device, dtype=dense.weight.dtype,
        )

    @classmethod
    def _check_dense(cls, dense: nn.Module) -> None:
        if type(dense) is not nn.Linear:
            raise TypeError(f"LowRankLinear factorizes an nn.Linear, got {type(dense).__name__}.")

    def _set_factors(self, left: torch.Tensor, right: torch.Tensor) -> None:
        self.second.weight.copy_(left[0])
        self.first.weight.copy_(right[0])

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.second.weight.unsqueeze(0), self.first.weight.unsqueeze(0)

    def _dense_weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    def _empty_dense(self) -> nn.Linear:
        weight = self.second.weight
        return nn.Linear(
            self.in_features, self.out_features, bias=self.second.bias is not None,
            device=weight.device, dtype=weight.dtype,
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


FACTORIZED_CONVS: dict[str, type[FactorizedConv2d]] = {
    "channel": ChannelWiseConv2d,
    "spatial": SpatialWiseConv2d,
}
