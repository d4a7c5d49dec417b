"""``student.safetensors``: written by every run, read by the one checkpoint reader of lskd-train
(``--teacher``), lskd-export and lskd-plot; damaged files and bad metadata are refused in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
import _train_helpers as H  # noqa: E402

from logit_standardization import __version__  # noqa: E402
from logit_standardization.export.cli import main as export_main  # noqa: E402
from logit_standardization.training import checkpoint as ckpt  # noqa: E402
from logit_standardization.training import plots  # noqa: E402
from logit_standardization.training.cli import main as train_main  # noqa: E402
from logit_standardization.training.models import DATASET_INFO, create_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST_EXPORT = ["--exporter", "torchscript", "--provider", "cpu", "--verify-batches", "1,3"]


def _payload(arch: str, dataset: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = create_model(arch, dataset=dataset)
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()):
        net.train()
        with torch.no_grad():  # move the running statistics and the counters away from their defaults
            for _ in range(2):
                net(torch.randn(4, *DATASET_INFO[dataset].input_size))
    return ckpt.student_payload(net, arch=arch, dataset=dataset, num_classes=DATASET_INFO[dataset].num_classes)


def _train_args(out: Path, recipe: str, *extra: str) -> list[str]:
    return [recipe, "--output", str(out), "--epochs", "1", "--seed", "5", "--quiet", "--device", "cpu",
            "--no-plots", *extra]


def _one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _rewrite_metadata(path: Path, edit) -> None:
    """Re-save a safetensors file with edited metadata (and a matching checksum file)."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(meta)
    save_file(tensors, str(path), metadata=meta)
    ckpt.checksum_path(path).write_text(f"{ckpt.file_sha256(path)}  {path.name}\n")


