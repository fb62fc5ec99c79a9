"""MAE3D: masking ratio, loss on removed patches only, decoder equal to lightly's in 2D."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightly.models import utils as lightly_utils

from rn_classifier.errors import InputError
from rn_classifier.models import create_model
from rn_classifier.ssl import MAE3D, patchify, random_masking


def _mae(spatial_dims=3, **kwargs):
    torch.manual_seed(0)
    img = (32,) * spatial_dims
    encoder = create_model("vit3d_tiny_p8", depth=2, spatial_dims=spatial_dims, img_size=img)
    return MAE3D(encoder, decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3, **kwargs)


@pytest.mark.parametrize("ratio,kept", [(0.75, 16), (0.5, 32), (0.9, 6)])
def test_masking_keeps_the_stated_number_of_patches(ratio, kept):
    x = torch.randn(3, 1, 32, 32, 32)
    ids_keep, mask, ids_restore = random_masking(3, 64, ratio, x.device)
    assert ids_keep.shape == (3, kept) and mask.device == x.device
    assert torch.equal(mask.sum(1), torch.full((3,), 64.0 - kept))
    # kept indices are exactly the zeros of the mask; ids_restore inverts the shuffle
    for b in range(3):
        assert set(ids_keep[b].tolist()) == set(torch.nonzero(mask[b] == 0).flatten().tolist())
    shuffled = torch.argsort(ids_restore, dim=1)
    assert torch.equal(torch.gather(shuffled, 1, ids_restore), torch.arange(64).expand(3, -1))
    assert not torch.equal(mask[0], mask[1])  # per-sample masks


def test_forward_encoder_runs_on_visible_tokens_only():
    mae = _mae()
    latent, mask, ids_restore = mae.forward_encoder(torch.randn(2, 1, 32, 32, 32), mask_ratio=0.75)
    assert latent.shape == (2, 1 + 16, 192) and mask.shape == ids_restore.shape == (2, 64)
    pred = mae.forward_decoder(latent, ids_restore)
    assert pred.shape == (2, 64, 8 ** 3)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_only_counts_removed_patches(norm_pix):
    mae = _mae(norm_pix_loss=norm_pix)
    x = torch.randn(2, 1, 32, 32, 32)
    loss, pred, mask = mae(x)
    assert torch.isfinite(loss)
    visible = (mask == 0).unsqueeze(-1)
    changed_visible = torch.where(visible, pred + 10.0, pred)
    torch.testing.assert_close(mae.forward_loss(x, changed_visible, mask), loss)
    changed_removed = torch.where(~visible, pred + 10.0, pred)
    assert mae.forward_loss(x, changed_removed, mask) > loss + 50


def test_loss_is_mse_on_removed_patches_and_zero_for_a_perfect_prediction():
    mae = _mae(norm_pix_loss=True)
    x = torch.randn(2, 1, 32, 32, 32)
    _, mask, _ = mae.forward_encoder(x)
    target = patchify(x, 8)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    assert mae.forward_loss(x, target, mask) < 1e-10
    mae.norm_pix_loss = False
    pred = torch.zeros_like(target)
    raw = patchify(x, 8)
    expected = (raw ** 2).mean(-1)[mask.bool()].mean()
    torch.testing.assert_close(mae.forward_loss(x, pred, mask), expected)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_mask_ratio_outside_open_interval_is_refused(bad):
    with pytest.raises(InputError, match=rf"mask_ratio must be in \(0, 1\), got {bad}"):
        _mae(mask_ratio=bad)
    mae = _mae()
    with pytest.raises(InputError, match=rf"mask_ratio must be in \(0, 1\), got {bad}"):
        mae(torch.randn(1, 1, 32, 32, 32), mask_ratio=bad)


def _lightly_decoder(mae):
    with warnings.catch_warnings():  # MAEDecoderTIMM is deprecated in lightly 1.6 (still shipped)
        warnings.simplefilter("ignore")
        from lightly.models.modules import MAEDecoderTIMM
        return MAEDecoderTIMM(num_patches=16, patch_size=8, in_chans=1, embed_dim=192,
                              decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3)


def test_decoder_equals_lightly_mae_decoder_in_2d():
    mae = _mae(spatial_dims=2)
    reference = _lightly_decoder(mae)
    # the fixed sin-cos decoder embedding is initialised identically
    torch.testing.assert_close(mae.decoder.decoder_pos_embed, reference.decoder_pos_embed)
    reference.load_state_dict(mae.decoder.state_dict())  # same parameter names, strict
    mae.eval(), reference.eval()
    tokens = torch.randn(2, 17, 192)
    torch.testing.assert_close(mae.decoder(tokens), reference(tokens))

    # forward_decoder = lightly's MAE pipeline (repeat mask token, set visible, decode, predict)
    x = torch.randn(2, 1, 32, 32)
    latent, mask, ids_restore = mae.forward_encoder(x)
    pred = mae.forward_decoder(latent, ids_restore)
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    idx_keep = torch.cat([torch.zeros(2, 1, dtype=torch.long), ids_shuffle[:, :4] + 1], dim=1)
    idx_mask = ids_shuffle[:, 4:] + 1
    decoded = lightly_utils.repeat_token(reference.mask_token, (2, 17))
    decoded = lightly_utils.set_at_index(decoded, idx_keep, reference.embed(latent))
    decoded = reference.decode(decoded)
    ref_pred = reference.predict(lightly_utils.get_at_index(decoded, idx_mask))
    ours_at_mask = torch.gather(pred, 1, (idx_mask - 1).unsqueeze(-1).expand(-1, -1, pred.shape[-1]))
    torch.testing.assert_close(ours_at_mask, ref_pred)


def test_a_few_steps_reduce_the_reconstruction_loss():
    mae = _mae()
    x = torch.randn(2, 1, 32, 32, 32)
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    torch.manual_seed(1)
    first = None
    for _ in range(15):
        loss, _, _ = mae(x)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        torch.manual_seed(1)
        assert mae(x)[0].item() < 0.9 * first
