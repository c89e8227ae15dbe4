import pytest
import torch

from training.config import make_config
from training.models import VARIANTS, ModelConfig, available_backbones, build_model
from training.optim import make_optimizer

SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 28, 28), "resnet18": (3, 32, 32)}


@pytest.mark.parametrize("backbone", available_backbones())
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_returns_logits_and_latent(backbone, variant):
    shape = SHAPES[backbone]
    cfg = ModelConfig(
        backbone=backbone,
        variant=variant,
        num_classes=10,
        latent_dim=8,
        input_shape=shape,
        mean=[0.5] * shape[0],
        std=[0.25] * shape[0],
    )
    model = build_model(cfg).eval()
    logits, z = model(torch.rand(2, *shape))
    assert logits.shape == (2, 10)
    assert z.shape == (2, 8) if variant != "no_pen" else z.shape[0] == 2


def test_activations_are_silu():
    model = build_model(
        ModelConfig(backbone="resnet18", input_shape=(3, 32, 32), mean=[0.5] * 3, std=[0.2] * 3)
    )
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    assert any(isinstance(m, torch.nn.SiLU) for m in model.modules())


def test_nonlin_pen_latent_is_silu_of_linear():
    model = build_model(ModelConfig(variant="nonlin_pen"))
    assert isinstance(model.latent[1], torch.nn.SiLU)


def test_too_narrow_latent_is_explained():
    with pytest.raises(ValueError, match=r"d must be >= ceil\(log2\(10\)\) = 4"):
        build_model(ModelConfig(latent_dim=3))
    build_model(ModelConfig(latent_dim=4))  # the smallest allowed width


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(ValueError, match="expected one of cnn, mlp, resnet18"):
        build_model(ModelConfig(backbone="vit"))


def test_output_layer_has_its_own_param_group():
    model = build_model(ModelConfig())
    opt = make_optimizer(model, make_config("quick", head_lr=0.05))
    head = next(g for g in opt.param_groups if g["name"] == "head")
    assert head["lr"] == 0.05
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
