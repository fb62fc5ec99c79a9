"""The README's commands run from a working directory outside the checkout (issue 15, item 4/5):
shipped configs named by their checkout path or by name, outputs where the user says."""

from __future__ import annotations

import json

from rn_classifier.cli import main
from builders import write_tiny_molab


def test_readme_data_commands_work_from_another_working_directory(tmp_path, monkeypatch, capsys):
    tiny = write_tiny_molab(tmp_path / "molab")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # README "Run it on MOLAB", steps 2-5, with the synthetic column map of write_tiny_molab
    assert main(["import-molab", str(tiny["tree"]), "--labels", str(tiny["labels"]), "--clinical",
                 str(tiny["clinical"]), "--columns", "configs/data/synthetic_columns.yaml",
                 "--out", "cohort/internal.csv"]) == 0
    assert main(["check-data", "cohort/internal.csv", "--columns", "configs/data/synthetic_columns.yaml"]) == 0
    assert main(["preprocess", "cohort/internal.csv", "--config", "configs/preprocess/demo.yaml",
                 "--set", "spacing=[3.0,3.0,3.0]", "--set", "labelled_crop=[16,16,16]",
                 "--set", "lesion_view=[16,16,16]", "--out", "cache/internal"]) == 0
    assert json.loads((work / "cache" / "internal" / "meta.json").read_text())["lesion_view"] == [16, 16, 16]
    assert main(["split", "cohort/internal.csv", "--folds", "2", "--out", "runs/split.csv"]) == 0
    out = capsys.readouterr()
    assert "error" not in out.err, out.err
    assert (work / "runs" / "split.csv").is_file()
