"""Where the model looked: attention maps of the ViT and their placement in the patient's image.

* :mod:`.attention`: attention weights recomputed from q and k in forward hooks on timm's
  ``Attention`` (only while maps are recorded; training keeps the fused kernel), last-layer
  class-token attention per head and averaged, attention rollout (Abnar & Zuidema 2020).
* :mod:`.geometry`: patch grid → crop voxels → the original image's voxel grid (world mm).
* :mod:`.focus`: share of the attention mass inside the lesion mask and a margin around it.
* :mod:`.figures`: PNG overlays (axial, coronal, sagittal through the lesion, mask contour).
"""
