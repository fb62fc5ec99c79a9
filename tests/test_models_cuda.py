"""The encoder, MAE and DINO on a GPU (skipped where there is none): everything made inside a
step (masks, noise, resampled positional embeddings) lives on the input's device."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import DINOLoss

from rn_classifier.models import create_model
from rn_classifier.models.export import load_encoder, save_encoder
from rn_classifier.ssl import DINO3D, MAE3D

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def test_encoder_bf16_on_gpu_with_local_crops():
    model = create_model("vit3d_tiny_p8", depth=2).to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for size in (32, 16):
            out = model(torch.randn(2, 1, size, size, size, device=CUDA))
            assert out.device.type == "cuda" and out.shape == (2, 192) and torch.isfinite(out).all()


def test_mae_masks_on_the_input_device():
    mae = MAE3D(create_model("vit3d_tiny_p8", depth=2), decoder_embed_dim=96, decoder_depth=1,
                decoder_num_heads=3).to(CUDA)
    x = torch.randn(2, 1, 32, 32, 32, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, pred, mask = mae(x)
    loss.backward()
    assert mask.device.type == "cuda" and torch.equal(mask.sum(1).cpu(), torch.tensor([48.0, 48.0]))
    assert torch.isfinite(loss) and mae.encoder.cls_token.grad is not None


def test_dino_step_on_gpu():
    dino = DINO3D(create_model("vit3d_tiny_p8", depth=2), out_dim=64, hidden_dim=96,
                  bottleneck_dim=32).to(CUDA)
    crops = [torch.randn(2, 1, 32, 32, 32, device=CUDA) for _ in range(2)]
    crops += [torch.randn(2, 1, 16, 16, 16, device=CUDA) for _ in range(2)]
    loss_fn = DINOLoss(output_dim=64).to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        teacher_out, student_out = dino(crops)
        loss = loss_fn(teacher_out, student_out, teacher_temp=0.04)
    loss.backward()
    dino.update_teacher(0.99)
    assert torch.isfinite(loss) and dino.teacher_backbone.cls_token.device.type == "cuda"


def test_export_loads_onto_the_gpu(tmp_path):
    model = create_model("vit3d_tiny_p8", depth=1).eval()
    save_encoder(model, tmp_path, arch="vit3d_tiny_p8", crop_size=(32, 32, 32), spacing=(1, 1, 1),
                 normalisation={}, config={})
    loaded, _ = load_encoder(tmp_path, map_location=CUDA)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x.to(CUDA)).cpu(), model(x), rtol=1e-3, atol=1e-3)
