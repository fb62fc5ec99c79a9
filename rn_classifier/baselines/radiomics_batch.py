"""Radiomics features of a whole cohort: one process per core, each case cached once.

Each case's features are stored in ``<cache_dir>/<key>.json``, where the key hashes the bytes
of the image and mask files, the lesion's mask values, the pyradiomics parameters and the
pyradiomics version. A rerun (another model config, a new external cohort, a crash half-way)
therefore extracts nothing twice, and a changed file or setting can never be served stale
features. Only the parent process reads and writes the cache.

Worker processes are started with ``spawn`` (no inherited thread or lock state) and limited to
``threads_per_worker`` SimpleITK and BLAS/OpenMP threads each (``threadpoolctl``), so N processes
on N cores do not oversubscribe them; one process (``workers: 1``) is limited the same way.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..errors import InputError
from .radiomics import build_extractor, extract_case

if TYPE_CHECKING:  # pandas is imported where tables are built: worker processes start faster
    import pandas as pd

CACHE_VERSION = 1

# (case_id, image_path, mask_path, mask_labels): what a worker needs for one case
Task = tuple[str, str, str, tuple[int, ...]]


@dataclass
class CohortFeatures:
    """Result of :func:`extract_cohort`.

    features: (n_cases_ok, n_features), index ``case_id``, columns pyradiomics' feature names.
    failed: columns ``case_id, reason``, one row per case whose input was rejected.
    """

    features: pd.DataFrame
    failed: pd.DataFrame
    n_cached: int
    n_extracted: int
    seconds: float


def file_digest(path: str | os.PathLike, case_id: str, what: str) -> str:
    """SHA-256 of a file's bytes (streamed); of a folder (a DICOM series), of its files in name order."""
    if os.path.isdir(path):
        files = sorted(p for p in Path(path).iterdir() if p.is_file())
    elif os.path.isfile(path):
        files = [Path(path)]
    else:
        raise InputError(f"case {case_id}: {what} file {path} does not exist")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class FeatureCache:
    """Per-case feature files keyed by image, mask, lesion labels and parameters."""

    def __init__(self, folder: str | os.PathLike, params: Mapping[str, Any]):
        from radiomics import __version__ as pyradiomics_version

        self.folder = Path(folder)
        self._params_text = json.dumps({"params": params, "pyradiomics": pyradiomics_version,
                                        "cache_version": CACHE_VERSION}, sort_keys=True, default=str)

    def key(self, case_id: str, image_path: str, mask_path: str, mask_labels: Sequence[int | str]) -> str:
        text = json.dumps({"image": file_digest(image_path, case_id, "image"),
                           "mask": file_digest(mask_path, case_id, "mask"),
                           "mask_labels": sorted(mask_labels, key=lambda v: (isinstance(v, str), v)),
                           "setup": self._params_text}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> dict[str, float] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())["features"]
        except (json.JSONDecodeError, KeyError, OSError):
            return None  # unreadable entry: extract again and overwrite it

    def store(self, key: str, task: Task, features: Mapping[str, float]) -> None:
        case_id, image_path, mask_path, mask_labels = task
        # file names only: the key already pins the files' contents, and a run folder that is
        # shared must not carry this machine's folders
        atomic.write_json(self._path(key), {"case_id": case_id, "image": os.path.basename(image_path),
                                            "mask": os.path.basename(mask_path),
                                            "mask_labels": list(mask_labels), "features": dict(features)})


def _extract_task(extractor, task: Task) -> tuple[str, dict[str, float] | None, str | None]:
    """(case_id, features, None) or (case_id, None, reason) for a rejected input."""
    case_id, image_path, mask_path, mask_labels = task
    try:
        return case_id, extract_case(image_path, mask_path, mask_labels=mask_labels or None,
                                     case_id=case_id, extractor=extractor), None
    except InputError as exc:
        return case_id, None, str(exc)


_WORKER_EXTRACTOR = None  # one extractor per worker process, built by _init_worker