def _flip_a_data_byte(path: Path) -> None:
    """Flip the lowest bit of the last byte of the tensor data (past the JSON header)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate_header(path: Path) -> None:
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    path.write_bytes(data[: 8 + header // 2])  # the JSON header is cut in the middle


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("arch, dataset", [("resnet8", "cifar100"), ("mlp_digits_small", "digits")])
def test_round_trip_gives_the_same_tensors_and_metadata(tmp_path, arch, dataset):
    payload = _payload(arch, dataset)
    path = ckpt.save_safetensors(payload, tmp_path / "student.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors", "student.safetensors.sha256"]
    digest, name = ckpt.checksum_path(path).read_text().split()
    assert name == path.name and digest == hashlib.sha256(path.read_bytes()).hexdigest()

    loaded = ckpt.read_checkpoint(path)
    assert loaded.format == "student.safetensors" and loaded.verified and loaded.payload is None
    assert loaded.meta == {
        "arch": arch, "dataset": dataset, "num_classes": payload["num_classes"],
        "normalization": payload["normalization"], "input_size": payload["input_size"],
        "library_version": __version__,
    }
    assert sorted(loaded.state_dict) == sorted(payload["state_dict"])  # safetensors stores names sorted
    for key, value in payload["state_dict"].items():
        got = loaded.state_dict[key]
        assert got.dtype == value.dtype and got.shape == value.shape and torch.equal(got, value), key
    if arch == "resnet8":  # BatchNorm counters and running statistics are kept
        counters = [k for k in loaded.state_dict if k.endswith("num_batches_tracked")]
        assert counters and all(loaded.state_dict[k].dtype == torch.int64 and int(loaded.state_dict[k]) == 2
                                for k in counters)

    net = create_model(arch, dataset=dataset)
    assert ckpt.load_weights(net, path, arch=arch)["arch"] == arch
    for key, value in net.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key])

    with safe_open(str(path), framework="pt") as f:  # plain strings, readable by any safetensors reader
        raw = f.metadata()
    assert set(raw) == set(ckpt.SAFETENSORS_FIELDS) and all(isinstance(v, str) for v in raw.values())
    assert json.loads(raw["normalization"]) == payload["normalization"] and raw["num_classes"] == str(
        payload["num_classes"])


def test_pt_and_safetensors_read_alike(tmp_path):
    payload = _payload("mlp_digits", "digits")
    pt = ckpt.save_atomic(payload, tmp_path / "student.pt")
    st = ckpt.save_safetensors(payload, tmp_path / "student.safetensors")
    a, b = ckpt.read_checkpoint(pt), ckpt.read_checkpoint(st)
    assert a.format == "student.pt" and a.verified
    assert {k: v for k, v in b.meta.items() if k != "library_version"} == a.meta
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_plain_safetensors_state_dict_is_weights_without_metadata(tmp_path):
    net = create_model("mlp_digits", dataset="digits")
    path = tmp_path / "weights.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"format": "pt"})  # what other tools write
    loaded = ckpt.read_checkpoint(path)
    assert loaded.format == "plain safetensors state dict" and loaded.meta == {} and not loaded.verified
    assert sorted(loaded.state_dict) == sorted(net.state_dict())  # the DataParallel prefix is removed


def test_a_safetensors_file_under_another_name_is_recognised(tmp_path):
    path = ckpt.save_safetensors(_payload("mlp_digits", "digits"), tmp_path / "teacher.weights")
    assert ckpt.read_checkpoint(path).format == "student.safetensors"


# ------------------------------------------------------------------------------ damaged files
def test_a_flipped_byte_is_a_sha256_mismatch(tmp_path):
    path = ckpt.save_safetensors(_payload("mlp_digits", "digits"), tmp_path / "student.safetensors")
    _flip_a_data_byte(path)
    with safe_open(str(path), framework="pt") as f:  # safetensors alone would load the damaged weights
        assert len(list(f.keys())) > 0
    with pytest.raises(ckpt.CheckpointError, match=r"student.safetensors' is corrupt: its SHA-256") as info:
        ckpt.read_checkpoint(path, what="teacher checkpoint")
    assert info.value.kind == "corrupt" and "\n" not in str(info.value)


@pytest.mark.parametrize("checksum", [True, False])
def test_a_truncated_header_is_refused(tmp_path, checksum):
    path = ckpt.save_safetensors(_payload("mlp_digits", "digits"), tmp_path / "student.safetensors")
    _truncate_header(path)
    if not checksum:
        ckpt.checksum_path(path).unlink()
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    if checksum:
        assert info.value.kind == "corrupt" and "is corrupt" in message
    else:  # safetensors' own error
        assert info.value.kind == "unreadable"
        assert "cannot be read (SafetensorError: Error while deserializing header" in message
        assert "not a safetensors file" in message


BAD_METADATA = {
    "arch_missing": (lambda m: m.pop("arch"), "field 'arch' is missing"),
    "input_size_missing": (lambda m: m.pop("input_size"), "field 'input_size' is missing"),
    "version_missing": (lambda m: m.pop("library_version"), "field 'library_version' is missing"),
    "format_missing": (lambda m: m.pop("lskd_format"), "field 'lskd_format' is missing"),
    "dataset_empty": (lambda m: m.__setitem__("dataset", " "), "field 'dataset' is empty"),
    "num_classes_word": (lambda m: m.__setitem__("num_classes", "ten"), "field 'num_classes' is 'ten'"),
    "num_classes_zero": (lambda m: m.__setitem__("num_classes", "0"), "field 'num_classes' is '0'"),
    "input_size_text": (lambda m: m.__setitem__("input_size", "1x8x8"), "field 'input_size' is '1x8x8'"),
    "input_size_floats": (lambda m: m.__setitem__("input_size", "[1, 8.5, 8]"), "field 'input_size'"),
    "normalization_json": (lambda m: m.__setitem__("normalization", "{mean: 1}"), "field 'normalization'"),
    "normalization_std_zero": (lambda m: m.__setitem__("normalization", '{"mean": [0.3], "std": [0]}'),
                               "positive std"),
    "normalization_channels": (lambda m: m.__setitem__("normalization", '{"mean": [0, 0, 0], "std": [1, 1, 1]}'),
                               "has 3 channels, input_size [1, 8, 8] has 1"),
    "future_format": (lambda m: m.__setitem__("lskd_format", "2"), "field 'lskd_format' is '2'"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_missing_or_malformed_metadata_is_refused(tmp_path, case):
    edit, expected = BAD_METADATA[case]
    path = ckpt.save_safetensors(_payload("mlp_digits_small", "digits"), tmp_path / "student.safetensors")
    _rewrite_metadata(path, edit)
    with pytest.raises(ckpt.CheckpointError, match="safetensors metadata") as info:
        ckpt.read_checkpoint(path)
    assert info.value.kind == "metadata" and expected in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ real runs and the CLIs
@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """The same random mlp_digits teacher as student.pt, student.safetensors and a plain safetensors file."""
    root = tmp_path_factory.mktemp("teachers")
    payload = _payload("mlp_digits", "digits", seed=11)
    plain = root / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in payload["state_dict"].items()}, str(plain))
    return {"pt": ckpt.save_atomic(payload, root / "teacher.pt"),
            "safetensors": ckpt.save_safetensors(payload, root / "teacher.safetensors"), "plain": plain}


@pytest.fixture(scope="module")
def kd_runs(teachers, tmp_path_factory):
    """One-epoch demo/kd_ls runs, the teacher given as .pt and as .safetensors."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("kd")
    runs = {}
    for kind in ("pt", "safetensors"):
        runs[kind] = root / kind
        assert train_main(_train_args(runs[kind], "demo/kd_ls", "--teacher", str(teachers[kind]))) == 0
    return runs


