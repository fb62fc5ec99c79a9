"""Training schedules precomputed per optimisation step (DINO, Caron et al. 2021).

As in facebookresearch/dino ``main_dino.py`` (``utils.cosine_scheduler``), every schedule is an
array with one value per optimizer step, computed once before training starts; the training step
reads ``schedule[global_step]``. This makes a resumed run see exactly the values an uninterrupted
run would (the value depends only on the step number) and lets tests check start, warm-up and end.

* learning rate: linear warm-up from 0 to the peak, then cosine decay to ``min_lr``;
* weight decay: cosine from ``weight_decay`` to ``weight_decay_end`` (DINO raises it 0.04 → 0.4);
* teacher momentum: cosine from ``momentum`` to ``momentum_end`` (DINO 0.996 → 1);
* teacher temperature: linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp``, then
  constant (DINO warms it per epoch; here per step, which is the same curve, sampled finer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """``(total_steps,)`` values: linear ``warmup_start → base`` over ``warmup_steps``, then a
    half-cosine ``base → final`` that reaches ``final`` on the last step.

    ``warmup_steps`` is clipped to ``total_steps`` (a run shorter than its warm-up ends still
    warming up).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.empty(0)
    n_decay = total_steps - warmup_steps
    if n_decay == 1:
        decay = np.array([base])
    else:
        t = np.arange(n_decay) / max(n_decay - 1, 1)
        decay = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * t))
    return np.concatenate([warmup, decay]).astype(np.float64)


def linear_warmup_then_constant(start: float, end: float, total_steps: int,
                                warmup_steps: int) -> np.ndarray:
    """``(total_steps,)`` values rising linearly ``start → end`` over ``warmup_steps``, then ``end``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    values = np.full(total_steps, float(end))
    if warmup_steps:
        values[:warmup_steps] = np.linspace(start, end, warmup_steps, endpoint=False)
    return values


@dataclass(frozen=True)
class Schedules:
    """Per-step values for one run; index with ``global_step`` (see :meth:`at`)."""

    lr: np.ndarray
    weight_decay: np.ndarray
    teacher_momentum: np.ndarray | None = None
    teacher_temp: np.ndarray | None = None

    @property
    def total_steps(self) -> int:
        return len(self.lr)

    def at(self, step: int) -> dict[str, float]:
        """The values at optimizer step ``step`` (clamped to the last step, so the final
        end-of-run bookkeeping never indexes past the end)."""
        i = int(min(max(step, 0), self.total_steps - 1))
        out = {"lr": float(self.lr[i]), "weight_decay": float(self.weight_decay[i])}
        if self.teacher_momentum is not None:
            out["teacher_momentum"] = float(self.teacher_momentum[i])
        if self.teacher_temp is not None:
            out["teacher_temp"] = float(self.teacher_temp[i])
        return out


def build_schedules(*, total_steps: int, steps_per_epoch: int, peak_lr: float, min_lr: float,
                    warmup_epochs: float, weight_decay: float, weight_decay_end: float,
                    teacher_momentum: float | None = None, teacher_momentum_end: float = 1.0,
                    teacher_temp: float | None = None, warmup_teacher_temp: float | None = None,
                    warmup_teacher_temp_epochs: float = 0.0) -> Schedules:
    """All schedules of a run of ``total_steps`` optimizer steps (``steps_per_epoch`` per epoch).

    Warm-up lengths are given in epochs (as DINO / MAE configs) and converted to steps. Teacher
    schedules are built only when their base value is given (DINO; MAE has no teacher).
    """
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    lr = cosine_schedule(peak_lr, min_lr, total_steps, warmup_steps=warmup_steps)
    wd = cosine_schedule(weight_decay, weight_decay_end, total_steps)
    momentum = (cosine_schedule(teacher_momentum, teacher_momentum_end, total_steps)
                if teacher_momentum is not None else None)
    temp = None
    if teacher_temp is not None:
        start = teacher_temp if warmup_teacher_temp is None else warmup_teacher_temp
        temp = linear_warmup_then_constant(start, teacher_temp, total_steps,
                                           int(round(warmup_teacher_temp_epochs * steps_per_epoch)))
    return Schedules(lr=lr, weight_decay=wd, teacher_momentum=momentum, teacher_temp=temp)
