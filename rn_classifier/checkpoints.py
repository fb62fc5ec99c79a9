"""Loading training checkpoints without running pickled code.

A ``.ckpt`` is a pickle; unpickling an untrusted one can run arbitrary code. Every checkpoint
rn-classifier reads (resume, fine-tuning from a checkpoint, evaluation) goes through
``load_checkpoint``, which uses ``torch.load(..., weights_only=True)``: only tensors, numbers,
strings and plain containers are accepted, and anything else is refused *before* it runs.

``WeightsOnlyCheckpointIO`` plugs the same loader into Lightning (``Trainer(plugins=[...])``), so
``trainer.fit(ckpt_path=...)`` resumes through it as well. It also writes checkpoints atomically
beside their final name (:mod:`rn_classifier.atomic`), flushed to disk before the rename: a
process killed while writing never replaces the previous good ``last.ckpt``. (Lightning's own
writer stages the file in the system temporary folder; when that is another filesystem than the
run folder, as on most clusters, the final step is a copy onto ``last.ckpt``, not a rename.)
The paths Lightning's ``ModelCheckpoint`` keeps in a checkpoint are stored relative to the
checkpoint's folder and made absolute again on loading: a checkpoint passed to another group
carries no path of this machine, and a run folder that moved still resumes.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from .atomic import atomic_path
from .errors import InputError


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``torch.save`` / Lightning, refusing pickled objects.

    Returns the checkpoint dictionary. Raises ``InputError`` when the file is missing, is not a
    PyTorch checkpoint, or holds an object other than tensors / numbers / strings / containers
    (a pickle payload): such an object is never constructed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive since PyTorch 1.6
        raise InputError(f"checkpoint {path} is not a PyTorch checkpoint (expected the zip archive "
                         f"that torch.save / Lightning write)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise InputError(f"checkpoint {path} is not a readable PyTorch checkpoint: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
        raise InputError(
            f"checkpoint {path} was refused: it contains a pickled Python object "
            f"({found.group(1)}), not only tensors and plain values. rn-classifier loads "
            f"checkpoints with torch.load(weights_only=True) so a file cannot run code; re-save it "
            f"with plain state dicts, or use a checkpoint written by rn-classifier") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"checkpoint {path} is not a readable PyTorch checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict "
                         f"(a Lightning checkpoint or a state dict)")
    return checkpoint


_CALLBACK_PATH_KEYS = ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path")


def _map_callback_paths(checkpoint: dict[str, Any], fn) -> dict[str, Any]:
    """A copy of ``checkpoint`` whose ModelCheckpoint states have their paths mapped by ``fn``."""
    callbacks = checkpoint.get("callbacks")
    if not isinstance(callbacks, dict):
        return checkpoint
    mapped = {}
    for key, state in callbacks.items():
        if isinstance(state, dict) and "dirpath" in state and isinstance(state.get("best_k_models"), dict):
            state = dict(state)
            for name in _CALLBACK_PATH_KEYS:
                if isinstance(state.get(name), str) and state[name]:
                    state[name] = fn(state[name])
            state["best_k_models"] = {fn(p) if isinstance(p, str) else p: v
                                      for p, v in state["best_k_models"].items()}
        mapped[key] = state
    return {**checkpoint, "callbacks": mapped}


class WeightsOnlyCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: loading through :func:`load_checkpoint`, saving atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        checkpoint = _map_callback_paths(
            checkpoint, lambda p: os.path.relpath(p, folder) if os.path.isabs(p) else p)
        with atomic_path(path) as tmp:  # ".last.ckpt.<random>.tmp": no *.ckpt glob matches it
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        # Lightning's default map_location keeps storages where they are; "cpu" is equivalent for
        # a resume (the strategy moves the state to the module's device afterwards).
        checkpoint = load_checkpoint(path, map_location="cpu" if map_location is None or callable(map_location)
                                     else map_location)
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        return _map_callback_paths(
            checkpoint, lambda p: p if os.path.isabs(p) or "://" in p else os.path.realpath(os.path.join(folder, p)))
