"""Every registered model builds, runs, and is found by name."""

import pytest
import torch

from trp.models import create_model, get_model_spec, list_models


@pytest.mark.parametrize("name", list_models())
def test_registered_model_runs(name):
    spec = get_model_spec(name)
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *spec.input_size)).shape == (2, 7)


def test_expected_models_are_registered():
    assert set(list_models()) >= {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34", "resnet50"}


def test_none_options_fall_back_to_defaults():
    assert create_model("resnet20", num_classes=None).fc.out_features == 10


def test_an_option_the_model_does_not_take_names_the_ones_it_does():
    with pytest.raises(ValueError, match=r"no option 'width'; its options are: num_classes, shortcut, in_channels"):
        create_model("resnet20", width=2)


def test_cifar_parameter_count_matches_the_paper():
    # He et al. 2016, Table 6: ResNet-20 has 0.27 M parameters, ResNet-56 0.85 M.
    params = {name: sum(p.numel() for p in create_model(name).parameters()) for name in ("resnet20", "resnet56")}
    assert params["resnet20"] == pytest.approx(0.27e6, rel=0.01)
    assert params["resnet56"] == pytest.approx(0.85e6, rel=0.01)


def test_option_b_shortcut_and_bad_depth():
    assert sum(p.numel() for p in create_model("resnet20", shortcut="B").parameters()) > 0.27e6
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="6n"):
        from trp.models.cifar_resnet import CifarResNet

        CifarResNet(21)
