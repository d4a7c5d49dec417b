"""Training recipes: YAML files shipped with the package, ``extends:`` merging, ``--set`` overrides.

A recipe is a YAML mapping. Shipped recipes live under ``recipes/`` next to this module and
are named by their path without the suffix, e.g. ``cifar100/kd_ls/resnet32x4-resnet8x4``.
Files whose name starts with ``_`` (``_base/...``) hold shared defaults and are not listed.

Resolution of a recipe:

1. ``extends:`` (a name, or a list of names, of other recipes or base files; relative
   paths are looked up next to the extending file first) is resolved recursively;
2. the mappings are deep-merged, the extending file winning (mappings merge key by key,
   every other value is replaced);
3. overrides ``key.sub=value`` (values parsed as YAML: ``1e-3`` is a float, ``[1, 2]`` a
   list, ``null`` None) are applied;
4. the result is validated against :data:`SCHEMA`: unknown keys are refused with the
   closest known names, and the method block is checked against the method's own keys.

Example:
    >>> from logit_standardization.training.recipes import load_recipe
    >>> cfg = load_recipe("cifar100/kd_ls/resnet32x4-resnet8x4", ["schedule.epochs=2"])
    >>> cfg["method"]["temperature"], cfg["method"]["kd_weight"], cfg["schedule"]["epochs"]
    (2.0, 9.0, 2)
    >>> cfg["paper"]
    76.62
"""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any, Iterable

import yaml

from ._errors import TrainingError

__all__ = [
    "RECIPE_DIR",
    "SCHEMA",
    "RecipeError",
    "list_recipes",
    "load_recipe",
    "apply_overrides",
    "validate",
    "recipe_path",
]

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
"""Directory of the shipped recipe files."""


class RecipeError(TrainingError):
    """A recipe cannot be found, parsed, merged or validated."""


# Every key a resolved recipe may have, with its default. ``method`` is checked separately:
# its keys and defaults are those of the method's loss class (``methods.method_keys``).
SCHEMA: dict[str, Any] = {
    "name": None,  # set from the file name
    "description": "",
    "paper": None,  # top-1 (%) the paper reports for this row, or None
    "paper_top5": None,  # top-5 (%) where the paper reports it (ImageNet)
    "source": "",  # where the hyperparameters and the paper number come from
    "note": "",  # deviations: nearest documented setting used, etc.
    "dataset": None,  # "cifar100", "imagenet", "fashion_mnist", "digits", "imagefolder" (your own images)
    "data": {
        "root": None,  # directory holding the dataset (per dataset layout, see docs)
        "download": False,  # let torchvision download CIFAR-100 / Fashion-MNIST
        "image_size": None,  # imagefolder only: side of the square network input (None: 224)
        "mean": None,  # imagefolder only: per-channel mean, 3 numbers (None: ImageNet's)
        "std": None,  # imagefolder only: per-channel std, 3 numbers (None: ImageNet's)
        "batch_size": 64,  # GLOBAL batch: split over the ranks of a torchrun job
        "test_batch_size": 64,  # global as well
        "num_workers": 2,  # per process
        "pin_memory": True,  # only used on CUDA
        "persistent_workers": False,  # True breaks exact resume of augmentation streams
        "prefetch_factor": 2,
        "augment": True,  # training augmentation (crop/flip ...) on or off
        "cutout_quirk": False,  # MLKD strong view: reproduce the reference Cutout corner draw
        "train_subset": None,  # use only this many training samples (a fixed random subset)
        "test_subset": None,  # evaluate on only this many test samples (a fixed random subset)
        "val_fraction": None,  # hold out this fraction of the training set and evaluate on it instead of the test set
        "val_seed": 0,  # seed of that stratified split
    },
    "student": {"arch": None, "checkpoint": None},  # checkpoint: initial weights, a local file
    "teacher": {"arch": None, "checkpoint": None},
    "method": {},
    "optimizer": {
        "name": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "nesterov": False,
    },
    "schedule": {
        "name": "step",  # "step" (reference) or "cosine"
        "epochs": 240,
        "milestones": [150, 180, 210],
        "gamma": 0.1,
        "min_lr": 0.0,  # cosine only
    },
    "train": {
        "seed": 0,
        "amp": "off",  # "off", "bf16", "fp16" (fp16 needs CUDA)
        "channels_last": False,
        "compile": False,
        "sync_bn": False,  # SyncBatchNorm under torchrun (CUDA)
        "deterministic": False,  # deterministic kernels (slower on CUDA)
        "eval_teacher": True,  # evaluate the teacher once before training
        "save_every": 1,  # write last.pt every N epochs (and at the end)
    },
}
"""Every key of a resolved recipe (except ``method``) with its default value."""

