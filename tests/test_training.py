"""Training options: the transition regularizer and the initializations against hand-computed
values, and one short run of the training scripts per option (metadata written)."""

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from ess_widgets.models import MQARConfig, MQARModel, load_model_file
from ess_widgets.models.training import (
    TrainConfig,
    apply_init,
    forward_with_mixers,
    gla_bias_for_decay,
    model_transition_penalty,
    s6_decays,
    train,
    transition_diagonals,
    transition_penalty,
)
from ess_widgets.tasks import mqar

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _model(family, state=2, d_model=8, vocab=16):
    torch.manual_seed(0)
    return MQARModel(MQARConfig(family, state, vocab, d_model=d_model)).double()


IDS = mqar(3, num_pairs=2, seq_len=10, vocab_size=16, seed=0).inputs

# ------------------------------------------------------------------ regularizer


def test_transition_penalty_hand_values():
    # ||diag(a) - I||_F per step, then the mean: rows 0.5 and 0, and sqrt(0.3^2 + 0.4^2).
    assert float(transition_penalty(torch.tensor([[0.5, 1.0], [1.0, 1.0]]))) == 0.25
    assert float(transition_penalty(torch.tensor([0.7, 0.6]))) == pytest.approx(0.5)


def test_wla_penalty_is_the_fixed_decays_distance():
    model = _model("wla")
    with torch.no_grad():
        for block in model.blocks:
            block.mixer.decay_logit.copy_(torch.logit(torch.tensor([0.5, 0.75])))
    _, io = forward_with_mixers(model, IDS)
    # every step, head and layer: sqrt(0.5^2 + 0.25^2)
    assert float(model_transition_penalty(model, io)) == pytest.approx(math.sqrt(0.3125))


def test_s6_penalty_hand_value():
    model = _model("s6")
    with torch.no_grad():
        for block in model.blocks:
            m = block.mixer
            m.A_log.copy_(torch.log(torch.tensor([1.0, 2.0])).expand_as(m.A_log))
            m.dt_proj.weight.zero_()  # dt = softplus(bias) = 0.1 on every input
            m.dt_proj.bias.fill_(math.log(math.expm1(0.1)))
    _, io = forward_with_mixers(model, IDS)
    expected = math.hypot(1 - math.exp(-0.1), 1 - math.exp(-0.2))  # 0.20473
    assert float(model_transition_penalty(model, io)) == pytest.approx(expected, rel=1e-8)


def test_gla_penalty_matches_the_gates_computed_by_hand():
    model = _model("gla", state=3)
    _, io = forward_with_mixers(model, IDS)
    terms = []
    for block, (h, _) in zip(model.blocks, io):
        m = block.mixer
        gate = torch.sigmoid(m.gate_proj(m.conv(h))) ** (1 / 16)  # (B, L, d_k)
        terms.append((gate - 1).pow(2).sum(-1).sqrt().mean())
    expected = sum(terms) / 2
    torch.testing.assert_close(model_transition_penalty(model, io), expected)
    # and the diagonals are those of the operator the model runs
    a = transition_diagonals(model.blocks[0].mixer, io[0][0])
    op = model.blocks[0].mixer.operator(io[0][0])
    torch.testing.assert_close(a, op.recurrence[0].expand_as(a))


def test_la_penalty_is_zero_and_sa_has_none():
    model = _model("la")
    _, io = forward_with_mixers(model, IDS)
    assert float(model_transition_penalty(model, io)) == 0.0
    sa = _model("sa")
    assert transition_diagonals(sa.blocks[0].mixer, torch.zeros(1, 4, 8).double()) is None
    with pytest.raises(ValueError, match="softmax attention"):
        TrainConfig("sa", 4, reg_lambda=0.1)


def test_forward_with_mixers_is_the_forward_pass():
    model = _model("gla")
    logits, io = forward_with_mixers(model, IDS)
    torch.testing.assert_close(logits, model(IDS))
    assert len(io) == 2 and io[0][0].shape == (3, 10, 8)


# ------------------------------------------------------------------ initialization


