"""Training the small models on a task, with the options the ESS paper studies.

``train(TrainConfig(...)) -> (model, record)`` is the one training loop behind
``scripts/train_mqar.py`` (the shipped MQAR models) and ``scripts/train_task.py``
(the paper's other experiments). Its options, each written to the record that
``save_model`` puts in the safetensors header (key ``"training"``):

Task (``task``, ``num_items``, ``seq_len``, ``vocab_size``)
    ``"mqar"``, ``"selective_copying"`` or ``"compression"`` (``ess_widgets.tasks``);
    ``num_items`` is the number of key-value pairs or tokens to remember. Each step
    draws a fresh batch (seed ``seed * 1_000_003 + step``); accuracy is measured on
    256 held-out sequences (seed ``10_000 + seed``) at the positions with a target.

Transition regularizer (``reg_lambda``)
    ``loss = task_loss + reg_lambda * R`` with ``R = mean ||A_t - I||_F``, the mean
    over layers, sequences, channels (heads) and steps ``t`` of the Frobenius
    distance of the state transition from the identity. Every mixer here has a
    diagonal transition ``A_t = diag(a_t)`` (``a_t`` the recurrence's ``a``, shape
    ``(N,)`` per channel), so ``||A_t - I||_F = sqrt(sum_n (a_t[n] - 1)^2)``:

    - GLA: ``a_t = alpha_t = sigmoid(W_a x_t + b) ** (1/16)`` (one head, ``N = d_k``);
    - WLA: ``a_t = lambda``, the learned input-independent decays (same every step);
    - S6: ``a_t[n] = exp(dt_t[c] * A[c, n])`` for each channel ``c`` (``N = d_state``);
    - LA: ``a_t = 1``: ``R = 0`` (nothing to regularize);
    - SA has no state transition: ``reg_lambda > 0`` raises ValueError.

    The penalty pulls the decays towards 1 (remember longer), against the state
    collapse in which gates close and the state forgets (low ESS with capacity
    to spare).

Initialization (``init``), for the mixers with input-dependent decays (GLA, S6)
    ``"default"``: the family's own (GLA: the ``"gla"`` scheme; S6: the ``"gla"``
    scheme, with which the shipped S6 models were trained).

    - ``"gla"``, GLA-style: every state dimension starts with the same slow decay
      distribution, independent of its index ``n``. GLA mixer: gate weight
      ``N(0, 0.02^2)``, bias ``U(1, 5)``, so ``alpha = sigmoid(b) ** (1/16)`` starts in
      ``[0.981, 0.9996]``. S6 mixer: ``A[c, n] = -1`` for all ``n`` (``A_log = 0``),
      ``dt`` log-uniform in ``[1e-2, 1e-1]``: ``a = exp(-dt)`` in ``[0.905, 0.990]``.
    - ``"s6"``, S6-style (Mamba's S4D-real): state ``n`` (0-based) decays at rate
      ``n + 1``: ``a[n] = exp(-dt (n + 1))`` with ``dt`` log-uniform in ``[1e-3, 1e-1]``
      (Mamba's ``dt_min, dt_max``), so added states decay ever faster. S6 mixer:
      ``A_log[c, n] = log(n + 1)``, ``dt_proj.bias`` = inverse softplus of ``dt`` per
      channel. GLA mixer: one ``dt_n`` per key dimension ``n``, gate bias
      ``b_n = logit(exp(-16 dt_n (n + 1)))`` so that ``sigmoid(b_n) ** (1/16) =
      exp(-dt_n (n + 1))`` at a zero gate input; gate weight ``N(0, 0.02^2)``.

    Both schemes keep the S6 mixer's B/C rows of ``x_proj`` at O(1) (see
    ``mixers.SelectiveSSMMixer``): only the decays differ.

Distillation (``teacher``, ``distill``)
    ``teacher``: a trained model (``MQARModel``) with the same ``d_model``,
    ``num_layers`` and vocabulary; the student trains on the teacher's task inputs.

    - ``"mixer"``, layer-wise mixer output matching: the student starts as a copy of
      the teacher's embedding, norms, MLPs and readout, frozen; only its mixers
      train. Loss: the mean over layers of ``||m_s - m_t||^2 / ||m_t||^2`` (over the
      batch), where ``m_t = teacher_mixer(h)`` and ``m_s = student_mixer(h)`` on the
      same input ``h``, the teacher's own mixer input at that layer. The held-out
      value of this relative error is the record's ``distill_loss``.
    - ``"logits"``: ``KL(softmax(teacher logits) || softmax(student logits))``, the
      mean over all positions, the whole student trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..tasks import TASKS, make_batch
from .mixers import LinearAttentionMixer, SelectiveSSMMixer, SoftmaxAttentionMixer
from .model import MQARConfig, MQARModel

__all__ = [
    "TrainConfig",
    "train",
    "accuracy",
    "forward_with_mixers",
    "transition_diagonals",
    "transition_penalty",
    "model_transition_penalty",
    "apply_init",
    "s6_decays",
    "gla_bias_for_decay",
    "INITS",
    "DISTILL_MODES",
]

INITS = ("default", "gla", "s6")
DISTILL_MODES = ("mixer", "logits")
# S6-style dt range (Mamba's defaults); the GLA-style S6 range is mixers.DT_MIN/DT_MAX.
S6_DT_MIN, S6_DT_MAX = 1e-3, 1e-1
HELD_OUT, HELD_OUT_SEED = 256, 10_000


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how (see the module docstring for each option).

    ``expand`` (S6 only: ``d_inner = expand * d_model``), ``gate`` (S6 only: Mamba's
    output gate) and ``mlp_ratio`` (0: blocks without an MLP, as in Mamba) are
    ``MQARConfig``'s. ``steps`` is the maximum;
    training stops early once the held-out accuracy reaches ``target`` (evaluated
    every ``eval_every`` steps). AdamW with linear
    warmup over ``warmup`` steps then a cosine to 0 over ``steps``; gradients
    clipped at norm 1.
    """

    family: str
    state: int
    task: str = "mqar"
    num_items: int = 8
    seq_len: int = 64
    vocab_size: int = 64
    d_model: int = 64
    num_layers: int = 2
    expand: int = 1
    mlp_ratio: int = 2
    gate: bool = True
    steps: int = 1000
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 50
    eval_every: int = 100
    target: float = 0.99
    seed: int = 0
    reg_lambda: float = 0.0
    init: str = "default"
    distill: str | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}, got {self.task!r}.")
        if self.init not in INITS:
            raise ValueError(f"`init` must be one of {INITS}, got {self.init!r}.")
        if self.init != "default" and self.family not in ("gla", "s6"):
            raise ValueError(
                f"`init` = {self.init!r} applies to the 'gla' and 's6' families only (the "
                f"mixers with input-dependent decays), got family {self.family!r}; use "
                "init='default'."
            )
        if self.reg_lambda < 0:
            raise ValueError(f"`reg_lambda` must be >= 0, got {self.reg_lambda}.")
        if self.reg_lambda > 0 and self.family == "sa":
            raise ValueError(
                "`reg_lambda` > 0 needs a state transition; softmax attention ('sa') has "
                "none. Use reg_lambda=0 or a recurrent family."
            )
        if self.distill is not None and self.distill not in DISTILL_MODES:
            raise ValueError(
                f"`distill` must be None or one of {DISTILL_MODES}, got {self.distill!r}."
            )


