"""Model definitions behind a registry: ``create_model("resnet20")``, ``list_models()``."""

from . import cifar_resnet, imagenet_resnet
from .registry import ModelSpec, create_model, get_model_spec, list_models, register_model

__all__ = ["ModelSpec", "create_model", "get_model_spec", "list_models", "register_model", "cifar_resnet", "imagenet_resnet"]
