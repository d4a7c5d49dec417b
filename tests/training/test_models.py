"""The model zoo: structure identical to the reference zoo, shapes, checkpoints, errors."""

from __future__ import annotations

import hashlib

import pytest
import torch

from logit_standardization.training.models import DATASET_INFO, create_model, list_datasets, list_models

# Parameter count and a fingerprint of the state dict (sha256 of "key:shape;..." in state-dict
# order, first 16 hex digits), both computed from the reference zoo's structure (mdistiller
# models/cifar and models/imagenet/mobilenetv1.py, num_classes=100 for CIFAR, 1000 for ImageNet).
REFERENCE = {
    ("cifar100", "resnet8"): (83_892, "eec123cffead889d"),
    ("cifar100", "resnet14"): (181_108, "b671d2c42cef460b"),
    ("cifar100", "resnet20"): (278_324, "e480ef445ab85de5"),
    ("cifar100", "resnet32"): (472_756, "716a10c3e306cb9b"),
    ("cifar100", "resnet44"): (667_188, "0ea6f5caec17075f"),
    ("cifar100", "resnet56"): (861_620, "d4fcbd5d057cb214"),
    ("cifar100", "resnet110"): (1_736_564, "daa718d52ef69745"),
    ("cifar100", "resnet8x4"): (1_233_540, "8135fcd31bd66896"),
    ("cifar100", "resnet32x4"): (7_433_860, "685f596181ef34e8"),
    ("cifar100", "ResNet18"): (11_220_132, "58f6dc8bcc47401d"),
    ("cifar100", "ResNet50"): (23_705_252, "d995be9cd6ba6cf7"),
    ("cifar100", "wrn_16_1"): (180_916, "3a1556399e4031e9"),
    ("cifar100", "wrn_16_2"): (703_284, "5af6aa9e7ef23f35"),
    ("cifar100", "wrn_40_1"): (569_780, "878f52387f93459c"),
    ("cifar100", "wrn_40_2"): (2_255_156, "f074c18001055d3e"),
    ("cifar100", "vgg8"): (3_965_028, "38970949c714781f"),
    ("cifar100", "vgg11"): (9_277_284, "c07b7303493cdd87"),
    ("cifar100", "vgg13"): (9_462_180, "eb9f56f5fa1be1b5"),
    ("cifar100", "vgg16"): (14_774_436, "701437b739103735"),
    ("cifar100", "vgg19"): (20_086_692, "384a4cdf0dfa75b6"),
    ("cifar100", "MobileNetV2"): (812_836, "dc5f751da70599bb"),
    ("cifar100", "ShuffleV1"): (949_258, "c21b32ee346e9700"),
    ("cifar100", "ShuffleV2"): (1_355_528, "4a894fed324fb11e"),
    ("imagenet", "MobileNetV1"): (4_231_976, "735401b430049768"),
}

# torchvision's published parameter counts (1000 classes)
TORCHVISION = {"ResNet18": 11_689_512, "ResNet34": 21_797_672, "ResNet50": 25_557_032,
               "ResNet101": 44_549_160, "ResNet152": 60_192_808}  # fmt: skip

# Sizes quoted in the distillation literature (CRD/DKD tables), in millions
PUBLISHED_M = {"resnet56": 0.86, "resnet110": 1.74, "resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_40_2": 2.26,
               "wrn_16_2": 0.70, "wrn_40_1": 0.57, "vgg13": 9.46, "vgg8": 3.96, "ResNet50": 23.71,
               "MobileNetV2": 0.81, "ShuffleV1": 0.95, "ShuffleV2": 1.36}  # fmt: skip

def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fingerprint(state_dict: dict) -> str:
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Randomize every parameter and BN statistic so that a copy that misses one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                noise = torch.rand(v.shape, generator=g)
                v.copy_(0.5 + noise if k.endswith("running_var") else v + 0.1 * (noise - 0.5))
    return model


def test_zoo_lists_every_reference_architecture():
    cifar = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
             "resnet32x4", "ResNet18", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11",
             "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2"}  # fmt: skip
    assert set(list_models("cifar100")) == cifar
    assert set(list_models("imagenet")) == set(TORCHVISION) | {"MobileNetV1"}
    assert set(list_models("fashion_mnist")) == {"resnet_fm", "cnn_fm_small"}
    assert set(list_models("digits")) == {"mlp_digits", "mlp_digits_small"}
    assert list_datasets() == ["cifar100", "digits", "fashion_mnist", "imagenet"]
    assert set(list_models()) == cifar | set(TORCHVISION) | {"MobileNetV1", "resnet_fm", "cnn_fm_small",
                                                              "mlp_digits", "mlp_digits_small"}  # fmt: skip


@pytest.mark.parametrize("dataset,name", sorted(REFERENCE))
def test_structure_matches_reference(dataset, name):
    model = create_model(name, dataset=dataset)
    count, fp = REFERENCE[(dataset, name)]
    assert n_params(model) == count
    assert fingerprint(model.state_dict()) == fp


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_published_sizes(name):
    # the tables print two decimals (rounded or truncated)
    assert abs(REFERENCE[("cifar100", name)][0] / 1e6 - PUBLISHED_M[name]) < 0.01


