"""Fine-tuning on the labelled cohort (MOLAB): image model, clinical model, fusion, patient-level CV.

Modules, one concern each:

``config``        the config schema (dataclasses) and its checks
``clinical``      clinical preprocessing (scikit-learn ColumnTransformer) and its JSON export
``clinical_model`` the clinical-only regularised logistic regression (also the late-fusion stacker)
``inflate``       patch-embedding channel inflation (1 → 2 input channels, new channel zero)
``datamodule``    Lightning DataModule over the crop cache with MONAI augmentation
``module``        LightningModule: image classifier, layer-wise lr decay, warm-up + cosine
``linear_probe``  linear probing then fine-tuning (LP-FT): the encoder frozen for the first epochs
``fusion``        late fusion (stacking on out-of-fold logits) and the intermediate fusion head
``cv``            the fold loop: out-of-fold and fold-ensemble predictions, resume per fold
``run``           ``run_finetune(cfg, out)``: the library entry point of ``rn-classifier finetune``
"""
