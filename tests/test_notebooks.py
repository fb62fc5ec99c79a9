"""The notebooks in notebooks/ execute top to bottom (nbmake), on the tiny study settings, and are
kept in git without outputs.

Both notebooks share one run folder (01 runs the tiny study, 02 reads it), given to them through
``RN_QUICKSTART_RUN`` so the test leaves nothing in the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ORDER = ("01_quickstart.ipynb", "02_external_validation.ipynb")


@pytest.mark.parametrize("name", ORDER)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code"
    assert all(not c.outputs and c.execution_count is None for c in code), \
        f"{name} holds outputs; strip them (jupyter nbconvert --clear-output --inplace)"


def test_notebooks_run_with_nbmake(tmp_path):
    env = {**os.environ, "RN_QUICKSTART_RUN": str(tmp_path / "quickstart"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "--nbmake", "--nbmake-timeout=600",
           "-p", "no:cacheprovider", "-o", "addopts=", *[str(NOTEBOOKS / n) for n in ORDER]]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert (tmp_path / "quickstart" / "compare" / "stats.json").is_file()
