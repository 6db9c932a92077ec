"""Model definitions behind a registry: ``create_model("resnet20")``, ``list_models()``."""

from . import cifar_resnet, imagenet_resnet
from .registry import ModelSpec, check_model_options, create_model, get_model_spec, list_models, model_options, register_model

__all__ = ["ModelSpec", "check_model_options", "create_model", "get_model_spec", "list_models", "model_options", "register_model", "cifar_resnet", "imagenet_resnet"]