@torch.no_grad()
def accuracy(model: MQARModel, batch) -> float:
    """Fraction of positions with a target where the argmax prediction is right."""
    pred = model(batch.inputs).argmax(-1)
    mask = batch.query_mask
    return float((pred[mask] == batch.targets[mask]).double().mean())


def forward_with_mixers(model: MQARModel, inputs: torch.Tensor, mixer_inputs=None):
    """``model(inputs)`` with each block's mixer input and output.

    Returns ``(logits, [(h_0, m_0), (h_1, m_1), ...])``: ``h_l`` is the mixer's input
    (``norm1`` of the residual stream), ``m_l`` its output, each ``(B, L, d_model)``.
    ``mixer_inputs``, a list of tensors, replaces each ``h_l`` (distillation feeds the
    teacher's); the residual stream then follows the given inputs' mixer outputs.
    """
    x = model.embed(inputs)
    io = []
    for n, block in enumerate(model.blocks):
        h = block.norm1(x) if mixer_inputs is None else mixer_inputs[n]
        m = block.mixer(h)
        io.append((h, m))
        x = x + m
        x = block.mlp_residual(x)
    return model.head(model.norm(x)), io


def transition_diagonals(mixer, x: torch.Tensor) -> torch.Tensor | None:
    """The diagonals ``a_t`` of a mixer's state transitions on input ``x``.

    Parameters
    ----------
    mixer : LinearAttentionMixer, SelectiveSSMMixer or SoftmaxAttentionMixer
    x : torch.Tensor, shape (B, L, d_model)
        The mixer's input.

    Returns
    -------
    torch.Tensor, shape (B, C, L, N), or None
        ``A_t = diag(a_t)`` for each sequence, channel (head) and step, differentiable;
        None for softmax attention (no transition).
    """
    if isinstance(mixer, SoftmaxAttentionMixer):
        return None
    if isinstance(mixer, LinearAttentionMixer):
        q, k, _, xc = mixer._qkv(x)
        a = mixer._operator(q, k, xc).recurrence[0]
    elif isinstance(mixer, SelectiveSSMMixer):
        _, _, dt, B, C = mixer._parts(x)
        a = mixer._operator(dt, B, C).recurrence[0]
    else:
        raise TypeError(f"`mixer` of unknown type {type(mixer).__name__}.")
    B_, L = x.shape[:2]
    return a.expand(B_, a.shape[-3], L, a.shape[-1])


