"""``TaskModelHandle``: a shipped selective-copying or compression model as a handle.

The same model class and handle as the MQAR models (``MQARHandle``: one forward
pre-hook per mixer, operators built from the mixer's own input), with the task's
own example sequence and text format (``ess_widgets.tasks.format_copy``,
``parse_copy``): ``d<n>`` data tokens, ``_`` noise or blank, ``|`` the delimiter,
e.g. ``"_ d4 _ _ d2 d7 | d4 d2"``.
"""

from __future__ import annotations

from ..models.experiment import FRESH_SEED
from ..models.paper import TASK_PREFIX, load_task_model, task_model_names
from ..tasks import copy_tokens, format_copy, make_batch, parse_copy
from .mqar import MQARHandle
from .tokens import encode

__all__ = ["TaskModelHandle", "is_task_model_name", "load_task_handle"]


class TaskModelHandle(MQARHandle):
    """A model trained on selective copying or compression (``task_model_names()``).

    Build it with ``ess_widgets.load("copy-gla-dk4-n6")``. ``record["task"]`` is the
    task; ``example()`` draws one sequence of it.
    """

    family = "synthetic task"

    @classmethod
    def from_name(cls, name: str, *, memory_budget: int | None = None) -> TaskModelHandle:
        model, record = load_task_model(name, with_record=True)
        return cls(model, name=name, record=record, memory_budget=memory_budget)

    @property
    def task(self) -> str:
        """``"selective_copying"`` or ``"compression"``."""
        return self.record.get("task", "selective_copying")

    def example(self, seed: int = FRESH_SEED, **kwargs):
        """One sequence of the model's training task, from a seed other than the training one.

        ``kwargs`` override ``num_items`` and ``seq_len``.
        """
        task = {
            "num_items": self.record.get("num_items", 6),
            "seq_len": self.record.get("seq_len", 24),
            "vocab_size": self.vocab_size,
        }
        task.update(kwargs)
        if self.task == "compression" and "seq_len" not in kwargs:
            task["seq_len"] = 2 * task["num_items"]
        return make_batch(self.task, 1, seed=seed, **task)

    def format(self, ids) -> str:
        """Token ids as text (``format_copy``)."""
        return format_copy(encode(ids).ids, self.vocab_size)

    @property
    def default_text(self) -> str:
        return format_copy(self.example().inputs[0], self.vocab_size)

    def _text_ids(self, text: str):
        return parse_copy(text, self.vocab_size)

    def _token_strings(self, ids):
        return copy_tokens(ids, self.vocab_size), tuple(str(int(i)) for i in ids)


def is_task_model_name(name) -> bool:
    """Whether ``name`` is a shipped selective-copying or compression model."""
    return (
        isinstance(name, str)
        and name.startswith(tuple(f"{p}-" for p in TASK_PREFIX.values()))
        and name in task_model_names()
    )


def load_task_handle(name: str, *, device=None, memory_budget: int | None = None):
    """``TaskModelHandle`` of a shipped task model, on the CPU by default."""
    handle = TaskModelHandle.from_name(name, memory_budget=memory_budget)
    if device is not None:
        handle.model.to(device)
    return handle
