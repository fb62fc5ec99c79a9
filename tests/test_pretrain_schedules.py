"""Per-step schedules: values at the start, at the end of the warm-up and at the end."""

from __future__ import annotations

import numpy as np
import pytest

from rn_classifier.pretrain.schedules import build_schedules, cosine_schedule


def dino_reference_cosine(base, final, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0.0):
    """facebookresearch/dino utils.cosine_scheduler, written out for comparison."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    decay = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, decay))


def test_cosine_schedule_start_warmup_end():
    s = cosine_schedule(1.0, 0.1, total_steps=110, warmup_steps=10)
    assert len(s) == 110
    assert s[0] == 0.0                                   # warm-up starts at 0
    assert np.all(np.diff(s[:11]) > 0)                   # rises linearly ...
    assert s[10] == pytest.approx(1.0)                   # ... to the peak at the end of warm-up
    assert np.all(np.diff(s[10:]) <= 1e-12)              # then only decreases
    assert s[-1] == pytest.approx(0.1)                   # reaching the final value on the last step
    assert s[10 + 50] == pytest.approx(0.55, abs=0.01)   # half-way through the decay: the mean


def test_cosine_schedule_follows_dino_curve():
    ours = cosine_schedule(5e-4, 1e-6, total_steps=100, warmup_steps=20)
    ref = dino_reference_cosine(5e-4, 1e-6, epochs=10, niter_per_ep=10, warmup_epochs=2)
    # Same warm-up and the same half-cosine; DINO stops one step short of the final value.
    assert np.allclose(ours, ref, atol=5e-4 * 0.05)


def test_warmup_longer_than_run_is_clipped():
    s = cosine_schedule(1.0, 0.0, total_steps=4, warmup_steps=100)
    assert len(s) == 4 and np.all(np.diff(s) > 0) and s[-1] < 1.0


def test_build_schedules_dino_values():
    s = build_schedules(total_steps=300, steps_per_epoch=10, peak_lr=1e-3, min_lr=1e-6,
                        warmup_epochs=5, weight_decay=0.04, weight_decay_end=0.4,
                        teacher_momentum=0.996, teacher_momentum_end=1.0, teacher_temp=0.07,
                        warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=3)
    assert s.total_steps == 300
    start, warm, end = s.at(0), s.at(50), s.at(299)
    assert start["lr"] == 0.0 and warm["lr"] == pytest.approx(1e-3) and end["lr"] == pytest.approx(1e-6)
    assert start["weight_decay"] == pytest.approx(0.04) and end["weight_decay"] == pytest.approx(0.4)
    assert start["teacher_momentum"] == pytest.approx(0.996) and end["teacher_momentum"] == pytest.approx(1.0)
    assert start["teacher_temp"] == pytest.approx(0.04)
    assert s.at(29)["teacher_temp"] < 0.07 and s.at(30)["teacher_temp"] == pytest.approx(0.07)
    assert end["teacher_temp"] == pytest.approx(0.07)
    assert s.at(10_000) == end                            # clamped past the end


def test_build_schedules_without_teacher():
    s = build_schedules(total_steps=5, steps_per_epoch=5, peak_lr=1e-3, min_lr=0.0, warmup_epochs=0,
                        weight_decay=0.05, weight_decay_end=0.05)
    assert s.teacher_momentum is None and "teacher_temp" not in s.at(0)
    assert s.at(0)["lr"] == pytest.approx(1e-3) and s.at(4)["weight_decay"] == pytest.approx(0.05)