def test_s6_decays_and_gla_bias_formulas():
    d = s6_decays(torch.tensor([0.1, 0.01], dtype=torch.float64), 3)
    expected = torch.tensor(
        [
            [math.exp(-0.1), math.exp(-0.2), math.exp(-0.3)],
            [math.exp(-0.01), math.exp(-0.02), math.exp(-0.03)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(d, expected)
    decay = torch.tensor([0.5, 0.9, 0.999], dtype=torch.float64)
    b = gla_bias_for_decay(decay)
    torch.testing.assert_close(torch.sigmoid(b) ** (1 / 16), decay)
    # by hand: decay 0.5 -> logit(2^-16) = -16 ln 2 - ln(1 - 2^-16)
    assert float(b[0]) == pytest.approx(-16 * math.log(2) - math.log1p(-(2**-16)))


def test_s6_style_init_of_the_s6_mixer():
    torch.manual_seed(1)
    model = apply_init(MQARModel(MQARConfig("s6", 4, 16, d_model=16)), "s6")
    for block in model.blocks:
        m = block.mixer
        A = -torch.exp(m.A_log)
        torch.testing.assert_close(A, -torch.arange(1.0, 5.0).expand(16, 4))  # S4D-real
        dt = torch.nn.functional.softplus(m.dt_proj.bias)
        assert (dt >= 1e-3 * 0.999).all() and (dt <= 1e-1 * 1.001).all()
    model = apply_init(model, "gla")
    for block in model.blocks:
        assert (block.mixer.A_log == 0).all()  # A = -1 for every state
        dt = torch.nn.functional.softplus(block.mixer.dt_proj.bias)
        assert (dt >= 1e-2 * 0.999).all() and (dt <= 1e-1 * 1.001).all()


def test_gla_mixer_inits():
    torch.manual_seed(2)
    model = apply_init(MQARModel(MQARConfig("gla", 8, 16, d_model=16)), "s6")
    m = model.blocks[0].mixer
    decay = torch.sigmoid(m.gate_proj.bias.double()) ** (1 / 16)  # gate at zero input
    n = torch.arange(1, 9, dtype=torch.float64)
    dt = -torch.log(decay) / n  # S6-style: decay_n = exp(-dt_n (n + 1))
    assert (dt >= 1e-3 * 0.99).all() and (dt <= 1e-1 * 1.01).all()
    assert m.gate_proj.weight.std() < 0.05
    model = apply_init(model, "gla")
    b = model.blocks[0].mixer.gate_proj.bias
    assert (b >= 1).all() and (b <= 5).all()


def test_init_only_for_gla_and_s6():
    with pytest.raises(ValueError, match="'gla' and 's6' families only"):
        TrainConfig("la", 4, init="s6")
    with pytest.raises(ValueError, match="scheme"):
        apply_init(_model("la"), "s6")


# ------------------------------------------------------------------ short training runs

TINY = ["--d-model", "8", "--steps", "3", "--batch", "4", "--eval-every", "3", "--warmup", "1"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            [
                "--family",
                "la",
                "--state",
                "2",
                "--task",
                "selective_copying",
                "--num-items",
                "2",
                "--seq-len",
                "6",
                "--vocab-size",
                "8",
            ],
            {"task": "selective_copying"},
        ),
        (
            [
                "--family",
                "gla",
                "--state",
                "2",
                "--task",
                "compression",
                "--num-items",
                "3",
                "--seq-len",
                "6",
                "--vocab-size",
                "8",
                "--reg-lambda",
                "0.5",
            ],
            {"task": "compression", "reg_lambda": 0.5},
        ),
        (
            [
                "--family",
                "s6",
                "--state",
                "2",
                "--num-items",
                "2",
                "--seq-len",
                "8",
                "--vocab-size",
                "8",
                "--init",
                "s6",
            ],
            {"task": "mqar", "init": "s6"},
        ),
    ],
    ids=["task", "regularizer", "init"],
)
def test_train_task_script_writes_the_options(tmp_path, extra, expected):
    out = tmp_path / "m.safetensors"
    _script("train_task").main([*extra, *TINY, "--out", str(out)])
    model, meta = load_model_file(out)
    record = meta["training"]
    for key, value in expected.items():
        assert record[key] == value, key
    assert record["steps_run"] == 3 and 0 <= record["train_accuracy"] <= 1
    assert model.cfg.family == extra[1]


@pytest.mark.parametrize("mode", ["mixer", "logits"])
def test_distillation_run_writes_teacher_and_loss(tmp_path, mode):
    teacher_path = tmp_path / "teacher.safetensors"
    script = _script("train_task")
    common = ["--num-items", "2", "--seq-len", "8", "--vocab-size", "8", *TINY]
    script.main(["--family", "gla", "--state", "4", *common, "--out", str(teacher_path)])
    out = tmp_path / "student.safetensors"
    script.main(
        [
            "--family",
            "la",
            "--state",
            "2",
            *common,
            "--distill",
            mode,
            "--teacher",
            str(teacher_path),
            "--out",
            str(out),
        ]
    )
    _, meta = load_model_file(out)
    record = meta["training"]
    assert record["distill"] == mode and record["teacher"] == str(teacher_path)
    assert record["distill_loss"] >= 0
    if mode == "mixer":  # the student keeps the teacher's non-mixer weights
        teacher, _ = load_model_file(teacher_path)
        student, _ = load_model_file(out)
        torch.testing.assert_close(student.embed.weight, teacher.embed.weight)
        torch.testing.assert_close(student.blocks[1].mlp[0].weight, teacher.blocks[1].mlp[0].weight)


def test_distillation_checks_shapes():
    teacher = MQARModel(MQARConfig("la", 2, 16, d_model=8))
    with pytest.raises(ValueError, match="must match"):
        train(
            TrainConfig("la", 2, d_model=16, vocab_size=16, distill="mixer", steps=1),
            teacher=teacher,
            log=None,
        )
    with pytest.raises(ValueError, match="exactly when"):
        train(TrainConfig("la", 2, steps=1), teacher=teacher)
    # an MLP-free teacher (the s6ng block) has no MLPs to give a student with MLPs
    mlp_free = MQARModel(MQARConfig("s6", 2, 16, d_model=8, expand=2, mlp_ratio=0, gate=False))
    with pytest.raises(ValueError, match="mlp_ratio"):
        train(
            TrainConfig("la", 2, d_model=8, vocab_size=16, distill="mixer", steps=1),
            teacher=mlp_free,
            log=None,
        )


def test_distillation_teachers_are_the_plain_block_models_with_8_pairs():
    names = _script("paper_experiments").teachers()
    assert len(names) == 13 and not any(n.startswith("mqar-s6ng-") for n in names)
    assert names == list(pd.read_csv(ROOT / "ess_widgets/models/paper/distill_results.csv").teacher)


def test_mixer_distillation_reduces_the_error():
    # 40 steps of mixer matching must bring the held-out relative error well below
    # its value at the start (a copy of an untrained mixer: about 1 or more).
    torch.manual_seed(0)
    teacher = MQARModel(MQARConfig("gla", 4, 16, d_model=8))
    cfg = dict(
        num_items=2,
        seq_len=8,
        vocab_size=16,
        d_model=8,
        batch=16,
        warmup=1,
        eval_every=100,
        distill="mixer",
        lr=1e-2,
    )
    _, start = train(
        TrainConfig("gla", 4, steps=1, **cfg, seed=1), teacher=teacher, log=lambda s: None
    )
    _, end = train(
        TrainConfig("gla", 4, steps=40, **cfg, seed=1), teacher=teacher, log=lambda s: None
    )
    assert end["distill_loss"] < 0.5 * start["distill_loss"]


@pytest.mark.parametrize("experiment", ["tasks", "regularizer", "init", "distill", "copy_hard"])
def test_paper_experiment_quick_run(tmp_path, experiment):
    _script("paper_experiments").main([experiment, "--quick", "--out", str(tmp_path)])
    csvs = {p.name for p in tmp_path.glob("*.csv")}
    name = {
        "tasks": "tasks_results.csv",
        "regularizer": "regularizer_results.csv",
        "init": "init_results.csv",
        "distill": "distill_results.csv",
        "copy_hard": "copy_hard_results.csv",
    }[experiment]
    assert name in csvs
    frame = pd.read_csv(tmp_path / name)
    assert (
        len(frame) >= 2
        and frame["accuracy" if experiment != "distill" else "distill_loss"].notna().all()
    )
    if experiment in ("tasks", "copy_hard"):  # the models are written with their record
        _, meta = load_model_file(tmp_path / "weights" / f"{frame.name[0]}.safetensors")
        assert meta["training"]["task"] == frame.task[0]
    if experiment == "copy_hard":  # the harder setting: 12 tokens in 48 positions
        assert (frame.num_items == 12).all() and (frame.seq_len == 48).all()


def test_train_mqar_script_writes_an_ungated_s6_model(tmp_path, monkeypatch):
    # The MQAR grid's "s6ng" models (Mamba's block without the output gate), at a tiny size.
    script = _script("train_mqar")
    for name, value in {"SEQ_LEN": 10, "VOCAB": 16, "D_MODEL": 8, "BATCH": 4}.items():
        monkeypatch.setattr(script, name, value)
    rec = script.train_one("s6", 2, 2, 3, block=script.S6NG, out=tmp_path)
    assert rec["name"] == "mqar-s6ng-ds2-kv2" and rec["steps"] == 3
    model, meta = load_model_file(tmp_path / "mqar-s6ng-ds2-kv2.safetensors")
    assert (model.cfg.gate, model.cfg.expand, model.cfg.mlp_ratio) == (False, 2, 0)
    assert model.num_channels == 16 and model.blocks[0].mlp is None
    assert meta["training"]["gate"] is False
    assert meta["training"]["num_params"] == sum(p.numel() for p in model.parameters())
    assert meta["training"]["train_cpu_seconds"] >= 0


def test_mqar_experiment_script_measures_only_the_named_models(tmp_path):
    script = _script("mqar_experiment")
    script.main(["--only", "mqar-la-dk16-kv8", "--out", str(tmp_path)])
    results = pd.read_csv(tmp_path / "mqar_results.csv")
    assert list(results.name) == ["mqar-la-dk16-kv8"]
    row = results.iloc[0]
    assert (row.arch, row.expand, row.mlp_ratio, row.gate) == ("la", 1, 2, True)
    model = MQARModel(MQARConfig("la", 16, 64, d_model=64))
    assert row.num_params == sum(p.numel() for p in model.parameters())
    assert 0.9 < row.accuracy <= 1 and row.tss == 16
    # a second run measures its model and keeps the first one's row as it was
    script.main(["--only", "mqar-la-dk8-kv4", "--out", str(tmp_path)])
    again = pd.read_csv(tmp_path / "mqar_results.csv").set_index("name")
    assert set(again.index) == {"mqar-la-dk16-kv8", "mqar-la-dk8-kv4"}
    assert again.loc["mqar-la-dk16-kv8", "accuracy"] == row.accuracy
    assert list(again.reset_index().columns) == list(results.columns)