_FLOAT_KEYS = {
    "paper", "paper_top5", "lr", "momentum", "weight_decay", "gamma", "min_lr", "val_fraction",
}  # fmt: skip
_INT_KEYS = {
    "batch_size", "test_batch_size", "num_workers", "prefetch_factor", "epochs", "seed", "save_every",
    "train_subset", "test_subset", "val_seed",
}  # fmt: skip
_BOOL_KEYS = {
    "download", "pin_memory", "persistent_workers", "augment", "cutout_quirk", "nesterov",
    "channels_last", "compile", "sync_bn", "deterministic", "eval_teacher",
}  # fmt: skip
_CHOICES = {
    "optimizer.name": ("sgd",),
    "schedule.name": ("step", "cosine"),
    "train.amp": ("off", "bf16", "fp16"),
    "dataset": ("cifar100", "imagenet", "fashion_mnist", "digits", "imagefolder"),
}


def _suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def list_recipes(prefix: str | None = None) -> list[str]:
    """Names of the shipped recipes, sorted; only those starting with ``prefix`` if given.

    Example:
        >>> names = list_recipes("cifar100/teacher/")
        >>> "cifar100/teacher/resnet32x4" in names
        True
    """
    names = []
    for path in RECIPE_DIR.rglob("*.yaml"):
        rel = path.relative_to(RECIPE_DIR).with_suffix("")
        if any(part.startswith("_") for part in rel.parts):
            continue
        names.append(rel.as_posix())
    names.sort()
    return [n for n in names if prefix is None or n.startswith(prefix)]


