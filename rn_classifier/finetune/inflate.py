"""Inflate a pretrained patch embedding to more input channels (T1CE → T1CE + lesion mask).

Pretraining sees T1CE only (1 channel); fine-tuning adds the lesion mask as a second channel
(Gomaa et al. 2025). The convolution that reads the image, ``patch_embed.input_conv`` (the linear
patch projection, or the first layer of a conv stem), is replaced by one with ``in_chans`` inputs whose first channels carry the
pretrained weights and whose new channels start at zero. At step 0 the network therefore
computes exactly what the pretrained one computed on T1CE, whatever the mask holds; the mask
weights are learnt during fine-tuning.

``use_mask_encoding`` does the same for the region mask encoding (``models.mask_regions``): a
pretrained one-channel encoder gets the mask and the four region channels as new, zero-weighted
inputs of its first convolution, so step 0 again computes the pretrained function of T1CE.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..models.mask_regions import MaskRegionEncoding, encoded_channels


def inflate_conv_channels(conv: nn.Conv2d | nn.Conv3d, in_chans: int) -> nn.Conv2d | nn.Conv3d:
    """A copy of ``conv`` with ``in_chans`` input channels; the added channels' weights are zero.

    conv.weight: ``(D, C_old, *k)`` → ``(D, in_chans, *k)`` with ``[:, :C_old]`` = the old weights.
    """
    old = conv.in_channels
    if in_chans < old:
        raise InputError(f"cannot inflate a patch embedding from {old} to {in_chans} input "
                         f"channels: the target must have at least as many channels")
    if conv.groups != 1:
        raise InputError(f"grouped patch embeddings (groups={conv.groups}) cannot be inflated")
    new = type(conv)(in_chans, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                     padding_mode=conv.padding_mode, device=conv.weight.device,
                     dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old].copy_(conv.weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def inflate_patch_embedding(model: nn.Module, in_chans: int) -> nn.Module:
    """Give ``model`` (a ViT whose ``patch_embed`` has ``input_conv``) ``in_chans`` inputs, in place.

    Returns ``model``. A model that already has ``in_chans`` channels is returned unchanged.
    """
    conv = model.patch_embed.input_conv
    if conv.in_channels == in_chans:
        return model
    model.patch_embed.replace_input_conv(inflate_conv_channels(conv, in_chans))
    if isinstance(getattr(model, "init_kwargs", None), dict):  # what an export writes to encoder.json
        model.init_kwargs["in_chans"] = int(in_chans)
    return model


def use_mask_encoding(model: nn.Module, mask_encoding: str, in_chans: int = 2) -> nn.Module:
    """Give ``model`` (a ``VisionTransformer3D``) the mask encoding ``mask_encoding`` for inputs of
    ``in_chans`` channels, in place: its first convolution is inflated to the encoded channels
    (new ones zero). Returns ``model``; one that already has that encoding is only inflated."""
    if mask_encoding == getattr(model, "mask_encoding", "binary"):
        return inflate_patch_embedding(model, encoded_channels(in_chans, mask_encoding))
    if mask_encoding != "regions" or model.patch_embed.input_conv.in_channels > in_chans:
        raise InputError(f"cannot change an encoder's mask encoding from "
                         f"{getattr(model, 'mask_encoding', 'binary')!r} to {mask_encoding!r}")
    inflate_patch_embedding(model, encoded_channels(in_chans, mask_encoding))
    model.mask_encoding = mask_encoding
    model.encode_input = MaskRegionEncoding()
    model.init_kwargs.update(mask_encoding=mask_encoding, in_chans=int(in_chans))
    return model
