"""Nobody's code runs from a file rn-classifier reads, and run folders carry no machine paths.

* The source reads checkpoints only through ``rn_classifier.checkpoints`` (``torch.load`` with
  ``weights_only=True``), never unpickles, never evaluates strings, reads YAML safely (scanned
  with ``ast``, so ``model.eval()`` is not mistaken for ``eval``).
* A planted pickle payload (its ``__reduce__`` writes a marker file) is refused with a clear
  message by every loader, and the marker never appears; the same for a YAML ``!!python`` tag.
* A pretraining run started with relative paths writes no absolute path into its folder,
  checkpoints included.
"""

from __future__ import annotations

import ast
import os
import pathlib
from pathlib import Path

import pytest
import torch

from rn_classifier.checkpoints import WeightsOnlyCheckpointIO, load_checkpoint
from rn_classifier.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("rn_classifier", "pretrain", "finetune", "benchmarks")


class WritesMarker:
    """A pickle payload: unpickling it calls ``Path.write_text(marker, ...)``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "payload ran"))


# -- the source ----------------------------------------------------------------------------------

def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def unsafe_calls(tree: ast.AST, filename: str) -> list[str]:
    """Calls that can run code hidden in data, with their line numbers."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name, where = _dotted(node.func), f"{filename}:{node.lineno}"
        if name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
            found.append(f"{where}: {name}()")
        elif name.split(".")[-1] in ("loads", "load", "Unpickler") and name.split(".")[0] in ("pickle", "cPickle",
                                                                                              "dill", "joblib", "cloudpickle"):
            found.append(f"{where}: {name}() unpickles")
        elif name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
            found.append(f"{where}: {name}()")
        elif name == "yaml.load":
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or not _dotted(loader).endswith(("SafeLoader", "CSafeLoader")):
                found.append(f"{where}: yaml.load() without SafeLoader")
        elif name in ("torch.load",) and not filename.endswith("rn_classifier/checkpoints.py"):
            found.append(f"{where}: torch.load() outside rn_classifier.checkpoints.load_checkpoint")
        elif name == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load() without weights_only=True")
        elif name.endswith("np.load") or name.endswith("numpy.load"):
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where}: np.load(allow_pickle=...)")
        elif name in ("os.system", "subprocess.getoutput") or (
                name.startswith("subprocess.") and isinstance(_keyword(node, "shell"), ast.Constant)
                and _keyword(node, "shell").value is True):
            found.append(f"{where}: {name}() through a shell")
    return found


def test_scanner_finds_each_unsafe_call():
    bad = ("import pickle, yaml, torch, numpy as np, subprocess\n"
           "pickle.loads(b'')\nyaml.load(s)\nyaml.load(s, Loader=yaml.Loader)\neval('1')\n"
           "torch.load(p)\nnp.load(p, allow_pickle=True)\nsubprocess.run('ls', shell=True)\n")
    good = ("import yaml, numpy as np\nyaml.load(s, Loader=yaml.SafeLoader)\nmodel.eval()\nnp.load(p)\n"
            "json.loads(s)\n")
    assert len(unsafe_calls(ast.parse(bad), "x.py")) == 7
    assert unsafe_calls(ast.parse(good), "x.py") == []


def test_source_has_no_unpickling_eval_or_unsafe_yaml():
    found, scanned = [], 0
    for folder in SOURCE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            found += unsafe_calls(ast.parse(path.read_text(), str(path)), str(path.relative_to(REPO)))
            scanned += 1
    assert scanned > 50
    assert not found, "unsafe calls in the package:\n" + "\n".join(found)


def test_every_torch_load_is_weights_only():
    source = (REPO / "rn_classifier" / "checkpoints.py").read_text()
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and _dotted(n.func) == "torch.load"]
    assert len(calls) == 1 and _keyword(calls[0], "weights_only").value is True


# -- planted payloads ---------------------------------------------------------------------------