def recipe_path(name_or_path: str | Path, *, relative_to: Path | None = None) -> Path:
    """The file of a recipe given as a shipped name, a YAML path, or a name relative to a file.

    Raises:
        RecipeError: nothing of that name exists; the message lists close shipped names.
    """
    text = str(name_or_path)
    candidates: list[Path] = []
    if relative_to is not None:
        candidates += [relative_to / text, relative_to / f"{text}.yaml"]
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        candidates.append(Path(text))
    shipped = text[:-5] if text.endswith(".yaml") else text
    candidates.append(RECIPE_DIR / f"{shipped}.yaml")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = list_recipes()
    close = difflib.get_close_matches(text, known, n=5, cutoff=0.6)
    if not close:  # also match on the last component, e.g. "resnet32x4-resnet8x4"
        close = [k for k in known if k.endswith("/" + text.split("/")[-1])][:5]
    hint = "; did you mean: " + ", ".join(close) if close else ""
    raise RecipeError(
        f"unknown recipe {text!r}: no shipped recipe of that name and no such YAML file{hint}. "
        "List the shipped recipes with `lskd-train --list`."
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe file {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path} must hold a mapping at the top level; got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``: nested mappings merge key by key, other values are replaced.

    A mapping that names another ``name`` than the one it would merge into (a ``method`` block
    of another method) replaces it: the settings of one method mean nothing to another.

    Example:
        >>> deep_merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}, "b": [1]})
        {'a': {'x': 1, 'y': 3}, 'b': [1]}
        >>> deep_merge({"method": {"name": "kd", "temperature": 4}}, {"method": {"name": "dkd"}})
        {'method': {'name': 'dkd'}}
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        renamed = isinstance(value, dict) and isinstance(out.get(key), dict) and \
            "name" in value and value["name"] != out[key].get("name", value["name"])
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not renamed:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_file(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"recipe 'extends' forms a cycle: {cycle}")
    data = _read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        parents = []
    elif isinstance(parents, str):
        parents = [parents]
    elif not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RecipeError(f"recipe file {path}: 'extends' must be a name or a list of names; got {parents!r}")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, _resolve_file(recipe_path(parent, relative_to=path.parent), (*chain, path)))
    return deep_merge(merged, data)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(f"override {item!r} must have the form key=value, e.g. schedule.epochs=10")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.split("."), value


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; read such strings as numbers."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number):
            return number
    return value


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return ``cfg`` with ``key.sub=value`` overrides applied (values parsed as YAML).

    Keys are checked against :data:`SCHEMA` later by :func:`validate`; here a key may only
    descend into mappings.

    Example:
        >>> apply_overrides({"data": {"batch_size": 64}}, ["data.batch_size=128", "method.beta=2"])
        {'data': {'batch_size': 128}, 'method': {'beta': 2}}
    """
    out = copy.deepcopy(cfg)
    for item in overrides:
        parts, value = _parse_override(item)
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(f"override {item!r}: {where!r} is a value ({child!r}), not a section")
            node = child
        node[parts[-1]] = value
    return out


def _check_value(key: str, leaf: str, value: Any) -> Any:
    if value is None:
        return None
    if leaf in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe key {key!r} must be true or false; got {value!r}")
        return value
    if leaf in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe key {key!r} must be an integer; got {value!r}")
        return value
    if leaf in _FLOAT_KEYS:
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe key {key!r} must be a number; got {value!r}")
        return float(value)
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise RecipeError(f"recipe key {key!r} must be one of {', '.join(map(repr, _CHOICES[key]))}; got {value!r}")
    if key == "data.image_size":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"recipe key {key!r} must be an integer >= 1; got {value!r}")
        return value
    if key in ("data.mean", "data.std"):
        value = [_number(v) for v in value] if isinstance(value, list) else value
        if not isinstance(value, list) or len(value) != 3 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise RecipeError(f"recipe key {key!r} must be a list of 3 numbers (R, G, B); got {value!r}")
        if key == "data.std" and min(value) <= 0:
            raise RecipeError(f"recipe key {key!r} must hold 3 positive numbers; got {value!r}")
        return [float(v) for v in value]
    if leaf in ("milestones",):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise RecipeError(f"recipe key {key!r} must be a list of integers; got {value!r}")
    return value


def _validate_method(method: dict[str, Any]) -> dict[str, Any]:
    """The method block with every key of its loss class filled in and checked by the loss's own rules."""
    from .._checks import check_hyper
    from .methods import METHODS, method_keys

    method = dict(method)
    name = method.pop("name", "ce")
    if name not in METHODS:
        raise RecipeError(f"recipe key 'method.name' must be one of {', '.join(map(repr, METHODS))}; got {name!r}")
    keys = method_keys(name)
    for key in method:
        if key not in keys:
            raise RecipeError(f"unknown recipe key 'method.{key}'{_suggest(key, keys)}; known keys of method "
                              f"{name!r}: {', '.join(sorted(keys))}")
    out: dict[str, Any] = {"name": name}
    for key, default in keys.items():
        value = _number(method.get(key, copy.deepcopy(default)))
        if value is not None:
            try:
                value = check_hyper("method", **{key: value})[key]
            except (TypeError, ValueError) as e:
                raise RecipeError(f"recipe key 'method.{key}' {str(e).split(f'{key!r} ', 1)[-1]}") from None
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _validate_section(prefix: str, value: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in value:
        if key not in schema:
            where = f"{prefix}{key}"
            raise RecipeError(f"unknown recipe key {where!r}{_suggest(key, schema)}; known keys in this section: "
                              f"{', '.join(sorted(schema))}")
    for key, default in schema.items():
        where = f"{prefix}{key}"
        got = value.get(key, copy.deepcopy(default))
        if isinstance(default, dict) and key != "method":
            if not isinstance(got, dict):
                raise RecipeError(f"recipe key {where!r} must be a mapping; got {got!r}")
            out[key] = _validate_section(where + ".", got, default)
        else:
            out[key] = _check_value(where, key, got)
    return out


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults, check keys, types and choices; return the resolved recipe.

    Raises:
        RecipeError: an unknown key (with close matches), a value of the wrong type, an
            unknown choice, or a missing required value (dataset, student.arch, a teacher for
            distillation methods).
    """
    if not isinstance(cfg.get("method", {}), dict):
        raise RecipeError(f"recipe key 'method' must be a mapping; got {cfg['method']!r}")
    out = _validate_section("", {k: v for k, v in cfg.items() if k != "method"}, {k: v for k, v in SCHEMA.items() if k != "method"})
    out["method"] = _validate_method(cfg.get("method") or {})
    name = out["method"]["name"]
    _check_value("dataset", "dataset", out["dataset"])
    for key in ("optimizer.name", "schedule.name", "train.amp"):
        section, leaf = key.split(".")
        _check_value(key, leaf, out[section][leaf])
    if out["dataset"] is None:
        raise RecipeError("recipe key 'dataset' is required (cifar100, imagenet, fashion_mnist, digits or imagefolder)")
    for key in ("image_size", "mean", "std"):
        if out["data"][key] is not None and out["dataset"] != "imagefolder":
            raise RecipeError(f"recipe key 'data.{key}' applies to dataset 'imagefolder' only (the size and "
                              f"normalization of {out['dataset']!r} are fixed); remove it")
    if not out["student"]["arch"]:
        raise RecipeError("recipe key 'student.arch' is required")
    if name != "ce" and not out["teacher"]["arch"]:
        raise RecipeError(f"method {name!r} distils from a teacher: recipe key 'teacher.arch' is required")
    if out["schedule"]["epochs"] is None or out["schedule"]["epochs"] < 1:
        raise RecipeError(f"recipe key 'schedule.epochs' must be >= 1; got {out['schedule']['epochs']!r}")
    for key in ("batch_size", "test_batch_size"):
        if out["data"][key] is None or out["data"][key] < 1:
            raise RecipeError(f"recipe key 'data.{key}' must be >= 1; got {out['data'][key]!r}")
    fraction = out["data"]["val_fraction"]
    if fraction is not None and not 0.0 < fraction < 1.0:
        raise RecipeError(f"recipe key 'data.val_fraction' must be in (0, 1) or null; got {fraction!r}")
    if out["data"]["val_seed"] is None:
        raise RecipeError("recipe key 'data.val_seed' must be an integer; got None")
    if out["train"]["save_every"] is None or out["train"]["save_every"] < 1:
        raise RecipeError(f"recipe key 'train.save_every' must be >= 1; got {out['train']['save_every']!r}")
    return out


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Resolve a shipped recipe name or a YAML path into a validated configuration.

    Args:
        name_or_path: e.g. ``"cifar100/dkd_ls/resnet32x4-resnet8x4"`` or ``"my.yaml"``.
        overrides: ``"key.sub=value"`` strings applied after merging (YAML-typed values).

    Returns:
        A plain ``dict`` with every key of :data:`SCHEMA` and the method's keys filled in.

    Raises:
        RecipeError: see :func:`recipe_path` and :func:`validate`.
    """
    path = recipe_path(name_or_path)
    cfg = _resolve_file(path, ())
    try:
        default_name = path.relative_to(RECIPE_DIR).with_suffix("").as_posix()
    except ValueError:
        default_name = path.stem
    cfg.setdefault("name", default_name)
    cfg = apply_overrides(cfg, overrides)
    return validate(cfg)
