"""DINO3D: teacher = copy of student, momentum update, and the loss wiring of lightly's DINOLoss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss

from rn_classifier.errors import InputError
from rn_classifier.models import create_model
from rn_classifier.ssl import DINO3D

OUT_DIM = 64


@pytest.fixture(scope="module")
def crops():
    torch.manual_seed(1)
    return [torch.randn(2, 1, 32, 32, 32) for _ in range(2)] + [torch.randn(2, 1, 16, 16, 16) for _ in range(3)]


def _dino(**backbone_kwargs):
    torch.manual_seed(0)
    backbone = create_model("vit3d_tiny_p8", depth=2, **backbone_kwargs)
    return DINO3D(backbone, out_dim=OUT_DIM, hidden_dim=96, bottleneck_dim=32)


def _pairs(dino):
    return [*zip(dino.student_backbone.parameters(), dino.teacher_backbone.parameters()),
            *zip(dino.student_head.parameters(), dino.teacher_head.parameters())]


def test_teacher_starts_equal_to_student_and_has_no_gradients():
    dino = _dino()
    pairs = _pairs(dino)
    assert len(pairs) == len(list(dino.student_backbone.parameters())) + len(list(dino.student_head.parameters()))
    assert all(torch.equal(s, t) and s.data_ptr() != t.data_ptr() for s, t in pairs)
    assert not any(t.requires_grad for _, t in pairs)


def test_update_momentum_one_keeps_teacher_zero_copies_student():
    dino = _dino()
    with torch.no_grad():
        for p in [*dino.student_backbone.parameters(), *dino.student_head.parameters()]:
            p.add_(torch.randn_like(p))
    before = [t.clone() for _, t in _pairs(dino)]
    dino.update_teacher(1.0)
    assert all(torch.equal(t, b) for (_, t), b in zip(_pairs(dino), before))
    dino.update_teacher(0.5)
    for (s, t), b in zip(_pairs(dino), before):
        torch.testing.assert_close(t, 0.5 * b + 0.5 * s)
    dino.update_teacher(0.0)
    assert all(torch.equal(s, t) for s, t in _pairs(dino))
    with pytest.raises(InputError, match=r"momentum must be in \[0, 1\], got 1.5"):
        dino.update_teacher(1.5)


def test_teacher_stays_in_eval_mode():
    dino = _dino(drop_path_rate=0.5)
    dino.train()
    assert dino.student_backbone.training and not dino.teacher_backbone.training
    assert not dino.teacher_head.training


def test_multi_crop_batching_equals_one_call_per_crop(crops):
    dino = _dino().eval()
    batched = dino.forward_student(crops)
    with torch.no_grad():
        single = [dino.student_head(dino.student_backbone(c)) for c in crops]
    assert [o.shape for o in batched] == [(2, OUT_DIM)] * 5
    for b, s in zip(batched, single):
        torch.testing.assert_close(b, s, rtol=1e-4, atol=1e-5)


def _hand_dino_loss(teacher_out, student_out, center, teacher_temp, student_temp=0.1):
    """Cross-entropy of facebookresearch/dino main_dino.DINOLoss, written out."""
    total, n_terms = 0.0, 0
    for iq, q in enumerate(teacher_out):
        q = F.softmax((q - center) / teacher_temp, dim=-1)
        for v, s in enumerate(student_out):
            if v == iq:  # the same view seen by teacher and student is skipped
                continue
            total = total + torch.sum(-q * F.log_softmax(s / student_temp, dim=-1), dim=-1).mean()
            n_terms += 1
    return total / n_terms


def test_loss_on_3d_projections_equals_hand_computed_dino(crops):
    dino = _dino()
    dino.train()
    loss_fn = DINOLoss(output_dim=OUT_DIM, center_momentum=0.9)
    teacher_out, student_out = dino(crops, n_global=2)
    assert len(teacher_out) == 2 and len(student_out) == 5
    assert not any(t.requires_grad for t in teacher_out) and all(s.requires_grad for s in student_out)
    # list position i is the same view for teacher and student (DINOLoss skips those pairs): at
    # the start the teacher equals the student, so their outputs for the global crops agree
    for t, s in zip(teacher_out, student_out[:2]):
        torch.testing.assert_close(t, s.detach(), rtol=1e-4, atol=1e-5)

    loss = loss_fn(teacher_out, student_out, teacher_temp=0.04)
    torch.testing.assert_close(loss, _hand_dino_loss(teacher_out, student_out, 0.0, 0.04))
    # second step: lightly updated its center to 0.9·0 + 0.1·mean(teacher outputs)
    center = 0.1 * torch.cat(teacher_out).mean(0, keepdim=True)
    loss2 = loss_fn(teacher_out, student_out, teacher_temp=0.07)
    torch.testing.assert_close(loss2, _hand_dino_loss(teacher_out, student_out, center, 0.07))

    loss.backward()
    assert dino.student_backbone.cls_token.grad is not None
    assert dino.teacher_backbone.cls_token.grad is None


def test_n_global_is_checked(crops):
    with pytest.raises(InputError, match="n_global must be between 1 and the number of crops"):
        _dino()(crops, n_global=0)
