"""What pretraining reads: sub-volumes from the preprocess caches, as a LightningDataModule.

Which crops are used (:func:`select_subvolumes`):

* every crop of the unlabeled pool cache (``data.pool_cache``);
* with ``data.include_internal_train``, the crops of the internal cohort's TRAINING cases
  (``part == "train"`` in ``data.split``), their T1CE channel only and without their labels;
* for a method that reads the lesion mask (``SSLMethod.reads_mask``: views ``(T1CE, mask)``), only
  sub-volumes centred on a lesion: the pool's ``kind == "lesion"`` rows and every internal training
  lesion, each with lesion voxels in its crop;
* never a case of the internal test part or of a centre in ``data.exclude_centers`` (the external
  cohort): such rows are dropped from the internal cache *and* from the pool (should the pool
  contain them by mistake, a patient of the internal test must not be seen during pretraining).

Order and randomness (:class:`EpochSampler`): each epoch is a permutation of all selected crops
drawn from ``(seed, epoch)``; rank ``r`` of ``W`` takes every ``W``-th sample of it (disjoint
shares) and the tail that does not fill a batch on every rank is dropped, so every rank takes the
same number of steps. A sample's augmentation seed is ``(seed, epoch, sample)``. The sampler
restarts mid-epoch from the trainer's restored ``global_step``, so a resumed run trains on exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.cache import CropCache
from ..data.split import load_split
from ..errors import InputError
from .config import DataConfig

T1CE = "t1ce"
MASK = "mask"


@dataclass
class SubVolumeSource:
    """Rows of one cache used for pretraining."""

    name: str               # "pool" | "internal_train"
    cache: CropCache
    rows: np.ndarray        # cache row numbers


def _open_cache(path: str, what: str, spacing, reads_mask: bool = False) -> CropCache:
    cache = CropCache(path)
    cache.check_spacing(spacing, what=f"the pretraining config (data.spacing) for {what} {path}")
    if not cache.channels or cache.channels[0] != T1CE:
        raise InputError(f"{path}: the first channel of the cache must be {T1CE!r} for pretraining, "
                         f"got channels {cache.channels}")
    if reads_mask and list(cache.channels[:2]) != [T1CE, MASK]:
        raise InputError(f"{path}: this method reads the lesion mask, so {what} must hold channels "
                         f"{[T1CE, MASK]}, got {cache.channels}; preprocess a pool manifest with sub-volume "
                         "centres and masks (`rn-classifier build-pool`, or the synthetic pool)")
    return cache


def lesion_rows(index: pd.DataFrame) -> np.ndarray:
    """Which rows of a cache index are crops centred on a lesion: a pool's ``kind == "lesion"``
    sub-volumes (every row of a labelled cohort's cache), with lesion voxels inside the crop."""
    ok = np.ones(len(index), bool)
    if "kind" in index:
        ok &= (index["kind"].astype(str) == "lesion").to_numpy()
    if "lesion_voxels" in index:
        ok &= (pd.to_numeric(index["lesion_voxels"], errors="coerce").fillna(0) > 0).to_numpy()
    return ok


def _read_split(cfg: DataConfig) -> pd.DataFrame | None:
    return load_split(cfg.split) if cfg.split else None


def select_subvolumes(cfg: DataConfig, reads_mask: bool = False) -> tuple[list[SubVolumeSource], pd.DataFrame]:
    """The crops pretraining may see, and a table of them (``source, row, case_id, patient_id,
    center``) for the run folder; ``reads_mask``: lesion-centred crops with a mask channel only.
    Raises ``InputError`` when nothing is left."""
    split = _read_split(cfg)
    held_out_cases: set[str] = set()
    held_out_patients: set[str] = set()
    train_cases: set[str] = set()
    if split is not None:
        test = split[split["part"] == "internal_test"]
        held_out_cases, held_out_patients = set(test["case_id"]), set(test["patient_id"])
        train_cases = set(split.loc[split["part"] == "train", "case_id"])
    excluded_centers = {str(c) for c in cfg.exclude_centers}

    def allowed(index: pd.DataFrame) -> np.ndarray:
        ok = ~index["center"].astype(str).isin(excluded_centers)
        ok &= ~index["case_id"].astype(str).isin(held_out_cases)
        ok &= ~index["patient_id"].astype(str).isin(held_out_patients)
        return ok.to_numpy() & (lesion_rows(index) if reads_mask else True)

    sources: list[SubVolumeSource] = []
    pool = _open_cache(cfg.pool_cache, "the pool cache", cfg.spacing, reads_mask)
    sources.append(SubVolumeSource("pool", pool, pool.index["row"].to_numpy()[allowed(pool.index)]))
    if cfg.include_internal_train:
        if not cfg.internal_cache or split is None:
            raise InputError("data.include_internal_train needs data.internal_cache and data.split")
        internal = _open_cache(cfg.internal_cache, "the internal cache", cfg.spacing, reads_mask)
        is_train = internal.index["case_id"].astype(str).isin(train_cases).to_numpy()
        sources.append(SubVolumeSource("internal_train", internal,
                                       internal.index["row"].to_numpy()[is_train & allowed(internal.index)]))
    tables = []
    for s in sources:
        t = s.cache.index.set_index("row").loc[s.rows, ["case_id", "patient_id", "center"]].reset_index()
        t.insert(0, "source", s.name)
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    if table.empty:
        raise InputError(
            f"no sub-volumes to pretrain on: the pool cache {cfg.pool_cache} holds {len(pool)} crop(s)"
            + (f" and the internal cache {cfg.internal_cache} is used" if cfg.include_internal_train else "")
            + f", none left after excluding centres {sorted(excluded_centers)} and internal-test cases"
            + (" and keeping lesion-centred sub-volumes (kind 'lesion', lesion voxels in the crop)" if reads_mask else "")
            + "; run `rn-classifier preprocess` on the unlabeled manifest first")
    return sources, table


@dataclass
class LabelledCases:
    """Labelled TRAINING cases for the label-efficiency monitor (never used for training)."""

    cache: CropCache
    rows: np.ndarray
    labels: np.ndarray       # 1 = radiation necrosis, 0 = progression
    patients: np.ndarray
    folds: np.ndarray        # the split's CV folds (patient-grouped)


def labelled_training_cases(cfg: DataConfig) -> LabelledCases:
    """Internal-cohort cases of the split's training part that have a label."""
    if not cfg.internal_cache or not cfg.split:
        raise InputError("the label-efficiency monitor needs data.internal_cache and data.split")
    cache = _open_cache(cfg.internal_cache, "the internal cache", cfg.spacing)
    split = _read_split(cfg)
    train = split[split["part"] == "train"].set_index("case_id")
    index = cache.index[cache.index["case_id"].astype(str).isin(train.index)
                        & cache.index["label"].notna()
                        & ~cache.index["center"].astype(str).isin({str(c) for c in cfg.exclude_centers})]
    return LabelledCases(cache=cache, rows=index["row"].to_numpy(),
                         labels=index["label"].astype(int).to_numpy(),
                         patients=index["patient_id"].astype(str).to_numpy(),
                         folds=train.loc[index["case_id"].astype(str), "fold"].astype(int).to_numpy())


class SubVolumeDataset(Dataset):
    """``dataset[(epoch, i)]`` → ``{"views": [view (C, S, S, S), ...], "sample": i}``.

    ``transform(volume (C, X, Y, Z), seed) -> list of views`` (``augment.MultiCropTransform``,
    ``augment.MAETransform`` or ``augment.LesionViewTransform``); the seed is ``(seed, epoch, i)``;
    ``channels``: the cache channels read (1: T1CE; 2: T1CE and the lesion mask).
    """

    def __init__(self, sources: list[SubVolumeSource], transform: Callable, seed: int = 0, channels: int = 1):
        self.sources = sources
        self.channels = int(channels)
        self.items = np.concatenate([np.stack([np.full(len(s.rows), k), s.rows], axis=1)
                                     for k, s in enumerate(sources)]).astype(np.int64)
        self.transform = transform
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        source, row = self.items[i]
        volume = self.sources[source].cache[int(row)][:self.channels]
        return {"views": self.transform(volume, (self.seed, int(epoch), int(i))), "sample": int(i)}


class EpochSampler(Sampler):
    """Yields ``(epoch, sample)`` keys: this rank's disjoint share of the epoch's permutation.

    ``batches_per_epoch = n // (batch_size · world_size)``; ``set_epoch`` is called by Lightning;
    ``start_step`` (the restored ``global_step``) makes the epoch it falls in start at that batch.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_step: int = 0):
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.start_step, self.epoch = int(seed), int(start_step), 0
        self.batches_per_epoch = n // (batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise InputError(f"{n} sub-volume(s) do not fill one batch of {batch_size} on each of "
                             f"{world_size} device(s); lower data.batch_size or add sub-volumes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _skip(self) -> int:
        return int(min(max(self.start_step - self.epoch * self.batches_per_epoch, 0), self.batches_per_epoch))

    def __len__(self) -> int:
        # The whole epoch, also when resuming inside it: Lightning counts the batches it restored.
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[: self.batches_per_epoch * self.batch_size * self.world_size]
        share = order[self.rank::self.world_size].tolist()
        for i in share[self._skip() * self.batch_size:]:
            yield self.epoch, i


def collate_views(batch: list[dict]) -> dict:
    """Stack each view position: ``{"views": [(B, 1, S, S, S), ...], "sample": (B,)}``."""
    n_views = len(batch[0]["views"])
    return {"views": [torch.stack([b["views"][v] for b in batch]) for v in range(n_views)],
            "sample": torch.tensor([b["sample"] for b in batch])}


class PretrainDataModule(pl.LightningDataModule):
    """Training batches of augmented views over the selected sub-volumes (no validation set:
    self-supervised pretraining is watched by the label-efficiency monitor instead)."""

    def __init__(self, cfg: DataConfig, transform: Callable, seed: int = 0, reads_mask: bool = False):
        super().__init__()
        self.cfg, self.transform, self.seed = cfg, transform, seed
        self.sources, self.table = select_subvolumes(cfg, reads_mask)
        self.dataset = SubVolumeDataset(self.sources, transform, seed, channels=2 if reads_mask else 1)

    def steps_per_epoch(self, world_size: int) -> int:
        """Optimizer steps per epoch on ``world_size`` devices (the same on every rank)."""
        return len(self.dataset) // (self.cfg.batch_size * world_size)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        if trainer is None:
            return self.loader()
        return self.loader(rank=trainer.global_rank, world_size=trainer.world_size,
                           start_step=trainer.global_step,
                           pin_memory=self.cfg.pin_memory and trainer.strategy.root_device.type == "cuda")

    def loader(self, rank: int = 0, world_size: int = 1, start_step: int = 0, pin_memory: bool = False,
               num_workers: int | None = None) -> DataLoader:
        """The training loader of one rank (also used by benchmarks/pretrain_throughput.py)."""
        sampler = EpochSampler(len(self.dataset), self.cfg.batch_size, rank, world_size, self.seed, start_step)
        workers = self.cfg.num_workers if num_workers is None else num_workers
        return ResumableLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=sampler,
                               num_workers=workers, collate_fn=collate_views, drop_last=True,
                               pin_memory=pin_memory, persistent_workers=workers > 0,
                               prefetch_factor=4 if workers else None)


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler`, whose position Lightning saves and restores.

    The position itself needs no state: the sampler derives it from the restored ``global_step``.
    What the checkpoint keeps is the data layout (batches per epoch, seed); resuming with another
    number of devices or batch size would silently train on other batches, so it is refused.
    """

    def state_dict(self) -> dict:
        s = self.sampler
        return {"batches_per_epoch": s.batches_per_epoch, "seed": s.seed, "world_size": s.world_size,
                "batch_size": s.batch_size, "n": s.n}

    def load_state_dict(self, state: dict) -> None:
        now = self.state_dict()
        changed = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old} in the checkpoint, {new} now" for k, (old, new) in changed.items())
            raise InputError(f"cannot resume: the data layout changed ({detail}); resume with the same "
                             "number of devices, data.batch_size and caches as the interrupted run")


def planned_steps(n_subvolumes: int, batch_size: int, world_size: int, epochs: int,
                  max_steps: int | None) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)`` of a run: ``max_steps`` when given, else ``epochs`` epochs."""
    per_epoch = n_subvolumes // (batch_size * world_size)
    if per_epoch < 1:
        raise InputError(f"{n_subvolumes} sub-volume(s) do not fill one batch of {batch_size} on each "
                         f"of {world_size} device(s); lower data.batch_size or add sub-volumes")
    total = per_epoch * epochs if max_steps is None else max_steps
    return per_epoch, int(total)


def epochs_for(total_steps: int, steps_per_epoch: int) -> int:
    return int(math.ceil(total_steps / steps_per_epoch))