def transition_penalty(a: torch.Tensor) -> torch.Tensor:
    """``mean ||diag(a_t) - I||_F`` over all leading axes of ``a`` (``(..., N)``).

    Examples
    --------
    >>> transition_penalty(torch.tensor([[0.5, 1.0], [1.0, 1.0]]))  # (0.5 + 0) / 2
    tensor(0.2500)
    """
    return torch.linalg.vector_norm(a - 1, dim=-1).mean()


def model_transition_penalty(model: MQARModel, io) -> torch.Tensor:
    """``R``: the mean over layers of ``transition_penalty`` on each mixer's own input.

    ``io`` is the second output of ``forward_with_mixers``. Zero for softmax attention.
    """
    terms = []
    for block, (h, _) in zip(model.blocks, io):
        a = transition_diagonals(block.mixer, h)
        terms.append(h.new_zeros(()) if a is None else transition_penalty(a))
    return torch.stack(terms).mean()


def s6_decays(dt: torch.Tensor, num_states: int) -> torch.Tensor:
    """S4D-real decays ``exp(-dt (n + 1))``, ``n = 0 .. num_states - 1``: ``(..., N)``.

    Examples
    --------
    >>> s6_decays(torch.tensor([0.1], dtype=torch.float64), 2)
    tensor([[0.9048, 0.8187]], dtype=torch.float64)
    """
    n = torch.arange(1, num_states + 1, dtype=dt.dtype)
    return torch.exp(-dt[..., None] * n)


def gla_bias_for_decay(decay: torch.Tensor) -> torch.Tensor:
    """The GLA gate bias ``b`` with ``sigmoid(b) ** (1/16) = decay`` (``logit(decay^16)``)."""
    p16 = 16 * torch.log(decay.double())  # log(decay^16), stable for decays near 1
    return (p16 - torch.log(-torch.expm1(p16))).to(decay.dtype)


def _log_uniform(n: int, lo: float, hi: float, generator=None) -> torch.Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(u * (math.log(hi) - math.log(lo)) + math.log(lo))


@torch.no_grad()
def apply_init(model: MQARModel, scheme: str) -> MQARModel:
    """Re-initialise the decays of a GLA or S6 model with ``scheme`` (see the module doc).

    ``"default"`` changes nothing. Draws from torch's global generator.
    """
    if scheme not in INITS:
        raise ValueError(f"`scheme` must be one of {INITS}, got {scheme!r}.")
    if scheme == "default":
        return model
    for block in model.blocks:
        mixer = block.mixer
        if isinstance(mixer, SelectiveSSMMixer):
            D, N = mixer.A_log.shape
            if scheme == "s6":
                mixer.A_log.copy_(
                    torch.log(torch.arange(1, N + 1, dtype=torch.float64)).expand(D, N)
                )
                dt = _log_uniform(D, S6_DT_MIN, S6_DT_MAX)
            else:
                from .mixers import DT_MAX, DT_MIN

                mixer.A_log.zero_()
                dt = _log_uniform(D, DT_MIN, DT_MAX)
            mixer.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        elif isinstance(mixer, LinearAttentionMixer) and mixer.variant == "gla":
            mixer.gate_proj.weight.normal_(0.0, 0.02)
            if scheme == "s6":
                dt = _log_uniform(mixer.d_k, S6_DT_MIN, S6_DT_MAX)
                decay = torch.exp(-dt * torch.arange(1, mixer.d_k + 1, dtype=torch.float64))
                mixer.gate_proj.bias.copy_(gla_bias_for_decay(decay))
            else:
                mixer.gate_proj.bias.uniform_(1.0, 5.0)
        else:
            raise ValueError(
                f"`scheme` {scheme!r} applies to GLA and S6 mixers, not {type(mixer).__name__}."
            )
    return model


def _relative_error(student, teacher) -> torch.Tensor:
    return ((student - teacher) ** 2).sum() / (teacher**2).sum().clamp_min(1e-12)


