"""The region mask encoding: morphology equal to SciPy's, the regions of the crop statistics, and
an encoder that reads them, exports and reloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from rn_classifier.errors import InputError
from rn_classifier.models import create_model
from rn_classifier.models.export import load_encoder, save_encoder
from rn_classifier.models.mask_regions import MaskRegionEncoding, dilate, erode, lesion_regions


def _blob(shape=(20, 22, 18), seed=0, touching_border=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.52
    if touching_border:
        mask[0, 5:12, 4:10] = True
    return mask


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("iterations", [1, 3])
def test_dilation_and_erosion_equal_scipys(spatial_dims, iterations):
    mask = _blob(touching_border=True)
    if spatial_dims == 2:
        mask = mask[:, :, 9]
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    np.testing.assert_array_equal(dilate(t, iterations)[0, 0].numpy() > 0.5,
                                  ndimage.binary_dilation(mask, iterations=iterations))
    np.testing.assert_array_equal(erode(t, iterations)[0, 0].numpy() > 0.5,
                                  ndimage.binary_erosion(mask, iterations=iterations))


def test_regions_are_those_of_the_crop_statistics():
    mask = _blob(seed=1)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    core, rim, inner, outer = (r[0, 0].numpy() > 0.5 for r in lesion_regions(t))
    grown2 = ndimage.binary_dilation(mask, iterations=2)
    np.testing.assert_array_equal(core, ndimage.binary_erosion(mask))
    np.testing.assert_array_equal(rim, mask & ~ndimage.binary_erosion(mask))
    np.testing.assert_array_equal(inner, grown2 & ~mask)
    np.testing.assert_array_equal(outer, ndimage.binary_dilation(mask, iterations=5) & ~grown2)
    # The four regions do not overlap, and core + rim is the lesion.
    assert not (core & rim).any() and not (inner & outer).any() and not ((core | rim) & inner).any()
    np.testing.assert_array_equal(core | rim, mask)


def test_a_lesion_without_core_is_all_core_and_an_empty_mask_gives_empty_regions():
    thin = torch.zeros(2, 1, 9, 9, 9)
    thin[0, 0, 4, 2:7, 4] = 1.0  # a line: one erosion removes it
    core, rim, inner, outer = lesion_regions(thin)
    torch.testing.assert_close(core[0], thin[0])
    assert rim[0].sum() == 0 and inner[0].sum() > 0
    assert all(r[1].sum() == 0 for r in (core, rim, inner, outer))


def test_encoding_gives_the_image_inside_each_region():
    mask = torch.from_numpy(_blob(seed=2).astype(np.float32))[None, None]
    image = torch.randn_like(mask)
    x = torch.cat([image, mask], dim=1)
    encoded = MaskRegionEncoding()(x)
    assert encoded.shape == (1, 6, *mask.shape[2:])
    torch.testing.assert_close(encoded[:, :2], x)
    for channel, region in zip(encoded[0, 2:], lesion_regions(mask)):
        torch.testing.assert_close(channel, image[0, 0] * region[0, 0])
    with pytest.raises(InputError, match="T1CE, lesion mask"):
        MaskRegionEncoding()(image)


def test_region_encoder_takes_two_channels_and_round_trips_through_export(tmp_path):
    torch.manual_seed(0)
    model = create_model("vit3d_tiny_conv_regions_p8", depth=1).eval()
    assert model.in_chans == 2 and model.patch_embed.input_conv.in_channels == 6
    x = torch.randn(2, 2, 40, 40, 40)
    x[:, 1] = (x[:, 1] > 1.0).float()
    save_encoder(model, tmp_path, arch="vit3d_tiny_conv_regions_p8", crop_size=(40, 40, 40),
                 spacing=(2.0, 2.0, 2.0), normalisation={"method": "zscore_in_brain"}, config={})
    loaded, meta = load_encoder(tmp_path)
    assert meta["in_chans"] == 2 and loaded.mask_encoding == "regions"
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.forward_head(model.forward_features(x),
                                                                        pre_logits=True))
        # The mask matters: the same image with another lesion gives another embedding.
        moved = x.clone()
        moved[:, 1] = torch.roll(x[:, 1], shifts=6, dims=1)
        assert not torch.allclose(loaded(moved), loaded(x))
    with pytest.raises(InputError, match="in_chans=1"):
        create_model("vit3d_tiny_conv_regions_p8", in_chans=1)


def test_a_pretrained_one_channel_encoder_gets_region_channels_that_start_at_zero():
    from rn_classifier.finetune.config import MASK_ENCODINGS as CONFIG_CHOICES
    from rn_classifier.finetune.inflate import use_mask_encoding
    from rn_classifier.models.mask_regions import MASK_ENCODINGS

    assert CONFIG_CHOICES == MASK_ENCODINGS  # the config's copy (no torch import) stays in step
    torch.manual_seed(0)
    pretrained = create_model("vit3d_tiny_conv_p8", depth=1, img_size=32).eval()
    x = torch.randn(2, 2, 32, 32, 32)
    x[:, 1] = (x[:, 1] > 1.0).float()
    with torch.no_grad():
        before = pretrained(x[:, :1])
        model = use_mask_encoding(pretrained, "regions")
        # Step 0 computes the pretrained function of T1CE, whatever the mask and its regions hold.
        torch.testing.assert_close(model(x), before)
    assert model.in_chans == 2 and model.patch_embed.input_conv.in_channels == 6
    assert model.init_kwargs["mask_encoding"] == "regions" and model.init_kwargs["in_chans"] == 2
    rebuilt = create_model("vit3d_tiny_conv_p8", **{k: v for k, v in model.init_kwargs.items()})
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), before)
    with pytest.raises(InputError, match="from 'regions' to 'binary'"):
        use_mask_encoding(model, "binary")