def test_a_run_writes_student_safetensors(kd_runs):
    run = kd_runs["pt"]
    digest, name = (run / "student.safetensors.sha256").read_text().split()
    assert name == "student.safetensors"
    assert digest == hashlib.sha256((run / "student.safetensors").read_bytes()).hexdigest()
    pt = torch.load(run / "student.pt", weights_only=True)
    st = ckpt.read_checkpoint(run / "student.safetensors")
    assert st.meta["arch"] == pt["arch"] == "mlp_digits_small" and st.meta["dataset"] == "digits"
    assert st.meta["num_classes"] == 10 and st.meta["input_size"] == [1, 8, 8]
    assert st.meta["normalization"] == pt["normalization"]
    assert sorted(st.state_dict) == sorted(pt["state_dict"])
    assert all(torch.equal(st.state_dict[k], v) for k, v in pt["state_dict"].items())
    assert not list(run.glob(".*.tmp"))


def test_a_safetensors_teacher_trains_exactly_like_the_pt_one(kd_runs):
    assert H.without_timing(H.read_metrics(kd_runs["pt"])) == H.without_timing(H.read_metrics(kd_runs["safetensors"]))
    sa, sb = H.student_state(kd_runs["pt"]), H.student_state(kd_runs["safetensors"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_plain_safetensors_teacher_loads(teachers):
    net = create_model("mlp_digits", dataset="digits")
    meta = ckpt.load_weights(net, teachers["plain"], arch="mlp_digits", what="teacher checkpoint")
    assert meta == {}
    reference = ckpt.read_checkpoint(teachers["pt"]).state_dict
    assert all(torch.equal(v, reference[k]) for k, v in net.state_dict().items())


def test_export_of_a_trained_student_safetensors(kd_runs, tmp_path, capsys):
    import onnxruntime as ort

    from logit_standardization.export import read_metadata

    run = tmp_path / "run"
    shutil.copytree(kd_runs["pt"], run)
    for name in ("student.pt", "student.pt.sha256", "best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"):
        (run / name).unlink()
    assert export_main([str(run / "student.safetensors"), "--onnx", *FAST_EXPORT]) == 0
    out, err = capsys.readouterr()
    onnx_path = run / "student.onnx"
    assert onnx_path.is_file() and "verify fp32" in out and "ok" in out
    assert "loaded mlp_digits_small (digits) from student.safetensors" in err
    meta = read_metadata(onnx_path)
    assert meta["arch"] == "mlp_digits_small" and meta["dataset"] == "digits" and meta["num_classes"] == 10
    assert meta["input_size"] == [1, 8, 8] and meta["source_format"] == "student.safetensors"
    assert meta["normalization"] == ckpt.read_checkpoint(run / "student.safetensors").meta["normalization"]

    net = create_model("mlp_digits_small", dataset="digits").eval()
    ckpt.load_weights(net, run / "student.safetensors", arch="mlp_digits_small")
    x = torch.randn(5, 1, 8, 8)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-4, atol=1e-5)


def test_plot_with_only_safetensors(kd_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(kd_runs["safetensors"], run)
    with_pt = plots.run_logits(run, max_samples=40)
    for name in ("student.pt", "student.pt.sha256"):
        (run / name).unlink()
    only_st = plots.run_logits(run, max_samples=40)
    assert only_st.student_arch == "mlp_digits_small" and only_st.teacher_arch == "mlp_digits"
    np.testing.assert_array_equal(only_st.student, with_pt.student)
    np.testing.assert_array_equal(only_st.teacher, with_pt.teacher)  # the teacher, a .safetensors file too
    assert plots.main([str(run), "--max-samples", "40"]) == 0
    assert {"curves.png", "logit_stats.png", "class_logits.png", "correlation_difference.png"} <= {
        p.name for p in (run / "plots").iterdir()}
    capsys.readouterr()


def _damage(path: Path, how: str) -> None:
    if how == "flipped_byte":
        _flip_a_data_byte(path)
    elif how == "truncated_header":
        _truncate_header(path)
        ckpt.checksum_path(path).unlink()  # no checksum: safetensors itself must refuse it
    else:
        _rewrite_metadata(path, lambda m: m.pop("normalization"))


DAMAGE = {"flipped_byte": "is corrupt: its SHA-256", "truncated_header": "SafetensorError",
          "missing_metadata": "field 'normalization' is missing"}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_teacher_is_refused_by_lskd_train(teachers, tmp_path, capsys, how):
    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(teachers["safetensors"], teacher)
    shutil.copy(ckpt.checksum_path(teachers["safetensors"]), ckpt.checksum_path(teacher))
    _damage(teacher, how)
    out = tmp_path / "run"
    assert train_main(_train_args(out, "demo/kd_ls", "--teacher", str(teacher))) == 2
    err = _one_line_error(capsys, "lskd-train")
    assert "teacher checkpoint" in err and str(teacher) in err and DAMAGE[how] in err
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip()


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_student_is_refused_by_lskd_export(teachers, tmp_path, capsys, how):
    path = tmp_path / "student.safetensors"
    shutil.copy(teachers["safetensors"], path)
    shutil.copy(ckpt.checksum_path(teachers["safetensors"]), ckpt.checksum_path(path))
    _damage(path, how)
    assert export_main([str(path), "--onnx", *FAST_EXPORT]) == 5  # lskd-export: 5, an unreadable checkpoint
    err = _one_line_error(capsys, "lskd-export")
    assert str(path) in err and DAMAGE[how] in err
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_student_is_refused_by_lskd_plot(kd_runs, tmp_path, capsys, how):
    run = tmp_path / "run"
    shutil.copytree(kd_runs["pt"], run)
    for name in ("student.pt", "student.pt.sha256"):
        (run / name).unlink()
    _damage(run / "student.safetensors", how)
    assert plots.main([str(run), "--max-samples", "20"]) == 2
    err = _one_line_error(capsys, "lskd-plot")
    assert "student checkpoint" in err and DAMAGE[how] in err