def _distill_loss(student, teacher, inputs, mode):
    with torch.no_grad():
        t_logits, t_io = forward_with_mixers(teacher, inputs)
    if mode == "logits":
        s_logits = student(inputs)
        return F.kl_div(
            F.log_softmax(s_logits, -1).flatten(0, 1),
            F.log_softmax(t_logits, -1).flatten(0, 1),
            log_target=True,
            reduction="batchmean",
        )
    terms = [_relative_error(block.mixer(h), m) for block, (h, m) in zip(student.blocks, t_io)]
    return torch.stack(terms).mean()


def train(cfg: TrainConfig, *, teacher: MQARModel | None = None, log=print):
    """Train one model; returns ``(model in eval mode, record)``.

    Parameters
    ----------
    cfg : TrainConfig
    teacher : MQARModel, optional
        Needed when ``cfg.distill`` is set (see the module docstring).
    log : callable
        Progress lines (held-out accuracy every ``eval_every`` steps).

    Returns
    -------
    (MQARModel, dict)
        The record holds every field of ``cfg`` and ``steps`` (run), ``train_accuracy``
        (held-out, last evaluation), ``final_loss``, ``train_seconds`` (wall), ``train_cpu_seconds``
        (this process's CPU time), ``num_params``
        (all of the model's parameters, trained or frozen), and with
        distillation ``distill_loss`` (held-out) and ``teacher`` (its name).
    """
    if (cfg.distill is None) != (teacher is None):
        raise ValueError("Pass `teacher` exactly when `cfg.distill` is set.")
    torch.manual_seed(cfg.seed)
    model = MQARModel(
        MQARConfig(
            cfg.family,
            cfg.state,
            cfg.vocab_size,
            cfg.d_model,
            cfg.num_layers,
            mlp_ratio=cfg.mlp_ratio,
            expand=cfg.expand,
            gate=cfg.gate,
        )
    )
    apply_init(model, cfg.init)
    if teacher is not None:
        teacher = teacher.eval()
        tc = teacher.cfg
        if (tc.d_model, tc.num_layers, tc.vocab_size) != (
            cfg.d_model,
            cfg.num_layers,
            cfg.vocab_size,
        ):
            raise ValueError(
                f"The teacher has d_model {tc.d_model}, {tc.num_layers} layers, vocabulary "
                f"{tc.vocab_size}; the student {cfg.d_model}, {cfg.num_layers}, "
                f"{cfg.vocab_size}: they must match."
            )
        if cfg.distill == "mixer" and tc.mlp_ratio != cfg.mlp_ratio:
            raise ValueError(
                f"Mixer distillation gives the student the teacher's MLPs: the teacher has "
                f"mlp_ratio {tc.mlp_ratio}, the student {cfg.mlp_ratio}; they must match."
            )
        for p in teacher.parameters():
            p.requires_grad_(False)
    if cfg.distill == "mixer":
        # The student keeps the teacher's embedding, norms, MLPs and readout, frozen.
        own = {k: v for k, v in teacher.state_dict().items() if ".mixer." not in k}
        model.load_state_dict(own, strict=False)
        for name, p in model.named_parameters():
            p.requires_grad_(".mixer." in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step):
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    task = {"num_items": cfg.num_items, "seq_len": cfg.seq_len, "vocab_size": cfg.vocab_size}
    held_out = make_batch(cfg.task, HELD_OUT, seed=HELD_OUT_SEED + cfg.seed, **task)
    start, cpu_start = time.time(), time.process_time()
    acc, step, loss = 0.0, 0, torch.zeros(())
    for step in range(1, cfg.steps + 1):
        batch = make_batch(cfg.task, cfg.batch, seed=cfg.seed * 1_000_003 + step, **task)
        if cfg.distill is not None:
            loss = _distill_loss(model, teacher, batch.inputs, cfg.distill)
        else:
            logits, io = forward_with_mixers(model, batch.inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten())
            if cfg.reg_lambda > 0:
                loss = loss + cfg.reg_lambda * model_transition_penalty(model, io)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            acc = accuracy(model, held_out)
            model.train()
            log(f"  step {step:5d} loss {loss.item():.4f} held-out acc {acc:.3f}")
            if acc >= cfg.target and cfg.distill is None:
                break
    model.eval()
    record = {
        **asdict(cfg),
        "steps_run": step,
        "train_accuracy": round(acc, 4),
        "final_loss": round(float(loss.item()), 6),
        "train_seconds": round(time.time() - start, 1),
        "train_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    if cfg.distill is not None:
        with torch.no_grad():
            record["distill_loss"] = float(
                _distill_loss(model, teacher, held_out.inputs[:64], cfg.distill)
            )
    return model, record
