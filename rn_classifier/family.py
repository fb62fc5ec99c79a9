"""The family of a fine-tuned model, decided once from its config: what it reads and how.

=================  =========================================================================
family             the model
=================  =========================================================================
``image``          the ViT classifier on the two-channel crop (T1CE + lesion mask)
``intermediate``   the ViT with a clinical branch, trained end to end
``late``           a logistic stacker on the image model's logit and the clinical vector
``clinical``       a logistic model on the clinical vector alone
=================  =========================================================================

Code that treats the families differently looks the family up in a table keyed by
:class:`ModelFamily`; nothing else compares ``model.kind`` / ``fusion.kind`` strings.
"""

from __future__ import annotations

from enum import Enum

from .errors import InputError


class ModelFamily(str, Enum):
    IMAGE = "image"
    INTERMEDIATE = "intermediate"
    LATE = "late"
    CLINICAL = "clinical"

    @property
    def uses_images(self) -> bool:
        return self is not ModelFamily.CLINICAL

    @property
    def uses_clinical(self) -> bool:
        return self is not ModelFamily.IMAGE

    @property
    def trains_a_network(self) -> bool:
        """Fine-tunes a ViT itself (late fusion stacks on another run's network)."""
        return self in (ModelFamily.IMAGE, ModelFamily.INTERMEDIATE)


# (model.kind, fusion.kind) → family; the config's checks keep other pairs out
_FAMILIES = {("vit", "none"): ModelFamily.IMAGE,
             ("vit", "intermediate"): ModelFamily.INTERMEDIATE,
             ("vit", "late"): ModelFamily.LATE,
             ("clinical", "none"): ModelFamily.CLINICAL}


def model_family(model_kind: str, fusion_kind: str = "none") -> ModelFamily:
    """The family of a model with ``model.kind`` and ``fusion.kind`` (see the module table)."""
    try:
        return _FAMILIES[(model_kind, fusion_kind)]
    except KeyError:
        raise InputError(f"no model family for model.kind={model_kind!r} with fusion.kind="
                         f"{fusion_kind!r}; known: "
                         + ", ".join(f"{k}+{f}" for k, f in _FAMILIES)) from None


def family_of(cfg) -> ModelFamily:
    """The family of a fine-tuning config (:class:`rn_classifier.finetune.config.FinetuneConfig`)."""
    return model_family(cfg.model.kind, cfg.fusion.kind)
