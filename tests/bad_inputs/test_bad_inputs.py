"""Every kind of bad input in the corpus, through the real command line.

For each kind: ``rn_classifier.cli.main(argv)`` returns a non-zero exit code, prints one error
(no traceback) that matches what the kind expects (the file / case / key and what was
expected), names the bad case and not the good one beside it, and leaves no output behind:
neither the outputs under their final names nor a temporary file of ``rn_classifier.atomic``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bad_corpus import KINDS, REPO, Case
from rn_classifier.cli import main

MIN_KINDS = 25
HERE = (Path(__file__).parent, Path(__file__).parents[1])  # bad_corpus and the tests' builders


def test_corpus_has_enough_kinds_across_stages():
    assert len(KINDS) >= MIN_KINDS
    assert len({k.name for k in KINDS}) == len(KINDS)
    assert {k.stage for k in KINDS} >= {"preprocess", "check-data", "split", "finetune", "import-molab",
                                        "compare", "config", "output", "pretrain"}


def test_corpus_is_generated_not_committed():
    """Only code lives in tests/bad_inputs: every bad file is written by its kind at test time."""
    here = Path(__file__).parent
    assert all(p.suffix == ".py" for p in here.iterdir() if p.is_file())


def _run_in_child(case: Case, cwd: Path) -> tuple[int, str]:
    """The command in a child process, whose files may not grow beyond ``case.file_size_limit``
    (Python ignores SIGXFSZ, so a write past it fails with EFBIG part-way, like on a full disk)."""
    import resource

    def limit():
        if case.file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.file_size_limit, case.file_size_limit))

    code = "import sys; from rn_classifier.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *map(str, HERE)]), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *case.argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit)
    return proc.returncode, proc.stderr


def _leftovers(root: Path) -> list[Path]:
    """Temporary names of rn_classifier.atomic (``.<final name>.<random>``) left anywhere."""
    return [p for p in root.rglob(".*") if p.name not in (".", "..")]


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_bad_input_gives_one_clear_error_and_no_output(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    case = kind.build(tmp_path / "in")
    if case.setup is not None:
        case.setup(monkeypatch)
    if case.file_size_limit is not None or case.in_child:
        code, err = _run_in_child(case, tmp_path)
    else:
        code = main(case.argv)
        err = capsys.readouterr().err
    assert code == case.exit_code, f"exit code {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    if case.exit_code == 2:
        assert err.count("error:") == 1, err
    assert re.search(case.expect, err, flags=re.DOTALL), f"expected /{case.expect}/ in:\n{err}"
    for text in case.not_in_message:
        assert text not in err, f"the message names {text!r}, which is not the bad input:\n{err}"
    for out in case.outputs:
        assert not out.exists(), f"{out} was written although the command failed"
    assert not _leftovers(tmp_path), f"temporary files left behind: {_leftovers(tmp_path)}"
