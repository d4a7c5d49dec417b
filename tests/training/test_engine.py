"""The engine on tiny standard-format CIFAR-100 files and on scikit-learn digits (CPU, in process)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _train_helpers as H  # noqa: E402

import logit_standardization as core  # noqa: E402
from logit_standardization.training import checkpoint as ckpt  # noqa: E402
from logit_standardization.training.cli import main  # noqa: E402
from logit_standardization.training.engine import _Run, lr_at  # noqa: E402
from logit_standardization.training.methods import build_method  # noqa: E402
from logit_standardization.training.models import create_model  # noqa: E402
from logit_standardization.training.recipes import load_recipe  # noqa: E402
from logit_standardization.training import distributed as D  # noqa: E402

STUDENT_KEYS = {"arch", "dataset", "num_classes", "state_dict", "normalization", "input_size"}
TINY = ["--epochs", "1", "--batch-size", "16", "--quiet", "--device", "cpu", "--no-plots"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return H.write_cifar100(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def teacher_run(cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    assert main(["cifar100/teacher/resnet56", "--data-root", str(cifar), "--output", str(out), "--channels-last",
                 *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def reference_teacher(teacher_run, tmp_path_factory):
    """The teacher's weights in the reference zoo's format: {"model": DataParallel state dict, ...}."""
    state = H.student_state(teacher_run)
    path = tmp_path_factory.mktemp("ref") / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": {f"module.{k}": v for k, v in state.items()},
                "best_acc": torch.tensor(72.34), "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005}]}}, path)
    return path


def test_teacher_recipe_writes_every_output(teacher_run):
    for name in ("last.pt", "best.pt", "student.pt", "metrics.jsonl", "summary.json"):
        assert (teacher_run / name).is_file(), name
    payload = torch.load(teacher_run / "student.pt", weights_only=True)
    assert set(payload) == STUDENT_KEYS
    assert payload["arch"] == "resnet56" and payload["dataset"] == "cifar100" and payload["num_classes"] == 100
    assert payload["input_size"] == [3, 32, 32]
    assert payload["normalization"] == {"mean": [0.5071, 0.4867, 0.4408], "std": [0.2675, 0.2565, 0.2761]}
    create_model("resnet56", dataset="cifar100").load_state_dict(payload["state_dict"], strict=True)
    best = torch.load(teacher_run / "best.pt", weights_only=True)
    assert best["kind"] == "best" and best["epoch"] == 1 and set(best["student"]) == STUDENT_KEYS
    (record,) = H.read_metrics(teacher_run)
    for key in ("epoch", "lr", "train_loss", "train_loss_ce", "train_top1", "train_top5", "test_loss", "test_top1",
                "test_top5", "seconds", "data_seconds", "images_per_s"):
        assert key in record, key
    assert record["lr"] == 0.05 and record["epoch"] == 1
    summary = json.loads((teacher_run / "summary.json").read_text())
    assert summary["paper_top1"] == 72.34 and summary["teacher"] is None
    assert summary["best"] == {"epoch": 1, "top1": record["test_top1"], "top5": record["test_top5"]}
    assert summary["last"]["top1"] == record["test_top1"]
    assert summary["config"]["train"]["channels_last"] is True
    assert {"torch", "torchvision", "logit_standardization"} <= set(summary["versions"])


@pytest.mark.parametrize("recipe, teacher_file", [
    ("cifar100/kd_ls/resnet56-resnet20", "reference"),
    ("cifar100/dkd_ls/resnet56-resnet20", "best.pt"),
    ("cifar100/mlkd_ls/resnet56-resnet20", "student.pt"),
    ("cifar100/ctkd_ls/resnet56-resnet20", "best.pt"),
])  # fmt: skip
def test_student_recipe_per_method(cifar, teacher_run, reference_teacher, tmp_path, recipe, teacher_file):
    teacher = reference_teacher if teacher_file == "reference" else teacher_run / teacher_file
    out = tmp_path / "run"
    assert main([recipe, "--data-root", str(cifar), "--output", str(out), "--teacher", str(teacher), *TINY]) == 0
    payload = torch.load(out / "student.pt", weights_only=True)
    assert set(payload) == STUDENT_KEYS and payload["arch"] == "resnet20"
    (record,) = H.read_metrics(out)
    summary = json.loads((out / "summary.json").read_text())
    teacher_summary = json.loads((teacher_run / "summary.json").read_text())
    # the teacher evaluated here is the network the teacher run wrote, on the same test set
    assert summary["teacher"]["top1"] == pytest.approx(teacher_summary["last"]["top1"], abs=1e-9)
    assert summary["teacher"]["arch"] == "resnet56" and summary["paper_top1"] == load_recipe(recipe)["paper"]
    terms = {k for k in record if k.startswith("train_loss_")}
    parts = sum(record[k] for k in terms)
    assert record["train_loss"] == pytest.approx(parts, rel=1e-6)
    method = recipe.split("/")[1]
    if method == "dkd_ls":
        assert record["dkd_warmup"] == pytest.approx(1 / 20)
    if method == "mlkd_ls":
        assert terms == {"train_loss_ce", "train_loss_kd", "train_loss_cc", "train_loss_bc"}
    if method == "ctkd_ls":
        assert record["ctkd_lambda"] == pytest.approx(-0.0244717, abs=1e-6)
        # the temperature parameter is trained (it is in the optimizer) and starts at 1 + 20 sigmoid(1)
        assert record["temperature"] != pytest.approx(15.6212, abs=1e-7)
        assert abs(record["temperature"] - 15.6212) < 0.5
        last = torch.load(out / "last.pt", weights_only=True)
        assert last["method"]["loss.raw_temperature"].shape == (1,)
    for value in record.values():
        assert math.isfinite(value)


def test_reference_and_plain_teacher_files_load(teacher_run, reference_teacher, tmp_path):
    model = create_model("resnet56", dataset="cifar100")
    ckpt.load_weights(model, reference_teacher, arch="resnet56")
    expected = H.student_state(teacher_run)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    plain = tmp_path / "plain.pth"
    torch.save(expected, plain)  # the torchvision ImageNet files are bare state dicts
    model2 = create_model("resnet56", dataset="cifar100")
    ckpt.load_weights(model2, plain, arch="resnet56")
    assert all(torch.equal(model2.state_dict()[k], v) for k, v in expected.items())


# -------------------------------------------------------------------------------- error cases
def test_wrong_teacher_architecture_names_the_differences(cifar, teacher_run, tmp_path, capsys):
    rc = main(["cifar100/kd_ls/resnet110-resnet20", "--data-root", str(cifar), "--output", str(tmp_path / "r"),
               "--teacher", str(teacher_run / "best.pt"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not fit architecture 'resnet110'" in err and "the file declares arch 'resnet56'" in err
    assert "missing keys: layer1.9" in err


def test_teacher_with_other_shapes_names_them(tmp_path):
    path = tmp_path / "t.pt"
    state = create_model("resnet8x4", dataset="cifar100", num_classes=10).state_dict()
    torch.save({"model": state}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"shape mismatches: fc.weight: file \(10, 256\) vs model \(100, 256\)"):
        ckpt.load_weights(create_model("resnet8x4", dataset="cifar100"), path, arch="resnet8x4")


def test_missing_teacher_is_explained(cifar, tmp_path, capsys):
    rc = main(["cifar100/kd_ls/resnet32x4-resnet8x4", "--data-root", str(cifar), "--output", str(tmp_path / "r"),
               *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "pass --teacher PATH" in err and "cifar100/teacher/resnet32x4" in err


def test_missing_data_is_explained(tmp_path, capsys):
    rc = main(["cifar100/teacher/resnet56", "--data-root", str(tmp_path / "empty"), "--output", str(tmp_path / "r"),
               *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cifar-100-python" in err and "--download" in err and "cifar-100-python.tar.gz" in err


def test_existing_run_needs_resume(teacher_run, cifar, capsys):
    rc = main(["cifar100/teacher/resnet56", "--data-root", str(cifar), "--output", str(teacher_run), *TINY])
    assert rc == 2 and "--resume" in capsys.readouterr().err


def test_resume_refuses_changed_settings(teacher_run, cifar, capsys):
    rc = main(["cifar100/teacher/resnet56", "--data-root", str(cifar), "--output", str(teacher_run), "--resume",
               "--set", "optimizer.lr=0.1", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "optimizer.lr: 0.05 -> 0.1" in err


def test_fp16_on_cpu_is_refused(tmp_path, capsys):
    rc = main(["demo/teacher", "--output", str(tmp_path / "r"), "--amp", "fp16", *TINY])
    assert rc == 2 and "fp16 needs CUDA" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_unsafe_checkpoint_is_refused_with_the_reason(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"refused by the safe loader.*weights_only=True"):
        ckpt.load_checkpoint(path, what="teacher checkpoint")
    assert "code ran" not in capsys.readouterr().out


def test_truncated_checkpoint_is_named(tmp_path):
    good = tmp_path / "good.pt"
    ckpt.save_atomic({"model": {"w": torch.ones(1000)}}, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ckpt.CheckpointError, match=r"bad.pt' cannot be read.*truncated"):
        ckpt.load_checkpoint(bad)
    with pytest.raises(ckpt.CheckpointError, match=r"does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"optimizer": {}}, tmp_path / "noweights.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"holds no network weights.*top-level keys: \['optimizer'\]"):
        ckpt.load_weights(create_model("mlp_digits", dataset="digits"), tmp_path / "noweights.pt", arch="mlp_digits")


def test_crash_during_a_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"epoch": 1, "w": torch.arange(5.0)}, path)

    def crashing_save(obj, f):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the disk, then the process "dies"
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(ckpt.CheckpointError, match="No space.*previous file.*kept"):
        ckpt.save_atomic({"epoch": 2, "w": torch.zeros(5)}, path)
    monkeypatch.undo()
    loaded = ckpt.load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["w"], torch.arange(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]


# -------------------------------------------------------------------------------- digits: AMP, seeds, repeats
@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    return H.random_teacher(tmp_path_factory.mktemp("dt") / "teacher.pt", "mlp_digits", "digits")


def _digits(out: Path, teacher: Path, *extra: str, recipe: str = "demo/kd_ls") -> int:
    return main([recipe, "--output", str(out), "--teacher", str(teacher), "--epochs", "2", "--quiet",
                 "--device", "cpu", *extra])


def test_identical_runs_give_identical_metrics_and_weights(digits_teacher, tmp_path):
    """Two runs with the same seed (augmentation on, two loader workers) are bit-identical."""
    for name in ("a", "b"):
        assert _digits(tmp_path / name, digits_teacher, "--workers", "2", "--seed", "3") == 0
    ma, mb = H.read_metrics(tmp_path / "a"), H.read_metrics(tmp_path / "b")
    assert len(ma) == 2 and H.without_timing(ma) == H.without_timing(mb)
    sa, sb = H.student_state(tmp_path / "a"), H.student_state(tmp_path / "b")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # and another seed gives another run
    assert _digits(tmp_path / "c", digits_teacher, "--workers", "2", "--seed", "4") == 0
    assert H.without_timing(H.read_metrics(tmp_path / "c")) != H.without_timing(ma)


def test_bf16_autocast_runs_on_cpu(digits_teacher, tmp_path):
    assert _digits(tmp_path / "fp32", digits_teacher) == 0
    assert _digits(tmp_path / "bf16", digits_teacher, "--amp", "bf16") == 0
    fp32, bf16 = H.read_metrics(tmp_path / "fp32"), H.read_metrics(tmp_path / "bf16")
    for record in bf16:
        assert all(math.isfinite(v) for v in record.values())
    # autocast really changed the arithmetic, but not the outcome
    assert bf16[0]["train_loss"] != fp32[0]["train_loss"]
    assert bf16[-1]["train_loss"] == pytest.approx(fp32[-1]["train_loss"], rel=0.1)
    assert json.loads((tmp_path / "bf16" / "summary.json").read_text())["config"]["train"]["amp"] == "bf16"


def test_runs_report_mean_and_std(tmp_path, capsys):
    assert main(["demo/student", "--output", str(tmp_path), "--runs", "2", "--epochs", "1", "--quiet",
                 "--seed", "5", "--no-plots"]) == 0
    report = json.loads((tmp_path / "runs.json").read_text())
    best = [json.loads((tmp_path / f"seed{s}" / "summary.json").read_text())["best"]["top1"] for s in (5, 6)]
    assert report["seeds"] == [5, 6] and report["best_top1"]["values"] == best
    assert report["best_top1"]["mean"] == pytest.approx(np.mean(best))
    assert report["best_top1"]["std"] == pytest.approx(np.std(best, ddof=1))
    assert "over 2 runs" in capsys.readouterr().out


def test_teacher_is_frozen_and_outside_the_optimizer(digits_teacher, tmp_path):
    cfg = load_recipe("demo/kd_ls",
                      ["schedule.epochs=1", f"teacher.checkpoint={digits_teacher}"])
    state = D.setup("cpu")
    run = _Run(cfg, tmp_path, state, quiet=True, resume=False, log=lambda m: None)
    before = {k: v.clone() for k, v in run.teacher.state_dict().items()}
    in_optimizer = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in run.teacher.parameters())
    assert all(not p.requires_grad for p in run.teacher.parameters())
    run.run()
    assert not run.teacher.training
    assert all(torch.equal(before[k], v) for k, v in run.teacher.state_dict().items())


# -------------------------------------------------------------------------------- methods and schedule
def test_method_losses_match_the_numpy_core():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 10, generator=g, dtype=torch.float64)
    t = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    ce = torch.nn.functional.cross_entropy(s, y).item()
    kd = build_method({"name": "kd", "ce_weight": 0.1, "kd_weight": 9.0, "temperature": 2.0, "standardize": True})
    total, terms = kd(s, t, y)
    assert total.item() == pytest.approx(0.1 * ce + 9 * core.kd_loss(s.numpy(), t.numpy()), rel=1e-9)
    dkd = build_method({"name": "dkd", "ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "kd_weight": 9.0,
                        "temperature": 2.0, "warmup_epochs": 20, "standardize": True})
    assert dkd.start_epoch(4) == {"dkd_warmup": 0.2}
    total, terms = dkd(s, t, y)
    ref = core.dkd_loss(s.numpy(), t.numpy(), y.numpy(), alpha=9.0, beta=72.0, temperature=2.0)
    assert terms["kd"].item() == pytest.approx(0.2 * ref, rel=1e-9) and terms["ce"].item() == pytest.approx(ce)
    mlkd = build_method({"name": "mlkd", "ce_weight": 0.1, "kd_weight": 9.0, "temperatures": [2.0, 3.0, 5.0, 2.0, 6.0],
                         "variant": "reference", "standardize": True})
    s2, t2 = s.flip(0), t.flip(0)
    total, terms = mlkd((s, s2), (t, t2), y)
    ref = core.mlkd_terms(s.numpy(), s2.numpy(), t.numpy(), t2.numpy())
    for key in ("kd", "cc", "bc"):
        assert terms[key].item() == pytest.approx(ref[key], rel=1e-9)
    ce2 = 0.1 * (ce + torch.nn.functional.cross_entropy(s2, y).item())
    assert total.item() == pytest.approx(ce2 + sum(ref.values()), rel=1e-9)
    ctkd = build_method({"name": "ctkd", "ce_weight": 0.1, "kd_weight": 9.0, "standardize": True})
    ctkd.double()
    assert ctkd.start_epoch(5)["ctkd_lambda"] == pytest.approx(core.ctkd_lambda(5))
    total, terms = ctkd(s, t, y)
    temp = core.ctkd_temperature(1.0)
    assert terms["kd"].item() == pytest.approx(9 * core.kd_loss(s.numpy(), t.numpy(), temperature=temp), rel=1e-9)
    ce_only = build_method({"name": "ce"})
    assert not ce_only.needs_teacher and ce_only(s, None, y)[0].item() == pytest.approx(ce)


def test_reference_step_schedule():
    opt = {"lr": 0.05}
    sched = {"name": "step", "milestones": [150, 180, 210], "gamma": 0.1, "epochs": 240}
    assert [lr_at(e, opt, sched) for e in (1, 150)] == [0.05, 0.05]
    assert lr_at(151, opt, sched) == pytest.approx(0.005) and lr_at(180, opt, sched) == pytest.approx(0.005)
    assert lr_at(181, opt, sched) == pytest.approx(0.0005) and lr_at(240, opt, sched) == pytest.approx(0.00005)


def test_fashion_mnist_family_end_to_end(tmp_path):
    root = H.write_fashion_mnist(tmp_path / "fmnist")
    common = ["--data-root", str(root), "--workers", "0", *TINY]
    assert main(["fashion_mnist/teacher", "--output", str(tmp_path / "t"), *common]) == 0
    teacher = tmp_path / "t" / "student.pt"
    for recipe in ("fashion_mnist/mlkd_ls", "fashion_mnist/dkd"):
        out = tmp_path / recipe.replace("/", "_")
        assert main([recipe, "--output", str(out), "--teacher", str(teacher), *common]) == 0
        payload = torch.load(out / "student.pt", weights_only=True)
        assert payload["arch"] == "cnn_fm_small" and payload["input_size"] == [1, 28, 28]
        (record,) = H.read_metrics(out)
        assert all(math.isfinite(v) for v in record.values())


def test_losses_see_float32_logits_under_bf16_autocast():
    from logit_standardization.training.engine import StudentWithLoss
    from logit_standardization.training.methods import KD

    seen = []

    class Spy(KD):
        def forward(self, student, teacher, labels):
            seen.append((student.dtype, torch.is_autocast_enabled("cpu")))
            return super().forward(student, teacher, labels)

    student = create_model("mlp_digits_small", dataset="digits")
    distiller = StudentWithLoss(student, Spy(), device=torch.device("cpu"), amp="bf16")
    images, labels = torch.randn(8, 1, 8, 8), torch.arange(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = student(images)
    assert raw.dtype == torch.bfloat16  # the student itself runs in bf16 ...
    loss, terms, out = distiller(images, labels, torch.randn(8, 10))
    assert out.dtype == torch.float32 and seen == [(torch.float32, False)]  # ... the losses in float32
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in student.parameters())


@pytest.mark.slow
def test_compiled_student_trains_and_saves_plain_weights(tmp_path):
    out = tmp_path / "run"
    assert main(["demo/student", "--output", str(out), "--compile", "--epochs", "1", "--quiet", "--device", "cpu",
                 "--set", "data.train_subset=256"]) == 0
    payload = torch.load(out / "student.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in payload["state_dict"])
    create_model("mlp_digits_small", dataset="digits").load_state_dict(payload["state_dict"], strict=True)
    assert json.loads((out / "summary.json").read_text())["config"]["train"]["compile"] is True


def test_a_finished_run_draws_its_figures(digits_teacher, tmp_path):
    out = tmp_path / "kd_ls"
    assert main(["demo/kd_ls", "--output", str(out), "--teacher", str(digits_teacher), "--epochs", "1", "--quiet",
                 "--device", "cpu"]) == 0
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs and all((out / "plots" / p).stat().st_size > 10_000 for p in pngs), pngs
    assert main(["demo/kd_ls", "--output", str(tmp_path / "quiet"), "--teacher", str(digits_teacher), "--epochs", "1",
                 "--quiet", "--device", "cpu", "--no-plots"]) == 0
    assert not (tmp_path / "quiet" / "plots").exists()


# -------------------------------------------------------------------------------- the loop's pieces
def test_train_one_epoch_and_evaluate_on_their_own():
    """The pieces of the engine's loop work without the run around them; a stopped epoch's
    statistics continue where they stopped."""
    from torch.utils.data import DataLoader, Subset, TensorDataset

    from logit_standardization.training.engine import EpochStats, StudentWithLoss, evaluate, train_one_epoch

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g))

    def setup():
        torch.manual_seed(0)
        student = create_model("mlp_digits_small", dataset="digits")
        model = StudentWithLoss(student, build_method({"name": "ce"}), device=cpu, amp="off")
        opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
        return student, model, opt, torch.amp.GradScaler("cpu", enabled=False)

    student, model, opt, scaler = setup()
    student.eval()
    whole = train_one_epoch(model, None, opt, scaler, DataLoader(data, batch_size=16), device=cpu, epoch=1)
    assert student.training  # put in train mode
    assert whole.names == ["loss", "ce"] and whole.steps == 3 and not whole.stopped
    assert whole.counts.tolist()[2] == 40 and whole.sums[0].item() == pytest.approx(whole.sums[1].item())
    test = evaluate(student, DataLoader(data, batch_size=16), device=cpu)
    assert set(test) == {"loss", "top1", "top5"} and not student.training

    # the same epoch, stopped after its first batch, then continued from the saved statistics
    student, model, opt, scaler = setup()
    first = train_one_epoch(model, None, opt, scaler, DataLoader(data, batch_size=16), device=cpu, epoch=1,
                            should_stop=lambda: True)
    assert first.stopped and first.steps == 1 and first.counts.tolist()[2] == 16
    partial = first.partial(1, world_size=1, batch=16)
    assert partial["batches_done"] == 1 and partial["terms"] == ["loss", "ce"]
    rest = train_one_epoch(model, None, opt, scaler, DataLoader(Subset(data, range(16, 40)), batch_size=16),
                           device=cpu, epoch=1, start=EpochStats.from_partial(partial, cpu))
    assert rest.steps == 3 and not rest.stopped
    assert torch.equal(rest.counts, whole.counts) and torch.equal(rest.sums, whole.sums)  # bit for bit