def _init_worker(params: Mapping[str, Any], threads: int) -> None:
    global _WORKER_EXTRACTOR
    _WORKER_EXTRACTOR = build_extractor(params)  # loads pyradiomics, SimpleITK, PyWavelets
    _limit_threads(threads)  # for the life of the worker


def _worker_task(task: Task):
    return _extract_task(_WORKER_EXTRACTOR, task)


def _limit_threads(threads: int) -> Callable[[], None]:
    """Limit SimpleITK's pool and the loaded BLAS/OpenMP pools of this process; returns the undo.

    numpy's BLAS matters: pyradiomics' GLCM MCC feature takes eigenvalues of a matrix per angle,
    and a multi-threaded BLAS next to other busy processes spends its time waiting for cores.
    """
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    before = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
    pools = threadpool_limits(limits=threads)

    def restore() -> None:
        pools.restore_original_limits()
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(before)

    return restore


def _run(tasks: list[Task], params: Mapping[str, Any], workers: int, threads: int) -> Iterator:
    """Yield ``_extract_task`` results as cases finish (in this process when workers == 1)."""
    if workers == 1:
        extractor = build_extractor(params)
        restore = _limit_threads(threads)
        try:
            for task in tasks:
                yield _extract_task(extractor, task)
        finally:
            restore()
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(dict(params), threads))
    try:
        futures = [pool.submit(_worker_task, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def resolve_workers(workers: int) -> int:
    """``0`` → the number of CPU cores this process may use."""
    if workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def extract_cohort(cases: pd.DataFrame, params: Mapping[str, Any], cache_dir: str | os.PathLike,
                   workers: int = 0, threads_per_worker: int = 1,
                   progress: bool = True) -> CohortFeatures:
    """Radiomics features of every case of a manifest table.

    cases: rows of :func:`rn_classifier.data.manifest.load_manifest` (``case_id``,
        ``image_path``, ``mask_path``, ``mask_labels``). An empty ``mask_labels`` hands the mask
        over as stored (pyradiomics' ``label`` setting picks the region).
    params: pyradiomics parameter block (``setting``, ``imageType``, ``featureClass``).
    workers: processes (0 = one per core); 1 runs in this process.
    Cases whose input is rejected are returned in ``failed`` with the reason; the caller decides
    whether that stops the run.
    """
    import pandas as pd

    start = time.perf_counter()
    cache = FeatureCache(cache_dir, params)
    found: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    todo: dict[str, tuple[str, Task]] = {}
    for row in cases.itertuples(index=False):
        task: Task = (str(row.case_id), str(row.image_path), str(row.mask_path),
                      tuple(row.mask_labels))
        try:
            key = cache.key(*task)
        except InputError as exc:
            failed[task[0]] = str(exc)
            continue
        hit = cache.load(key)
        if hit is not None:
            found[task[0]] = hit
        else:
            todo[task[0]] = (key, task)
    n_cached = len(found)

    from tqdm.auto import tqdm

    n_workers = min(resolve_workers(workers), max(len(todo), 1))
    with tqdm(total=len(todo), desc="radiomics", unit="case", disable=not progress or not todo) as bar:
        for case_id, features, error in _run([t for _, t in todo.values()], params, n_workers,
                                             threads_per_worker):
            if error is not None:
                failed[case_id] = error
            else:
                key, task = todo[case_id]
                cache.store(key, task, features)
                found[case_id] = features
            bar.update(1)

    order = [str(c) for c in cases["case_id"] if str(c) in found]
    table = pd.DataFrame.from_dict({c: found[c] for c in order}, orient="index")
    table.index.name = "case_id"
    failed_table = pd.DataFrame({"case_id": [str(c) for c in cases["case_id"] if str(c) in failed],
                                 "reason": [failed[str(c)] for c in cases["case_id"] if str(c) in failed]})
    return CohortFeatures(features=table, failed=failed_table, n_cached=n_cached,
                          n_extracted=len(found) - n_cached, seconds=time.perf_counter() - start)
