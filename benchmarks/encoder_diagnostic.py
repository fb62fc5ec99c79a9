"""DIAGNOSTIC on SYNTHETIC data: can the image encoder learn the lesion at all, given labels?

Before asking whether self-supervised pretraining helps, ask whether the encoder can learn the
task when it is given the labels of many lesions. This trains each encoder from scratch,
supervised, on lesion-centred two-channel crops (T1CE + mask) of a large synthetic internal
cohort and compares it, on >= 300 held-out lesions of other patients, with an L2 logistic model
on the crop intensity statistics that the encoder probe uses (``pretrain.probe.crop_statistics``).
A learning curve over training-set sizes shows whether the gap closes with data.

The network, optimiser and augmentation are the study's fine-tuning pieces
(``models.classifiers.ImageClassifier`` with mask pooling, ``finetune.module.FinetuneModule``,
``finetune.datamodule.FinetuneDataModule``) with one fixed budget for every encoder (a MONAI 3D
CNN, ``models.cnn``, is one more arm: the yardstick a group would try first); the
logistic model's C is chosen by patient-grouped CV on the training lesions. Nothing here is a
study result: it uses the labels of a synthetic cohort that a real study never has in this
quantity, and it is labelled DIAGNOSTIC / SYNTHETIC in its output.

    python benchmarks/encoder_diagnostic.py --work runs/diagnostic            # makes the cohort
    python benchmarks/encoder_diagnostic.py --work W --sizes 100,250,all --steps 600 --record
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rn_classifier.data.cache import CropCache
from rn_classifier.data.preprocess import PreprocessConfig, preprocess
from rn_classifier.data.split import make_split
from rn_classifier.data.synth import make_synthetic_cohort
from rn_classifier.finetune.config import AugmentConfig, OptimConfig
from rn_classifier.finetune.datamodule import FinetuneDataModule, make_items
from rn_classifier.finetune.module import FinetuneModule, steps_per_epoch
from rn_classifier.models.classifiers import ImageClassifier
from rn_classifier.models import create_model
from rn_classifier.models.cnn import CNNClassifier, is_cnn
from rn_classifier.pretrain.probe import centre_crops, crop_statistics, embed
from rn_classifier.pretrain.run import fastest_precision
from rn_classifier.stats.delong import auc_delong, delong_paired
from torch import nn
from torch.nn import functional as F

STATISTICS = "crop statistics + logistic"
CROP = (40, 40, 40)
# Augmentations that keep the lesion's appearance (issue 14 lead 2: blur, zoom and strong gamma
# erase rim, feathering and cavities); flips and 90° turns only.
AUGMENT = AugmentConfig(affine_prob=0.0, intensity_prob=0.0)


def internal_cohort(work: Path, seed: int, preset: str, shift: int = 0,
                    pool_size: int = 0) -> tuple[CropCache, pd.DataFrame]:
    """The synthetic internal cohort's crop cache (made on first use) and its labelled index.

    ``shift`` > 0 caches crops ``2 * shift`` voxels larger, so training draws the model crop at a
    random offset of up to ``shift`` voxels (the evaluation and the statistics read the centre).
    ``pool_size`` > 0 makes the cohort with an unlabeled pool of that many sub-volumes (the
    internal centre is the same for any pool size: every patient draws from its own stream)."""
    manifest = work / "cohort" / "manifests" / "internal.csv"
    if not manifest.is_file():
        make_synthetic_cohort(work / "cohort", preset=preset, seed=seed, pool_size=pool_size, workers=2)
    pool_manifest = work / "cohort" / "manifests" / "unlabeled.csv"
    made = len(pd.read_csv(pool_manifest)) if pool_manifest.is_file() else 0
    if pool_size and made != pool_size:
        raise SystemExit(f"{work / 'cohort'} holds a pool of {made} sub-volumes, not {pool_size}: "
                         f"use another --work for another pool size")
    cfg = PreprocessConfig(spacing=[2.0, 2.0, 2.0], labelled_crop=[c + 2 * shift for c in CROP])
    folder = work / ("cache" if shift == 0 else f"cache_shift{shift}")
    preprocess(manifest, folder, cfg)
    cache = CropCache(folder)
    return cache, cache.index[cache.index["label"].notna()].reset_index(drop=True)


def pool_lesions(work: Path) -> tuple[CropCache, pd.DataFrame]:
    """The lesion sub-volumes of the cohort's unlabeled pool (no labels: a public collection
    with segmentations), cut as two-channel crops of the model's size centred on each lesion."""
    cfg = PreprocessConfig(spacing=[2.0, 2.0, 2.0], pool_crop=list(CROP))
    preprocess(work / "cohort" / "manifests" / "unlabeled.csv", work / "cache_pool", cfg)
    cache = CropCache(work / "cache_pool")
    lesions = cache.index[(cache.index["kind"] == "lesion") & (cache.index["lesion_voxels"] > 0)]
    return cache, lesions.reset_index(drop=True)


