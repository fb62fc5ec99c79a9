"""Usage errors of every command: one ``error:`` line, the usage line, exit 2, no traceback.

typer >= 0.29 bundles its own click, so the command line cannot rely on ``click``'s exception
classes; these tests run each verb with a missing, a mistyped and a malformed argument through
``rn_classifier.cli.main`` (nothing runs: click refuses the arguments before the command).
"""

from __future__ import annotations

import typer.main
import pytest

from rn_classifier.cli import app, main

# verb -> (arguments with one required value missing, arguments with one value malformed)
CASES = {
    "import-molab": (["import-molab", "root", "--labels", "l.csv"],
                     ["import-molab", "root", "--labels", "l.csv", "--out", "m.csv", "--center"]),
    "import-dicom": (["import-dicom", "root", "--labels", "l.csv"],
                     ["import-dicom", "root", "--labels", "l.csv", "--out", "m.csv", "--roi-pattern"]),
    "build-pool": (["build-pool", "--config", "p.yaml"], ["build-pool", "--config", "p.yaml", "--out", "o",
                                                        "--set"]),
    "synth": (["synth"], ["synth", "--out", "d", "--seed", "abc"]),
    "check-data": (["check-data"], ["check-data", "m.csv", "--workers", "two"]),
    "preprocess": (["preprocess", "m.csv"], ["preprocess", "m.csv", "--out", "c", "--set", "spacing", "2"]),
    "split": (["split", "m.csv"], ["split", "m.csv", "--out", "s.csv", "--folds", "abc"]),
    "pretrain": (["pretrain", "--config"], ["pretrain", "--max-steps", "1.5"]),
    "audit-augment": (["audit-augment", "--config", "c.yaml", "--internal-cache", "c"],
                      ["audit-augment", "--config", "c.yaml", "--internal-cache", "c", "--split", "s",
                       "--pool-crop", "wide"]),
    "probe-encoder": (["probe-encoder", "--encoder", "e"], ["probe-encoder", "--encoder", "e",
                                                            "--internal-cache", "c", "--split", "s",
                                                            "--repeats", "x"]),
    "radiomics": (["radiomics", "--manifest", "m.csv"], ["radiomics", "--config", "c", "--manifest", "m",
                                                         "--out", "o", "--set", "bin_width"]),
    "study": (["study"], ["study", "--config", "demo", "--set", "split.n_folds", "3"]),
    "demo": (["demo", "--out"], ["demo", "--seed", "zero"]),
    "compare": (["compare", "p.csv"], ["compare", "p.csv", "--reference", "ssl_vit", "--n-boot", "many"]),
    "shift-check": (["shift-check", "p.csv"], ["shift-check", "p.csv", "--cache", "c", "--level", "high"]),
    "finetune": (["finetune"], ["finetune", "--config", "c", "--fold", "first"]),
    "predict": (["predict", "--model", "m", "--image", "i.nii", "--mask", "k.nii"],
                ["predict", "--model", "m", "--image", "i.nii", "--mask", "k.nii", "--out", "o", "extra"]),
    "report": (["report"], ["report", "run", "extra"]),
}


def _verbs() -> list[str]:
    return sorted(typer.main.get_command(app).commands)


def test_every_verb_has_its_usage_cases():
    assert sorted(CASES) == _verbs()


def _one_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{argv}: exit code {code}\n{err}"
    assert "Traceback" not in err, err
    assert err.count("error:") == 1, err
    assert err.lstrip().startswith("error:"), err
    return err


@pytest.mark.parametrize("verb", sorted(CASES))
def test_a_missing_argument_is_one_error_with_the_usage(verb, capsys):
    err = _one_error(capsys, CASES[verb][0])
    assert f"usage: rn-classifier {verb}" in err
    assert "missing" in err.lower() or "requires an argument" in err, err


@pytest.mark.parametrize("verb", sorted(CASES))
def test_a_mistyped_option_is_one_error_naming_it(verb, capsys):
    err = _one_error(capsys, [verb, "--no-such-optoin", "x"])
    assert "--no-such-optoin" in err and f"usage: rn-classifier {verb}" in err


@pytest.mark.parametrize("verb", sorted(CASES))
def test_a_malformed_argument_is_one_error(verb, capsys):
    argv = CASES[verb][1]
    err = _one_error(capsys, argv)
    assert any(token in err for token in argv[-2:]), f"the message names none of {argv[-2:]}:\n{err}"


def test_a_mistyped_verb_lists_the_verbs(capsys):
    err = _one_error(capsys, ["preprocesss", "m.csv"])
    assert "preprocesss" in err and "preprocess, split" in err and "usage: rn-classifier" in err


def test_no_verb_shows_the_help_and_one_error(capsys):
    code = main([])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1
    assert "check-data" in out and "predict" in out


def test_set_with_a_space_instead_of_equals_says_how_to_write_it(capsys):
    err = _one_error(capsys, ["preprocess", "m.csv", "--out", "c", "--set", "spacing", "2"])
    assert "--set spacing=VALUE" in err


def test_help_shows_upper_case_arguments_and_no_bool_metavar(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "rn-classifier report [OPTIONS] RUN_DIR" in out
    assert "{run_dir}" not in out and "<bool>" not in out


def test_the_command_table_imports_no_heavy_library():
    """Every command starts by registering all verbs; none may pay for another's libraries
    (``predict``'s start-up: benchmarks/predict_latency.py). Checked in a fresh process."""
    import subprocess
    import sys
    from pathlib import Path

    heavy = ("torch", "pandas", "matplotlib", "lightning", "monai", "sklearn", "timm", "SimpleITK")
    code = f"import sys, rn_classifier.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "[]", done.stdout