@pytest.mark.parametrize(
    "name,key",
    [
        ("resnet8x4", "layer1.0.downsample.0.weight"),  # 32 -> 64 channels: projection in stage 1
        ("resnet56", "layer2.0.downsample.1.running_mean"),
        ("ResNet50", "layer1.0.shortcut.0.weight"),
        ("ResNet50", "linear.weight"),
        ("wrn_40_2", "block1.layer.0.convShortcut.weight"),
        ("vgg13", "block0.4.running_var"),  # conv, bn, relu, conv, bn (last ReLU dropped)
        ("vgg13", "block0.0.bias"),
        ("MobileNetV2", "blocks.6.0.conv.7.weight"),
        ("MobileNetV2", "classifier.0.weight"),
        ("ShuffleV1", "layer3.3.conv3.weight"),
        ("ShuffleV2", "layer1.0.conv5.weight"),
    ],
)
def test_reference_key_names(name, key):
    assert key in create_model(name, dataset="cifar100").state_dict()


def test_wrn_equal_width_blocks_have_no_shortcut_conv():
    keys = create_model("wrn_16_1", dataset="cifar100").state_dict()
    assert not any("convShortcut" in k for k in keys if k.startswith("block1."))
    assert "block2.layer.0.convShortcut.weight" in keys


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_imagenet_resnets_are_torchvision(name):
    assert n_params(create_model(name, dataset="imagenet")) == TORCHVISION[name]


@pytest.mark.parametrize("name", list_models("cifar100"))
def test_cifar_forward_shape(name):
    torch.manual_seed(0)
    model = create_model(name, dataset="cifar100").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["MobileNetV1", "ResNet18"])
def test_imagenet_forward_shape(name):
    model = create_model(name, dataset="imagenet", num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *DATASET_INFO["imagenet"].input_size))
    assert out.shape == (1, 7)


@pytest.mark.parametrize("dataset", ["fashion_mnist", "digits"])
def test_small_models_forward_and_backward(dataset):
    info = DATASET_INFO[dataset]
    x = torch.randn(4, *info.input_size)
    for name in list_models(dataset):
        model = create_model(name, dataset=dataset)
        out = model(x)
        assert out.shape == (4, info.num_classes)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_small_model_sizes():
    # MLPs: 64-256-256-10 and 64-32-10
    assert n_params(create_model("mlp_digits", dataset="digits")) == (64 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert n_params(create_model("mlp_digits_small", dataset="digits")) == (64 * 32 + 32) + (32 * 10 + 10)
    # conv 1->16->32->64 (3x3, no bias) with BN, linear 64->10
    cnn = (9 * 1 * 16 + 9 * 16 * 32 + 9 * 32 * 64) + 2 * (16 + 32 + 64) + (64 * 10 + 10)
    assert n_params(create_model("cnn_fm_small", dataset="fashion_mnist")) == cnn
    teacher = n_params(create_model("resnet_fm", dataset="fashion_mnist"))
    assert 200_000 < teacher < 500_000
    assert teacher > 10 * cnn


def test_num_classes_override():
    model = create_model("resnet8", dataset="cifar100", num_classes=10)
    assert model.fc.out_features == 10
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# one network per family (all CIFAR structures are pinned by the fingerprints above)
@pytest.mark.parametrize("name", ["resnet56", "wrn_40_2", "vgg13", "ResNet18", "MobileNetV2", "ShuffleV1", "ShuffleV2"])
def test_reference_checkpoint_loads_strictly(tmp_path, name):
    """A reference-format file {"model": state_dict} loads with strict=True, logits unchanged."""
    source = perturbed(create_model(name, dataset="cifar100"), seed=1).eval()
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": source.state_dict(), "epoch": 240}, path)
    target = create_model(name, dataset="cifar100")
    target.load_state_dict(torch.load(path, weights_only=True, map_location="cpu")["model"], strict=True)
    target.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_checkpoint_of_another_architecture_is_rejected():
    state = create_model("resnet8", dataset="cifar100").state_dict()
    with pytest.raises(RuntimeError, match="size mismatch|Missing key"):
        create_model("resnet8x4", dataset="cifar100").load_state_dict(state, strict=True)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet8X4'.*Did you mean 'resnet8x4'") as e:
        create_model("resnet8X4", dataset="cifar100")
    assert "Known models for 'cifar100'" in str(e.value) and "wrn_40_2" in str(e.value)
    with pytest.raises(ValueError, match=r"'ResNet34' exists for dataset 'imagenet'"):
        create_model("ResNet34", dataset="cifar100")
    with pytest.raises(ValueError, match=r"unknown model 'transformer'.*Known models"):
        create_model("transformer", dataset="cifar100")


def test_bad_dataset_and_num_classes():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'.*Did you mean 'cifar100'"):
        create_model("resnet8", dataset="cifar10")
    with pytest.raises(ValueError, match="unknown dataset"):
        list_models("mnist")
    with pytest.raises(TypeError, match="num_classes must be an int, got float"):
        create_model("resnet8", dataset="cifar100", num_classes=10.0)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        create_model("resnet8", dataset="cifar100", num_classes=0)
    with pytest.raises(TypeError, match="name must be a string"):
        create_model(None, dataset="cifar100")


def test_dataset_info():
    assert DATASET_INFO["cifar100"].mean == (0.5071, 0.4867, 0.4408)
    assert DATASET_INFO["cifar100"].std == (0.2675, 0.2565, 0.2761)
    assert DATASET_INFO["imagenet"].mean == (0.485, 0.456, 0.406)
    assert DATASET_INFO["imagenet"].std == (0.229, 0.224, 0.225)
    for info in DATASET_INFO.values():
        assert len(info.mean) == len(info.std) == info.input_size[0]