def held_out_split(index: pd.DataFrame, min_test: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and held-out lesions, by patient; at least ``min_test`` held out."""
    # make_split holds out 1 / k of the patients: the largest k that still leaves min_test lesions.
    k = max(2, min(5, int(len(index) / (1.05 * min_test))))
    split = make_split(index, test_fraction=1.0 / k, n_folds=2, seed=seed)
    test_ids = set(split.loc[split["part"] != "train", "case_id"].astype(str))
    is_test = index["case_id"].astype(str).isin(test_ids)
    return index[~is_test].reset_index(drop=True), index[is_test].reset_index(drop=True)


def nested_subsets(train: pd.DataFrame, sizes: list[int], seed: int) -> dict[int, pd.DataFrame]:
    """For each size, the first patients of one fixed random order holding about that many
    lesions, so every smaller set is inside every larger one."""
    rng = np.random.default_rng(seed)
    patients = rng.permutation(train["patient_id"].unique())
    order = pd.Series(np.arange(len(patients)), index=patients)
    ranked = train.assign(rank=train["patient_id"].map(order)).sort_values(["rank", "case_id"])
    out = {}
    for size in sizes:
        last = ranked.iloc[min(size, len(ranked)) - 1]["rank"]
        out[size] = ranked[ranked["rank"] <= last].drop(columns="rank").reset_index(drop=True)
    return out


def logistic_scores(train_table: np.ndarray, train: pd.DataFrame, test_table: np.ndarray) -> np.ndarray:
    """P(RN) on ``test_table`` of an L2 logistic model fitted on ``train_table``, its C chosen by
    patient-grouped 5-fold CV on the training lesions."""
    folds = list(GroupKFold(5).split(train, groups=train["patient_id"]))
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=np.logspace(-3, 2, 11), cv=folds, scoring="roc_auc", max_iter=5000,
        l1_ratios=(0.0,), use_legacy_attributes=False))
    model.fit(train_table, train["label"].astype(int))
    return model.predict_proba(test_table)[:, 1]


def statistics_scores(cache: CropCache, train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    return logistic_scores(statistics_table(cache, train), train, statistics_table(cache, test))


def frozen_embeddings(cache: CropCache, arch: str, encoder_state: dict, rows: pd.DataFrame) -> np.ndarray:
    """The mask-pooled embedding ``(N, D)`` of ``rows``' centre crops under the frozen encoder
    ``encoder_state`` (a linear probe's input: what pretraining put in the features)."""
    network = new_network(arch)
    network.encoder.load_state_dict(encoder_state)
    crops = centre_crops([np.asarray(cache[int(r)], np.float32) for r in rows["row"]], CROP)
    return embed(network.encoder, crops, batch_size=32)["mask"]


def statistics_table(cache: CropCache, rows: pd.DataFrame) -> np.ndarray:
    crops = centre_crops([np.asarray(cache[int(r)], np.float32) for r in rows["row"]], CROP)
    return crop_statistics(crops, rows["case_id"].to_numpy())


def standardised_statistics(cache: CropCache, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Case id → its crop statistics, each column standardised over ``rows`` (no labels used)."""
    table = statistics_table(cache, rows)
    return dict(zip(rows["case_id"].astype(str), StandardScaler().fit_transform(table)))


class StatisticsTargetModule(FinetuneModule):
    """Training with a label-free target: a linear head on the pooled embedding regresses the
    crop statistics of each case (:func:`standardised_statistics`), weight ``aux_weight``,
    beside the BCE of the label (weight ``label_weight``; 0 = pretraining on unlabelled lesions,
    a hand-crafted regression target as in MaskFeat, Wei et al. 2022, which regresses HOG).
    Flips and 90° turns leave the statistics unchanged, so each case's row serves every
    augmented view. The class head and prediction are unchanged."""

    def __init__(self, network: ImageClassifier, targets: dict[str, np.ndarray], aux_weight: float,
                 label_weight: float = 1.0, **kwargs):
        n_targets = len(next(iter(targets.values())))
        network.statistics_head = nn.Linear(network.encoder.embed_dim, n_targets)
        super().__init__(network, **kwargs)
        self.targets = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in targets.items()}
        self.aux_weight, self.label_weight = aux_weight, label_weight

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, pooled = self.network.embed(batch["input"])
        target = torch.stack([self.targets[c] for c in batch["case_id"]])
        aux = F.mse_loss(self.network.statistics_head(pooled).float(), target)
        self.log("train_statistics_mse", aux, on_step=False, on_epoch=True, batch_size=len(target))
        if self.label_weight == 0:
            return self.aux_weight * aux
        logits = self.network.head(self.network.dropout(pooled)).squeeze(-1)
        bce = F.binary_cross_entropy_with_logits(logits, batch["label"].float())
        self.log("train_bce", bce, on_step=False, on_epoch=True, batch_size=len(target))
        return self.label_weight * bce + self.aux_weight * aux


def new_network(arch: str, drop_path: float = 0.0, head_dropout: float = 0.0) -> nn.Module:
    if is_cnn(arch):
        return CNNClassifier(arch, in_chans=2, head_dropout=head_dropout)
    return ImageClassifier(create_model(arch, in_chans=2, img_size=list(CROP), drop_path_rate=drop_path),
                           head_dropout=head_dropout, pool="mask")


def new_network_seeded(arch: str, seed: int, **options) -> nn.Module:
    """The network of ``arch`` (``options``: :func:`new_network`'s) as every run with ``seed``
    draws it before training."""
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)
    return new_network(arch, **options)


def initial_encoder(arch: str, seed: int) -> dict:
    """The random encoder statistics pretraining with ``seed`` starts from: its random twin."""
    return new_network_seeded(arch, seed).encoder.state_dict()


def fit(module: FinetuneModule, data: FinetuneDataModule, steps: int):
    """``steps`` optimiser steps of ``module`` on ``data``'s training items; the trainer and the
    seconds they took."""
    import lightning.pytorch as pl

    # bf16 only where it is faster: on a CPU without AMX tiles (e.g. AMD EPYC) a bf16 matmul is
    # ~150x slower than fp32, and this step 16x slower (measured 2026-12-02).
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", precision=fastest_precision(on_gpu=False),
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(does not have many workers|limit_val_batches).*")
        trainer.fit(module, datamodule=data)
    return trainer, time.perf_counter() - start


def _schedule(n_cases: int, steps: int, lr: float, batch_size: int) -> dict:
    per_epoch = steps_per_epoch(n_cases, batch_size)
    epochs = math.ceil(steps / per_epoch)
    return {"optim": OptimConfig(lr=lr, layer_decay=1.0, warmup_epochs=0.05 * epochs),
            "epochs": epochs, "steps_per_epoch": per_epoch}


def statistics_pretrained_encoder(cache: CropCache, arch: str, lesions: pd.DataFrame, steps: int,
                                  lr: float, batch_size: int, seed: int) -> tuple[dict, float]:
    """The encoder's weights after ``steps`` of regressing the crop statistics of ``lesions``
    (their labels are not read), and the seconds it took."""
    if is_cnn(arch):
        raise SystemExit(f"--pretrain-statistics needs a ViT arm (mask-pooled embedding), not {arch}")
    network = new_network_seeded(arch, seed)
    module = StatisticsTargetModule(network, standardised_statistics(cache, lesions), aux_weight=1.0,
                                    label_weight=0.0, **_schedule(len(lesions), steps, lr, batch_size))
    items = make_items(cache, lesions["case_id"].tolist())   # label -1: none is read
    data = FinetuneDataModule(cache, items, items, CROP, AUGMENT, batch_size, predict_batch_size=32,
                              balance="none", seed=seed)   # no labels to balance: shuffled
    _, seconds = fit(module, data, steps)
    return {k: v.detach().clone() for k, v in network.encoder.state_dict().items()}, seconds


def encoder_scores(cache: CropCache, arch: str, train: pd.DataFrame, test: pd.DataFrame,
                   steps: int, lr: float, batch_size: int, seed: int,
                   drop_path: float = 0.0, head_dropout: float = 0.0, aux_weight: float = 0.0,
                   encoder_state: dict | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits on ``test`` and on ``train`` (centre crops, no augmentation) of ``arch`` trained
    for ``steps`` optimiser steps, from scratch or from ``encoder_state``, and the seconds it
    took. The training logits say whether a shortfall is underfitting (low on both) or
    overfitting (high on train only)."""
    network = new_network_seeded(arch, seed, drop_path=drop_path, head_dropout=head_dropout)
    if encoder_state is not None:
        network.encoder.load_state_dict(encoder_state)
    schedule = _schedule(len(train), steps, lr, batch_size)
    if aux_weight > 0:
        if is_cnn(arch):
            raise SystemExit(f"--aux-statistics needs a ViT arm (mask-pooled embedding), not {arch}")
        module = StatisticsTargetModule(network, standardised_statistics(cache, train), aux_weight, **schedule)
    else:
        module = FinetuneModule(network, **schedule)
    train_items = make_items(cache, train["case_id"].tolist(), train["label"].astype(int).tolist())
    test_items = make_items(cache, test["case_id"].tolist(), test["label"].astype(int).tolist())
    data = FinetuneDataModule(cache, train_items, test_items, CROP, AUGMENT, batch_size,
                              predict_batch_size=32, seed=seed)
    trainer, seconds = fit(module, data, steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        logits = [torch.cat(trainer.predict(module, dataloaders=data.eval_loader(cache, items))).float().numpy()
                  for items in (test_items, train_items)]
    return logits[0], logits[1], seconds


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.pretrain_pool and not args.pretrain_statistics:
        raise SystemExit("--pretrain-pool N sets what --pretrain-statistics STEPS pretrains on; give both")
    cache, index = internal_cohort(work, args.seed, args.preset, args.shift, args.pretrain_pool)
    train, test = held_out_split(index, args.min_test, args.seed)
    sizes = sorted({len(train) if s == "all" else min(int(s), len(train)) for s in args.sizes.split(",")})
    y_test = test["label"].astype(int).to_numpy()
    train_seed = args.seed if args.train_seed is None else args.train_seed
    # Label-free pretraining, once per arm, on every training lesion (the held-out ones are never
    # seen) or on the pool's lesions; each training-set size then fine-tunes from it.
    pretrained, pretrain_seconds, random_twins = {}, {}, {}
    if args.pretrain_statistics > 0:
        source_cache, source, what = cache, train, "training lesions"
        if args.pretrain_pool:
            source_cache, source = pool_lesions(work)
            what = f"pool lesions (of {args.pretrain_pool} sub-volumes)"
        for arch in args.encoders.split(","):
            random_twins[arch] = initial_encoder(arch, train_seed)
            pretrained[arch], pretrain_seconds[arch] = statistics_pretrained_encoder(
                source_cache, arch, source, args.pretrain_statistics, args.lr, args.batch_size, train_seed)
            print(f"{arch}: pretrained on the crop statistics of {len(source)} {what} "
                  f"(no labels), {pretrain_seconds[arch]:.0f} s", flush=True)
    # The frozen features of every training and held-out lesion, once per encoder state: pretrained,
    # and the random initial encoder it was pretrained from (its twin); each size takes its rows.
    frozen = {(arch, name): (frozen_embeddings(cache, arch, state, train), frozen_embeddings(cache, arch, state, test))
              for arch in pretrained
              for name, state in (("frozen", pretrained[arch]), ("random twin frozen", random_twins[arch]))}
    train_position = pd.Series(np.arange(len(train)), index=train["case_id"])
    rows, scores = [], {}   # scores: held-out logits per "size arm", for paired tests between runs
    for size, subset in nested_subsets(train, sizes, args.seed).items():
        stats = statistics_scores(cache, subset, test)
        row = {"train_lesions": len(subset), "train_patients": subset["patient_id"].nunique(),
               STATISTICS: auc_delong(y_test, stats).auc}
        for arch in args.encoders.split(","):
            if arch in pretrained:   # the frozen features under the statistics' logistic model
                in_subset = train_position[subset["case_id"]].to_numpy()
                probes = {name: logistic_scores(frozen[arch, name][0][in_subset], subset, frozen[arch, name][1])
                          for name in ("frozen", "random twin frozen")}
                for name, probe in probes.items():
                    row[f"{arch} {name} + logistic"] = auc_delong(y_test, probe).auc
                    scores[f"{len(subset)} {arch} {name} + logistic"] = np.round(probe, 5).tolist()
                paired = delong_paired(y_test, probes["frozen"], stats)
                row[f"{arch} frozen − statistics (DeLong p)"] = f"{paired.difference:+.3f} ({paired.p_value:.3g})"
            logits, train_logits, seconds = encoder_scores(cache, arch, subset, test, args.steps,
                                                           args.lr, args.batch_size, train_seed,
                                                           args.drop_path, args.head_dropout,
                                                           args.aux_statistics, pretrained.get(arch))
            paired = delong_paired(y_test, logits, stats)
            scores[f"{len(subset)} {arch}"] = np.round(logits, 5).tolist()
            row[arch] = auc_delong(y_test, logits).auc
            row[f"{arch} train"] = auc_delong(subset["label"].astype(int).to_numpy(), train_logits).auc
            row[f"{arch} − statistics (DeLong p)"] = f"{paired.difference:+.3f} ({paired.p_value:.3g})"
            row[f"{arch} s"] = round(seconds, 1)
            print(f"{len(subset)} training lesions, {arch}: held-out AUC {row[arch]:.3f} "
                  f"(statistics {row[STATISTICS]:.3f}), {seconds:.0f} s", flush=True)
        rows.append(row)
    return {"title": "DIAGNOSTIC, SYNTHETIC cohort: supervised encoders vs crop statistics",
            "cohort": f"preset {args.preset}, seed {args.seed}", "held_out_lesions": len(test),
            "held_out_patients": int(test["patient_id"].nunique()),
            "held_out_rn": int(y_test.sum()), "steps": args.steps, "lr": args.lr,
            "batch_size": args.batch_size, "shift": args.shift, "threads": args.threads,
            "train_seed": train_seed, "drop_path": args.drop_path, "head_dropout": args.head_dropout,
            "aux_statistics": args.aux_statistics, "pretrain_statistics_steps": args.pretrain_statistics,
            "pretrain_on": (f"pool lesions of {args.pretrain_pool} sub-volumes" if args.pretrain_pool
                            else "training lesions") if args.pretrain_statistics else None,
            "pretrain_seconds": {k: round(v, 1) for k, v in pretrain_seconds.items()},
            "precision": fastest_precision(on_gpu=False),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "table": rows,
            "held_out": {"case_id": test["case_id"].astype(str).tolist(), "label": y_test.tolist(),
                         "scores": scores}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for the cohort, its cache and results")
    parser.add_argument("--preset", default="large", help="synthetic cohort preset (large: 900 lesions)")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--sizes", default="100,250,all", help="training-set sizes (lesions)")
    parser.add_argument("--encoders", default="vit3d_tiny_conv_p8,vit3d_tiny_conv_regions_p8",
                        help="ViT variants (models.registry) and MONAI CNNs (models.cnn), comma-separated")
    parser.add_argument("--min-test", type=int, default=300, help="held-out lesions at least")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shift", type=int, default=0,
                        help="random training offset of the crop, in voxels (0: always centred)")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of the networks' initialisation and batches (default --seed): "
                             "repeats on the same cohort and held-out set")
    parser.add_argument("--drop-path", type=float, default=0.0, help="ViT stochastic depth")
    parser.add_argument("--head-dropout", type=float, default=0.0)
    parser.add_argument("--aux-statistics", type=float, default=0.0,
                        help="weight of a second, label-free target on the ViT's pooled embedding: "
                             "regress the crop statistics (0: off)")
    parser.add_argument("--pretrain-statistics", type=int, default=0, metavar="STEPS",
                        help="first pretrain each ViT arm for STEPS steps to regress the crop "
                             "statistics of all training lesions, labels unread (0: from scratch)")
    parser.add_argument("--pretrain-pool", type=int, default=0, metavar="N",
                        help="make the cohort with an unlabeled pool of N sub-volumes and pretrain "
                             "on its lesions instead of the training lesions (0: training lesions)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    result = run(args)
    table = pd.DataFrame(result["table"]).to_string(index=False)
    header = {k: v for k, v in result.items() if k not in ("table", "held_out")}
    print(json.dumps(header, indent=1))
    print(table)
    (Path(args.work) / "diagnostic.json").write_text(json.dumps(result, indent=1, default=str))
    if args.record:
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} — encoder_diagnostic.py "
                    f"(DIAGNOSTIC, SYNTHETIC)\n\n- {json.dumps(header)}\n\n```\n{table}\n```\n")
    return result


if __name__ == "__main__":
    main()
