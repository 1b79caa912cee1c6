"""Train one small model on a task with the ESS paper's training options (CPU, seeded).

    python scripts/train_task.py --family gla --state 8 --task selective_copying \\
        --num-items 6 --seq-len 24 --vocab-size 16 --d-model 32 --steps 400 \\
        --reg-lambda 1.0 --init s6 --out /tmp/copy-gla.safetensors
    python scripts/train_task.py --family gla --state 2 --teacher mqar-gla-dk16-kv8 \\
        --distill mixer --num-items 8 --seq-len 64 --vocab-size 64 --out /tmp/student.safetensors

The loop and every option (task, transition regularizer ``--reg-lambda``,
initialization ``--init``, distillation ``--distill`` from ``--teacher``) are
``ess_widgets.models.training.train``'s; the options and the training results go
into the safetensors header of ``--out`` (metadata key ``training``), read back by
``ess_widgets.models.load_model_file``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ess_widgets.models.model import load_model_file, save_model
from ess_widgets.models.registry import load_mqar_model, mqar_model_names
from ess_widgets.models.training import DISTILL_MODES, INITS, TrainConfig, train
from ess_widgets.tasks import TASKS


def load_teacher(source: str):
    """A shipped MQAR model by name, or a model file written by ``save_model``."""
    if source in mqar_model_names():
        return load_mqar_model(source)
    path = Path(source)
    if not path.exists():
        raise SystemExit(f"--teacher {source!r} is neither a shipped model nor a file.")
    return load_model_file(path)[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", required=True, choices=("la", "wla", "gla", "sa", "s6"))
    p.add_argument("--state", type=int, required=True, help="d_k, head size or d_state")
    p.add_argument("--task", default="mqar", choices=TASKS)
    p.add_argument("--num-items", type=int, default=8, help="pairs (MQAR) or tokens")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=64)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reg-lambda", type=float, default=0.0, help="lambda of ||A - I||_F")
    p.add_argument("--init", default="default", choices=INITS)
    p.add_argument("--distill", choices=DISTILL_MODES, help="distill from --teacher")
    p.add_argument("--teacher", help="shipped model name or model file")
    p.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    if (args.distill is None) != (args.teacher is None):
        raise SystemExit("--distill and --teacher go together.")
    torch.set_num_threads(1)
    cfg = TrainConfig(
        args.family,
        args.state,
        task=args.task,
        num_items=args.num_items,
        seq_len=args.seq_len,
        vocab_size=args.vocab_size,
        d_model=args.d_model,
        num_layers=args.num_layers,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        warmup=args.warmup,
        eval_every=args.eval_every,
        seed=args.seed,
        reg_lambda=args.reg_lambda,
        init=args.init,
        distill=args.distill,
    )
    teacher = load_teacher(args.teacher) if args.teacher else None
    model, record = train(cfg, teacher=teacher)
    if args.teacher:
        record["teacher"] = args.teacher
    record["name"] = args.out.stem
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.out, {"training": record})
    print(f"{args.out}: held-out accuracy {record['train_accuracy']}", flush=True)
    return record


if __name__ == "__main__":
    main()
