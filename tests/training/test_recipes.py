"""Recipes: every shipped recipe resolves and builds; hyperparameters equal the reference values."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from logit_standardization.training import _make_recipes
from logit_standardization.training.methods import CTKD, DKD, MLKD, CrossEntropy, build_method
from logit_standardization.training.models import DATASET_INFO, create_model
from logit_standardization.training.recipes import (
    RECIPE_DIR,
    RecipeError,
    apply_overrides,
    list_recipes,
    load_recipe,
)

ALL = list_recipes()
PAIRS = [
    "resnet32x4-resnet8x4", "vgg13-vgg8", "wrn_40_2-wrn_40_1", "wrn_40_2-wrn_16_2", "resnet56-resnet20",
    "resnet110-resnet32", "resnet110-resnet20", "resnet32x4-ShuffleV2", "resnet32x4-wrn_16_2",
    "resnet32x4-wrn_40_2", "wrn_40_2-resnet8x4", "wrn_40_2-MobileNetV2", "vgg13-MobileNetV2",
    "ResNet50-MobileNetV2",
]  # fmt: skip
CIFAR_METHODS = ["kd", "kd_ls", "dkd", "dkd_ls", "mlkd", "mlkd_ls", "ctkd", "ctkd_ls"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def resolved():
    return {name: load_recipe(name) for name in ALL}


def test_the_recipe_families_are_complete():
    expected = {f"cifar100/teacher/{a}" for a in ("resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13")}
    expected |= {f"cifar100/{m}/{p}" for m in CIFAR_METHODS for p in PAIRS}
    expected |= {f"imagenet/{m}/{p}" for m in ("kd", "kd_ls", "dkd", "dkd_ls", "ctkd", "ctkd_ls", "mlkd", "mlkd_ls")
                 for p in ("ResNet34-ResNet18", "ResNet50-MobileNetV1")}
    expected |= {f"demo/{m}" for m in ("teacher", "student", "kd", "kd_ls")}
    expected |= {f"fashion_mnist/{m}" for m in ("teacher", "student", *CIFAR_METHODS, "kd_ls_matched",
                                                 "dkd_ls_matched", "mlkd_ls_matched")}
    assert set(ALL) == expected
    assert len(ALL) == 6 + 14 * 8 + 16 + 4 + 13


def test_every_recipe_resolves_with_a_paper_number_or_a_note(resolved):
    for name, cfg in resolved.items():
        assert cfg["name"] == name
        assert cfg["description"], name
        assert cfg["paper"] is not None or cfg["note"], f"{name}: no paper number and no note saying why"
        if name.startswith(("cifar100/", "imagenet/")):
            assert isinstance(cfg["paper"], float) and 60 < cfg["paper"] < 81, name
            assert cfg["source"], name
        if name.startswith("imagenet/"):
            assert 89 < cfg["paper_top5"] < 92, name
        method = build_method(cfg["method"])  # hyperparameters accepted by the loss modules
        assert method.needs_teacher == (cfg["method"]["name"] != "ce"), name
        assert cfg["dataset"] == name.split("/")[0].replace("demo", "digits")


def test_every_recipe_builds_its_models(resolved):
    """Each distinct (dataset, architecture) is built once and run on a batch of two."""
    archs = set()
    for cfg in resolved.values():
        for role in ("student", "teacher"):
            if cfg[role]["arch"]:
                archs.add((cfg["dataset"], cfg[role]["arch"]))
    assert len(archs) >= 20
    torch.manual_seed(0)
    for dataset, arch in sorted(archs):
        info = DATASET_INFO[dataset]
        model = create_model(arch, dataset=dataset).eval()
        with torch.no_grad():
            out = model(torch.randn(1, *info.input_size))
        assert out.shape == (1, info.num_classes), (dataset, arch)


def test_shipped_files_equal_the_generator_output():
    files = _make_recipes.all_files()
    shipped = {p.relative_to(RECIPE_DIR).as_posix(): p.read_text() for p in RECIPE_DIR.rglob("*.yaml")}
    assert shipped == files


# ------------------------------------------------------------------- literal values (reference configs)
def test_kd_ls_resnet32x4_resnet8x4_literal_values(resolved):
    cfg = resolved["cifar100/kd_ls/resnet32x4-resnet8x4"]
    assert cfg["method"] == {"name": "kd", "ce_weight": 0.1, "kd_weight": 9.0, "temperature": 2.0, "standardize": True,
                             "ddof": 1, "eps": 1e-7}
    assert cfg["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
    assert cfg["schedule"]["epochs"] == 240 and cfg["schedule"]["milestones"] == [150, 180, 210]
    assert cfg["schedule"]["gamma"] == 0.1 and cfg["schedule"]["name"] == "step"
    assert cfg["data"]["batch_size"] == 64 and cfg["data"]["test_batch_size"] == 64
    assert (cfg["teacher"]["arch"], cfg["student"]["arch"]) == ("resnet32x4", "resnet8x4")
    assert cfg["paper"] == 76.62


@pytest.mark.parametrize("name, temperature, weight, lr, paper", [
    ("cifar100/kd_ls/vgg13-vgg8", 3.0, 9.0, 0.05, 74.36),
    ("cifar100/kd_ls/resnet110-resnet20", 4.0, 12.0, 0.05, 71.48),
    ("cifar100/kd_ls/resnet32x4-ShuffleV2", 2.0, 9.0, 0.01, 75.56),
    ("cifar100/kd_ls/ResNet50-MobileNetV2", 3.0, 1.0, 0.01, 69.02),
    ("cifar100/kd_ls/wrn_40_2-resnet8x4", 2.0, 9.0, 0.05, 77.11),
])  # fmt: skip
def test_kd_ls_literal_values(resolved, name, temperature, weight, lr, paper):
    cfg = resolved[name]
    m = cfg["method"]
    assert (m["temperature"], m["kd_weight"], m["ce_weight"], m["standardize"]) == (temperature, weight, 0.1, True)
    assert cfg["optimizer"]["lr"] == lr and cfg["paper"] == paper


def test_kd_baseline_is_vanilla_kd(resolved):
    m = resolved["cifar100/kd/resnet32x4-resnet8x4"]["method"]
    assert (m["temperature"], m["ce_weight"], m["kd_weight"], m["standardize"]) == (4.0, 0.1, 0.9, False)
    assert resolved["cifar100/kd/resnet32x4-resnet8x4"]["paper"] == 73.33


@pytest.mark.parametrize("name, temperature, alpha, beta, paper", [
    ("cifar100/dkd_ls/resnet32x4-resnet8x4", 2.0, 9.0, 72.0, 77.01),
    ("cifar100/dkd_ls/vgg13-vgg8", 2.0, 15.0, 30.0, 74.81),
    ("cifar100/dkd_ls/resnet56-resnet20", 3.0, 18.0, 36.0, 72.32),
    ("cifar100/dkd_ls/wrn_40_2-wrn_40_1", 2.0, 12.0, 24.0, 74.89),
    ("cifar100/dkd_ls/resnet32x4-wrn_16_2", 2.0, 9.0, 18.0, 76.19),
    ("cifar100/dkd_ls/vgg13-MobileNetV2", 3.0, 9.0, 18.0, 69.98),
    ("cifar100/dkd/resnet32x4-resnet8x4", 4.0, 1.0, 8.0, 76.32),
    ("cifar100/dkd/resnet56-resnet20", 4.0, 1.0, 2.0, 71.97),
    ("cifar100/dkd/vgg13-vgg8", 4.0, 1.0, 6.0, 74.68),
])  # fmt: skip
def test_dkd_effective_values(resolved, name, temperature, alpha, beta, paper):
    cfg = resolved[name]
    method = build_method(cfg["method"])
    assert isinstance(method, DKD)
    loss = method.loss  # the reference's LS scaling: kd_weight multiplies alpha and beta
    assert (loss.temperature, loss.kd_weight * loss.alpha, loss.kd_weight * loss.beta) == (temperature, alpha, beta)
    assert loss.warmup_epochs == 20 and loss.ce_weight == 1.0
    assert method.loss.standardize == name.startswith("cifar100/dkd_ls") and cfg["paper"] == paper
    assert cfg["schedule"]["epochs"] == 240


@pytest.mark.parametrize("name, lr, epochs, weight, paper", [
    ("cifar100/mlkd_ls/resnet32x4-resnet8x4", 0.025, 480, 9.0, 78.28),
    ("cifar100/mlkd_ls/vgg13-vgg8", 0.01, 480, 6.0, 75.22),
    ("cifar100/mlkd_ls/resnet32x4-ShuffleV2", 0.01, 960, 6.0, 78.76),
    ("cifar100/mlkd_ls/wrn_40_2-MobileNetV2", 0.005, 480, 9.0, 71.61),
])  # fmt: skip
def test_mlkd_ls_literal_values(resolved, name, lr, epochs, weight, paper):
    cfg = resolved[name]
    assert cfg["optimizer"]["lr"] == lr and cfg["schedule"]["epochs"] == epochs
    assert cfg["schedule"]["milestones"] == [150, 180, 210]
    m = cfg["method"]
    assert m["temperatures"] == [2.0, 3.0, 5.0, 2.0, 6.0] and m["kd_weight"] == weight and m["ce_weight"] == 0.1
    assert m["variant"] == "reference" and m["standardize"] is True and cfg["paper"] == paper
    assert isinstance(build_method(m), MLKD) and build_method(m).views == 2


def test_every_mlkd_recipe_places_cutout_as_the_reference(resolved):
    mlkd = [n for n in resolved if "/mlkd" in n and n.startswith("cifar100/")]
    assert len(mlkd) == 28 and all(resolved[n]["data"]["cutout_quirk"] is True for n in mlkd)


def test_method_keys_and_defaults_are_the_loss_signatures(resolved):
    import inspect

    import logit_standardization.torch as lt
    from logit_standardization.training.methods import method_keys

    for name, cls in (("kd", lt.KDLoss), ("dkd", lt.DKDLoss), ("mlkd", lt.MLKDLoss), ("ctkd", lt.CTKDLoss)):
        params = inspect.signature(cls).parameters
        keys = method_keys(name)
        assert set(keys) == set(params) - {"reduction", "check_finite"}
        assert all(keys[k] == params[k].default for k in keys)
    # every shipped method block is written in full with exactly those keys
    for cfg in resolved.values():
        assert set(cfg["method"]) == {"name", *method_keys(cfg["method"]["name"])}


def test_method_values_are_refused_at_load_with_the_loss_rules():
    with pytest.raises(RecipeError, match=r"'method.temperature' must be finite and > 0; got -1"):
        load_recipe("cifar100/kd_ls/resnet32x4-resnet8x4", ["method.temperature=-1"])
    with pytest.raises(RecipeError, match=r"'method.warmup_epochs' must be an int >= 1; got 2.5"):
        load_recipe("cifar100/dkd_ls/resnet32x4-resnet8x4", ["method.warmup_epochs=2.5"])
    with pytest.raises(RecipeError, match=r"'method.t_start' must be finite and >= 0"):
        load_recipe("cifar100/ctkd_ls/resnet32x4-resnet8x4", ["method.t_start=-30"])


def test_ctkd_literal_values(resolved):
    # CTKD: the CTKD code's own script (-r 0.1 -a 0.9); CTKD+LS: the LS repository's script (alpha 9)
    for name, lr, paper, kd_weight in (("cifar100/ctkd_ls/resnet32x4-resnet8x4", 0.05, 76.67, 9.0),
                                       ("cifar100/ctkd_ls/vgg13-MobileNetV2", 0.01, 68.98, 9.0),
                                       ("cifar100/ctkd/resnet56-resnet20", 0.05, 71.19, 0.9)):
        cfg = resolved[name]
        m = cfg["method"]
        assert (m["ce_weight"], m["kd_weight"], m["t_start"], m["t_end"], m["init"]) == (0.1, kd_weight, 1.0, 20.0, 1.0)
        assert (m["max_value"], m["min_value"], m["loops"], m["schedule"]) == (0.0, -1.0, 10, "cosine")
        assert cfg["optimizer"]["lr"] == lr and cfg["paper"] == paper and cfg["data"]["batch_size"] == 64
        method = build_method(m)
        assert isinstance(method, CTKD) and round(float(method.loss.temperature.reshape(-1)[0]), 4) == 15.6212
        assert round(method.start_epoch(1)["ctkd_lambda"], 5) == -0.02447


def test_teacher_recipe_literal_values(resolved):
    cfg = resolved["cifar100/teacher/resnet56"]
    assert isinstance(build_method(cfg["method"]), CrossEntropy) and cfg["teacher"]["arch"] is None
    assert cfg["optimizer"]["lr"] == 0.05 and cfg["optimizer"]["weight_decay"] == 5e-4
    assert cfg["schedule"]["epochs"] == 240 and cfg["schedule"]["milestones"] == [150, 180, 210]
    assert cfg["data"]["batch_size"] == 64 and cfg["paper"] == 72.34
    assert resolved["cifar100/teacher/resnet32x4"]["paper"] == 79.42


def test_imagenet_literal_values(resolved):
    cfg = resolved["imagenet/kd_ls/ResNet34-ResNet18"]
    assert cfg["data"]["batch_size"] == 512 and cfg["data"]["test_batch_size"] == 128
    assert cfg["schedule"]["epochs"] == 100 and cfg["schedule"]["milestones"] == [30, 60, 90]
    assert cfg["optimizer"]["lr"] == 0.2 and cfg["optimizer"]["weight_decay"] == 1e-4
    assert cfg["method"]["temperature"] == 2.0 and cfg["method"]["kd_weight"] == 9.0
    assert cfg["method"]["ce_weight"] == 1.0 and (cfg["paper"], cfg["paper_top5"]) == (71.42, 90.29)
    m = resolved["imagenet/kd/ResNet50-MobileNetV1"]["method"]
    assert (m["temperature"], m["ce_weight"], m["kd_weight"], m["standardize"]) == (1.0, 0.5, 0.5, False)
    dkd = build_method(resolved["imagenet/dkd/ResNet50-MobileNetV1"]["method"])
    assert (dkd.loss.alpha, dkd.loss.beta, dkd.loss.temperature, dkd.loss.warmup_epochs) == (1.0, 2.0, 1.0, 1)
    dkd = build_method(resolved["imagenet/dkd/ResNet34-ResNet18"]["method"])
    assert (dkd.loss.alpha, dkd.loss.beta) == (1.0, 0.5)
    ct = resolved["imagenet/ctkd_ls/ResNet34-ResNet18"]
    assert ct["data"]["batch_size"] == 256 and ct["schedule"]["epochs"] == 120 and ct["optimizer"]["lr"] == 0.1
    assert (ct["method"]["ce_weight"], ct["method"]["kd_weight"], ct["method"]["loops"]) == (1.0, 2.0, 5)
    # MLKD: the LS repository's ImageNet yamls (LR 0.1 for ResNet34 -> ResNet18, 0.2 for ResNet50 -> MobileNetV1)
    for pair, lr in (("ResNet34-ResNet18", 0.1), ("ResNet50-MobileNetV1", 0.2)):
        ml, ls_ = resolved[f"imagenet/mlkd/{pair}"], resolved[f"imagenet/mlkd_ls/{pair}"]
        assert ml["optimizer"]["lr"] == ls_["optimizer"]["lr"] == lr and ml["schedule"]["epochs"] == 100
        m = ml["method"]
        assert (m["temperatures"], m["ce_weight"], m["kd_weight"], m["standardize"]) == ([1.0, 3.0, 5.0, 2.0, 6.0], 0.5, 0.5, False)
        m = ls_["method"]
        assert (m["temperatures"], m["ce_weight"], m["kd_weight"], m["standardize"]) == ([2.0, 3.0, 5.0, 2.0, 6.0], 0.5, 9.0, True)
        assert "never published" in ls_["note"] and ml["data"]["cutout_quirk"] is True
    assert resolved["imagenet/mlkd_ls/ResNet34-ResNet18"]["paper"] == 72.08
    ct = resolved["imagenet/ctkd/ResNet34-ResNet18"]  # the CTKD code's ImageNet script: gamma 1, alpha 1
    assert (ct["method"]["ce_weight"], ct["method"]["kd_weight"], ct["method"]["standardize"]) == (1.0, 1.0, False)
    assert resolved["imagenet/dkd_ls/ResNet34-ResNet18"]["note"]  # unpublished settings are flagged


def test_recipes_without_reference_values_say_so(resolved):
    assert "no reference dkd yaml" in resolved["cifar100/dkd/resnet110-resnet20"]["note"].lower()
    assert "no log" in resolved["cifar100/mlkd_ls/resnet56-resnet20"]["note"].lower()
    assert "2.0 to 30.4" in resolved["cifar100/ctkd_ls/resnet32x4-resnet8x4"]["note"]
    assert resolved["imagenet/kd_ls/ResNet50-MobileNetV1"]["note"]


# ------------------------------------------------------------------- merging and overrides
def test_overrides_are_yaml_typed():
    cfg = load_recipe("cifar100/dkd_ls/resnet32x4-resnet8x4",
                      ["method.beta=2", "schedule.milestones=[30, 60]", "optimizer.lr=1e-3", "train.amp=bf16",
                       "data.train_subset=null", "teacher.checkpoint=/x/y.pt"])
    assert cfg["method"]["beta"] == 2.0 and cfg["schedule"]["milestones"] == [30, 60]
    assert cfg["optimizer"]["lr"] == 1e-3 and cfg["train"]["amp"] == "bf16"
    assert cfg["teacher"]["checkpoint"] == "/x/y.pt"
    # a beta given on the command line is multiplied by the kd weight too (reference semantics)
    loss = build_method(cfg["method"]).loss
    assert loss.kd_weight * loss.beta == 18.0


def test_user_yaml_extends_a_shipped_recipe(tmp_path):
    (tmp_path / "base.yaml").write_text("extends: cifar100/kd_ls/resnet32x4-resnet8x4\nmethod: {kd_weight: 6}\n")
    (tmp_path / "mine.yaml").write_text("extends: base\nschedule: {epochs: 3}\nnote: mine\n")
    cfg = load_recipe(str(tmp_path / "mine.yaml"))
    assert cfg["method"]["kd_weight"] == 6.0 and cfg["method"]["temperature"] == 2.0
    assert cfg["schedule"]["epochs"] == 3 and cfg["schedule"]["milestones"] == [150, 180, 210]
    assert cfg["name"] == "mine" and cfg["paper"] == 76.62


@pytest.mark.parametrize("text, overrides, match", [
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n", ["method.temprature=3"], r"'method.temprature'.*'temperature'"),
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n", ["optimiser.lr=3"], r"'optimiser'.*'optimizer'"),
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n", ["schedule.epochs=ten"], r"'schedule.epochs' must be an integer"),
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n", ["train.amp=fp8"], r"'train.amp' must be one of"),
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n", ["method.name=xkd"], r"'method.name' must be one of"),
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n", ["lr"], r"key=value"),
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n", ["paper.top1=3"], r"'paper' is a value"),
    ("extends: self\n", [], r"cycle"),
    ("extends: cifar100/kd_ls/resnet32x4-resnet8x4\nteacher: {arch: null}\n", [], r"teacher.arch' is required"),
    ("- a list\n", [], r"mapping at the top level"),
    ("a: [unclosed\n", [], r"not valid YAML"),
])  # fmt: skip
def test_bad_recipes_are_explained(tmp_path, text, overrides, match):
    path = tmp_path / "self.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=match):
        load_recipe(str(path), overrides)


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(RecipeError, match=r"did you mean: cifar100/kd_ls/resnet32x4-resnet8x4"):
        load_recipe("cifar100/kd_ls/resnet32x4-resnet8")
    with pytest.raises(RecipeError, match=r"cifar100/dkd/vgg13-vgg8"):
        load_recipe("vgg13-vgg8")
    with pytest.raises(RecipeError, match=r"--list"):
        load_recipe("no/such/thing")


def test_apply_overrides_does_not_touch_its_input():
    cfg = {"data": {"batch_size": 64}}
    out = apply_overrides(cfg, ["data.batch_size=8"])
    assert cfg == {"data": {"batch_size": 64}} and out["data"]["batch_size"] == 8


def test_generator_writes_into_a_fresh_directory():
    with tempfile.TemporaryDirectory() as d:
        written = _make_recipes.write(Path(d))
        assert len(written) == len(ALL) + 4  # + the four _base files
        assert all(p.read_text().startswith("# Generated") for p in written)


def test_an_extending_recipe_that_names_another_method_replaces_the_method_block(tmp_path):
    (tmp_path / "mine.yaml").write_text("extends: cifar100/kd_ls/resnet32x4-resnet8x4\n"
                                        "method: {name: dkd, beta: 2.0, ce_weight: 1.0}\n")
    m = load_recipe(str(tmp_path / "mine.yaml"))["method"]
    # nothing of the KD block is inherited: DKD's own defaults and the given values
    assert (m["name"], m["beta"], m["ce_weight"], m["kd_weight"], m["alpha"]) == ("dkd", 2.0, 1.0, 1.0, 1.0)
    (tmp_path / "same.yaml").write_text("extends: cifar100/kd_ls/resnet32x4-resnet8x4\nmethod: {name: kd, kd_weight: 6}\n")
    m = load_recipe(str(tmp_path / "same.yaml"))["method"]
    assert (m["kd_weight"], m["temperature"], m["ce_weight"]) == (6.0, 2.0, 0.1)  # same method: merged
