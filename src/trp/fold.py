"""Fold inference-mode BatchNorm into the conv that feeds it.

For a conv ``y = W * x + b`` followed by ``BN(y) = gamma * (y - mu) / sqrt(var + eps) + beta``,
the pair equals one conv with ``W' = W * s`` and ``b' = (b - mu) * s + beta``, where
``s = gamma / sqrt(var + eps)`` per output channel. Only exact in eval mode (running
statistics); a factorized conv folds the BN into its second (last) conv.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

__all__ = ["fold_batchnorm_"]


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        new_bias = ((bias - bn.running_mean) * scale + shift).to(conv.weight.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(module, name)

    try:
        graph = Tracer().trace(model)
    except Exception as error:  # fx raises many types for untraceable control flow
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx to find conv -> BatchNorm pairs ({error}); "
            "fold BatchNorm by hand, or export without folding."
        ) from None
    return torch.fx.GraphModule(model, graph)


def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every ``BatchNorm2d`` whose only input is a ``Conv2d`` used nowhere else into
    that conv, and replace the BN by ``nn.Identity``, in place. The model must be in eval
    mode (folding uses running statistics).

    Returns:
        the ``(conv name, batchnorm name)`` pairs folded.

    Raises:
        ValueError: the model is in train mode, or cannot be traced by ``torch.fx``.
    """
    if model.training:
        raise ValueError("fold BatchNorm only in eval mode (it uses running statistics): call model.eval() first.")
    graph = _trace(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"):
            continue
        conv = modules.get(source.target)
        if type(conv) is not nn.Conv2d or len(source.users) != 1:
            continue
        pairs.append((source.target, node.target))
    used_convs = [conv for conv, _ in pairs]
    if len(set(used_convs)) != len(used_convs):  # a shared conv feeding two BNs cannot take both
        pairs = [pair for pair in pairs if used_convs.count(pair[0]) == 1]
    for conv_name, bn_name in pairs:
        _fold_pair(modules[conv_name], modules[bn_name])
        parent, _, attribute = bn_name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, nn.Identity())
    return pairs