def test_pickle_payload_is_refused_by_every_checkpoint_reader(tmp_path):
    marker = tmp_path / "marker"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "loops": WritesMarker(marker)}, ckpt)
    expected = r"evil\.ckpt was refused: it contains a pickled Python object \([\w.]+\), not only tensors"
    with pytest.raises(InputError, match=expected):
        load_checkpoint(ckpt)
    with pytest.raises(InputError, match=expected):
        WeightsOnlyCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()


def test_pickle_disguised_as_an_encoder_export_is_refused(tmp_path):
    """Exported encoders are safetensors: a pickle under that name is not a readable file."""
    from rn_classifier.models import create_model
    from rn_classifier.models.export import WEIGHTS_NAME, load_encoder, save_encoder

    model = create_model("vit3d_tiny_p8", img_size=16, in_chans=1)
    save_encoder(model, tmp_path / "enc", arch="vit3d_tiny_p8", crop_size=[16] * 3, spacing=[2.0] * 3,
                 normalisation={"method": "zscore_foreground"}, config={})
    marker = tmp_path / "marker"
    torch.save({"pos_embed": WritesMarker(marker)}, tmp_path / "enc" / WEIGHTS_NAME)
    with pytest.raises(InputError, match=r"encoder\.safetensors is not a readable safetensors file"):
        load_encoder(tmp_path / "enc")
    assert not marker.exists()


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:pathlib.Path.write_text [{marker}, 'payload ran']",
    "!!python/object/new:pathlib.PosixPath [{marker}]",
])
def test_yaml_python_tags_are_refused_and_never_run(tag, tmp_path):
    from rn_classifier.config import load_config
    from rn_classifier.data.molab import load_column_map
    from rn_classifier.pretrain.methods import pretrain_schema

    marker = tmp_path / "marker"
    config = tmp_path / "evil.yaml"
    config.write_text(f"name: {tag.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml: not valid YAML"):
        load_config(pretrain_schema(), config)
    with pytest.raises(ConfigError, match=r"evil\.yaml: not valid YAML"):
        load_column_map(config)
    assert not marker.exists()


def test_config_strings_are_kept_as_text(tmp_path):
    from rn_classifier.config import load_config
    from rn_classifier.pretrain.methods import pretrain_schema

    marker = tmp_path / "marker"
    code = f"__import__('pathlib').Path('{marker}').write_text('ran')"
    cfg = load_config(pretrain_schema(), None, [f"name={code}"])
    assert cfg.name == code and not marker.exists()


# -- no machine paths in run folders ------------------------------------------------------------

def test_pretraining_run_folder_holds_no_absolute_path(tmp_path, monkeypatch):
    """Relative paths in, relative paths out: config, provenance, summary, encoder.json, logs,
    and the checkpoints (whose ModelCheckpoint state Lightning keeps as absolute paths)."""
    from pretrain_fakes import make_pool_cache, tiny_config
    from rn_classifier.pretrain.run import run_pretraining

    monkeypatch.chdir(tmp_path)
    make_pool_cache(Path("pool"), n=4)
    cfg = tiny_config("pool", "dino")
    cfg.trainer.max_steps = 2
    run = run_pretraining(cfg, out="runs/dino", accelerator="cpu")
    leaks = [(str(p), needle) for p in Path(run).rglob("*") if p.is_file()
             for needle in {str(tmp_path), os.path.realpath(tmp_path), str(Path.home())}
             if needle.encode() in p.read_bytes()]
    assert not leaks, f"absolute paths written into the run folder: {leaks}"
    assert (Path(run) / "checkpoints" / "last.ckpt").is_file()
    # ... and Lightning gets its absolute paths back when it resumes
    state = next(v for k, v in WeightsOnlyCheckpointIO().load_checkpoint(run / "checkpoints" / "last.ckpt")
                 ["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["dirpath"] == os.path.realpath(tmp_path / "runs" / "dino" / "checkpoints")
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in state["best_k_models"])
