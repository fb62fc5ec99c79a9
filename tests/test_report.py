"""``rn-classifier report`` on a trained tiny SYNTHETIC study (session fixture ``tiny_study``).

The HTML parses, every image is a non-empty inlined PNG, nothing is loaded from the network, every
number of the tables equals stats.json (the statistics) or report.json (what the report adds),
the seven sections are there, synthetic data is labelled, and --pseudonymize leaves no case id,
patient id, salt or machine path behind.
"""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rn_classifier.cli import main
from rn_classifier.errors import InputError
from rn_classifier.report import build_report
from rn_classifier.report.pseudonym import Pseudonymizer, scrub_paths

SECTIONS = ["provenance", "auc", "curves", "threshold", "uncertainty", "attention", "tripod"]
STATS_TABLES = ("auc-table", "auc-bootstrap-table", "drop-table", "threshold-table", "calibration-table",
                "operating-table", "uncertainty-table", "contour-table")
REPORT_TABLES = ("focus-table", "case-table", "referral-table", "cohort-table", "shift-table")
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+")


class ReportParser(HTMLParser):
    """Collects section ids, images and table rows (cell text + attributes) of the report."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections, self.images, self.links, self.tables, self.external = [], [], [], [], []
        self._table = self._row = self._cell = None
        self.open_tags = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in ("img", "br", "meta", "input"):
            self.open_tags.append(tag)
        if tag == "h2":
            self.sections.append(attrs.get("id"))
        elif tag == "img":
            self.images.append(attrs)
        elif tag in ("a", "link", "script"):
            self.links.append(attrs)
            if tag in ("link", "script") or not attrs.get("href", "#").startswith("#"):
                self.external.append(attrs)
        elif tag == "table":
            self._table = {"id": attrs.get("id"), "class": attrs.get("class", ""),
                           "cohort": attrs.get("data-cohort"), "rows": []}
            self.tables.append(self._table)
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table["rows"].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"attrs": attrs, "text": ""}
            self._row.append(self._cell)

    def handle_endtag(self, tag):
        if self.open_tags and self.open_tags[-1] == tag:
            self.open_tags.pop()
        else:
            raise AssertionError(f"unbalanced </{tag}>, open: {self.open_tags[-5:]}")
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _numbers(value, out: set[str]) -> set[str]:
    """Every float in a JSON value, formatted as the report formats them (3 and 2 decimals, %)."""
    if isinstance(value, dict):
        for v in value.values():
            _numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            _numbers(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for digits in (3, 2, 1):
            out.add(f"{value:.{digits}f}")
        out.add(f"{100 * value:.1f}")
    return out


@pytest.fixture(scope="module")
def report(tiny_study, tmp_path_factory):
    out = build_report(tiny_study, out=tmp_path_factory.mktemp("report") / "report.html")
    html = out.read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(html)
    parser.close()
    return {"html": html, "parser": parser,
            "json": json.loads(out.with_name("report.json").read_text(encoding="utf-8")),
            "stats": json.loads((tiny_study / "compare" / "stats.json").read_text(encoding="utf-8")),
            "path": out}


def test_html_parses_with_all_seven_sections(report):
    parser = report["parser"]
    assert parser.sections == SECTIONS
    assert parser.open_tags == []
    assert report["json"]["format"] == "rn-classifier/report"


def test_every_image_is_a_non_empty_inlined_png_and_nothing_comes_from_the_network(report):
    images = report["parser"].images
    assert len(images) >= 3 * 3 + 1 + 1            # 3 figures per cohort, referral, gallery
    for img in images:
        prefix, _, payload = img["src"].partition(",")
        assert prefix == "data:image/png;base64"
        png = base64.b64decode(payload, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not re.search(r"(src|href)=\"(https?:)?//", report["html"])
    assert not report["parser"].external             # no scripts, stylesheets or outside links
    assert {a["href"] for a in report["parser"].links} == {f"#{s}" for s in SECTIONS}


def test_auc_table_equals_stats_json(report):
    stats = report["stats"]
    table = next(t for t in report["parser"].tables if t["id"] == "auc-table")
    checked = 0
    for row in table["rows"]:
        for cell in row:
            model, cohort = cell["attrs"].get("data-model"), cell["attrs"].get("data-cohort")
            if not model:
                continue
            info = stats["cohorts"][cohort]
            if "auc" in cell["attrs"].get("class", "").split():
                entry = info["models"][model]
                lo, hi = entry["auc_ci"]
                assert cell["text"].strip() == f"{entry['auc']:.3f} [{lo:.3f}–{hi:.3f}]"
            else:
                comp = [c for c in info["comparisons"] if c["model"] == model]
                if model == stats["reference"]:
                    assert cell["text"].strip() == "—"
                else:
                    p, holm = comp[0]["p_value"], comp[0]["p_holm"]
                    fmt = lambda v: "< 0.001" if v < 0.001 else f"{v:.3f}"  # noqa: E731
                    assert cell["text"].strip() == f"{fmt(p)} ({fmt(holm)})"
            checked += 1
    n_models = len({m for c in stats["cohorts"].values() for m in c["models"]})
    assert checked == 2 * n_models * len(stats["cohorts"])


def test_every_number_in_the_tables_comes_from_stats_or_report_json(report):
    from_stats = _numbers(report["stats"], set())
    from_report = _numbers(report["json"], set()) | from_stats
    seen = {"stats": 0, "report": 0}
    for table in report["parser"].tables:
        names = {table["id"], *table["class"].split()}
        source = "stats" if names & set(STATS_TABLES) else "report" if names & set(REPORT_TABLES) else None
        if source is None:
            continue
        allowed = from_stats if source == "stats" else from_report
        for row in table["rows"]:
            for cell in row:
                for number in NUMBER.findall(cell["text"]):
                    where = (table["id"] or table["class"], cell["text"])
                    assert number.lstrip("-") in allowed or number in allowed, where
                    seen[source] += 1
    assert seen["stats"] > 50 and seen["report"] > 20


def test_uncertainty_table_is_the_stats_json_one(report):
    stats = report["stats"]
    names = list(stats["uncertainty"]["uncertainties"])
    tables = [t for t in report["parser"].tables if "uncertainty-table" in t["class"].split()]
    assert len(tables) == len(stats["cohorts"])
    assert stats["uncertainty"]["ece_binning"] in report["html"]
    for table, (cohort, info) in zip(tables, stats["cohorts"].items()):
        rows = [[c["text"] for c in r] for r in table["rows"][1:]]
        expected = [(m, stage, u) for m, e in info["models"].items() for stage, u in e["uncertainty"].items()]
        assert len(rows) == len(expected)
        assert any(stage == "after_recalibration" for _, stage, _ in expected) == (cohort != "oof")
        for row, (model, stage, u) in zip(rows, expected):
            assert row[2] == f"{u['ece']:.3f}" and row[3] == f"{u['brier']:.3f}", (cohort, model, stage)
            for cell, name in zip(row[5:], names):
                value = u["auroc_errors"].get(name)
                assert cell == ("—" if value is None else f"{value:.3f}"), (cohort, model, name)


def test_contour_variability_next_to_the_fold_spread(report, tiny_study):
    stats = report["stats"]
    tables = [t for t in report["parser"].tables if "contour-table" in t["class"].split()]
    expected = [(m, c) for m, cohorts in stats["contour"]["auc_by_variant"].items() for c in cohorts]
    assert len(tables) == len(expected) > 0
    for table, (model, cohort) in zip(tables, expected):
        header = [c["text"] for c in table["rows"][0]][1:]
        assert header == list(stats["contour"]["auc_by_variant"][model][cohort])
    contour = pd.read_csv(tiny_study / "contour" / "contour_predictions.csv", dtype={"case_id": str})
    spread = contour.groupby(["model", "case_id"])["y_prob"].agg(lambda p: float(np.std(p)))
    cases = report["json"]["uncertainty"]["cases"]
    model = report["json"]["uncertainty"]["model"]
    assert cases and all(c["y_contour_std"] == pytest.approx(spread[(model, c["case"])]) for c in cases)
    assert report["json"]["uncertainty"]["referral_contour"]["external"]
    assert any(img.get("alt", "").startswith("AUC under each contour") for img in report["parser"].images)
    assert any(img.get("alt", "").startswith("Referral by contour spread") for img in report["parser"].images)


def test_shift_check_section_is_the_runs_shift_json(report, tiny_study):
    shift = json.loads((tiny_study / "shift" / "shift.json").read_text(encoding="utf-8"))
    section = report["json"]["shift"]
    assert section["available"] and section["image_statistics"]["cohorts"] == shift["image"]["cohorts"]
    table = next(t for t in report["parser"].tables if t["id"] == "shift-image-table")
    rows = [[c["text"] for c in r] for r in table["rows"][1:]]
    assert len(rows) == len(shift["image"]["cohorts"]) + len(shift["image"]["folds"])
    for row, v in zip(rows, [*shift["image"]["cohorts"].values(), *shift["image"]["folds"]]):
        assert row[2] == f"{v['distance']:.2f}"
        assert row[4] == ("—" if v["flagged"] is None else
                          "OUTSIDE the internal range" if v["flagged"] else row[4])
    scores = next(t for t in report["parser"].tables if t["id"] == "shift-score-table")
    assert len(scores["rows"]) == 1 + len(shift["scores"])


def test_operating_points_and_thresholds_are_the_frozen_ones(report):
    stats = report["stats"]
    for cohort, info in stats["cohorts"].items():
        table = next(t for t in report["parser"].tables
                     if "operating-table" in t["class"] and t["cohort"] == cohort)
        rows = {r[0]["text"].split()[0]: r for r in table["rows"][1:]}
        for model, entry in info["models"].items():
            cells = [c["text"] for c in rows[model]]
            assert cells[1].startswith(f"{entry['sensitivity']:.3f}") if entry["sensitivity"] is not None else True
            c = entry["confusion"]
            assert [int(x) for x in cells[5:9]] == [c["tp"], c["fn"], c["fp"], c["tn"]]
            matrix = next(t for t in report["parser"].tables if "confusion-table" in t["class"]
                          and t["cohort"] == cohort and t["rows"][0][0]["text"] == model)
            assert [[int(x["text"]) for x in r[1:]] for r in matrix["rows"][2:]] == [[c["tp"], c["fn"]],
                                                                                  [c["fp"], c["tn"]]]


def test_synthetic_data_is_labelled_everywhere(report):
    html = report["html"]
    assert 'id="synthetic-banner"' in html and report["json"]["synthetic"] is True
    assert "<title>rn-classifier report — SYNTHETIC DATA</title>" in html
    assert html.count("SYNTHETIC") >= 10


def test_report_json_holds_the_reports_own_numbers(report, tiny_study):
    data, stats = report["json"], report["stats"]
    for cohort, info in stats["cohorts"].items():
        assert data["cohorts"][cohort]["n_cases"] == info["n_cases"]
        assert data["cohorts"][cohort]["n_negative"] == info["n_cases"] - info["n_positive"]
    band = data["roc_bands"]["external"]["ssl_vit"]
    assert all(lo <= hi for lo, hi in zip(band["tpr_lower"], band["tpr_upper"]))
    referral = data["uncertainty"]["referral"]["external"]["ssl_vit"]
    assert referral["auc"][0] == pytest.approx(stats["cohorts"]["external"]["models"]["ssl_vit"]["auc"])
    att = data["attention"]
    assert att["available"] and att["model"] == "ssl_vit"
    assert len(att["cases"]) == stats["cohorts"]["internal_test"]["n_cases"] + stats["cohorts"]["external"]["n_cases"]
    assert all("image" not in g for g in att["gallery"])        # images live in the HTML only
    for g in att["gallery"]:
        assert (report["path"].parent / g["nifti"]).is_file()
    assert [t["item"] for t in data["tripod"]][:3] == ["Source of data", "Outcome", "Sample size"]


def test_pseudonymized_report_leaks_no_ids_salt_or_paths(tiny_study, tmp_path, monkeypatch):
    monkeypatch.setenv("RN_PSEUDONYM_SALT", "s3cret-salt-value")
    first = build_report(tiny_study, out=tmp_path / "a" / "report.html", pseudonymize=True)
    preds = pd.concat(pd.read_csv(p, dtype=str) for p in (tiny_study / "finetune").glob("*/predictions.csv"))
    for path in (first, first.with_name("report.json")):
        text = path.read_text(encoding="utf-8")
        assert not any(cid in text for cid in preds["case_id"].unique())
        assert not any(pid in text for pid in preds["patient_id"].unique())
        assert "s3cret-salt-value" not in text and str(tmp_path) not in text and str(tiny_study) not in text
    a = json.loads(first.with_name("report.json").read_text(encoding="utf-8"))
    again = Pseudonymizer(True)                         # same salt from the environment: same ids
    held = preds[preds["cohort"] != "oof"].drop_duplicates("case_id")
    assert {again.case(c) for c in held["case_id"]} == {c["case"] for c in a["uncertainty"]["cases"]}
    assert Pseudonymizer(True, salt="another-study-salt").case("INT-000_L0") != again.case("INT-000_L0")
    assert all(re.fullmatch(r"case-[0-9a-f]{12}", c["case"]) for c in a["uncertainty"]["cases"])
    gallery_ids = {g["case"] for g in a["attention"]["gallery"]}
    assert gallery_ids <= {c["case"] for c in a["uncertainty"]["cases"]}   # one pseudonym per case
    assert not any(f.name.startswith(("INT", "EXT")) for f in (first.parent / "attention").iterdir())


def test_single_finetune_run_with_stats_and_cli(tiny_study, tmp_path, capsys, monkeypatch):
    from rn_classifier.privacy import pseudonym, write_salt_file

    monkeypatch.delenv("RN_PSEUDONYM_SALT", raising=False)
    salt = write_salt_file(tmp_path / "study.salt")
    out = tmp_path / "single.html"
    rc = main(["report", str(tiny_study / "finetune" / "ssl_vit"), "--stats",
               str(tiny_study / "compare" / "stats.json"), "--out", str(out), "--pseudonymize",
               "--salt-file", str(tmp_path / "study.salt")])
    assert rc == 0 and out.is_file() and out.with_name("report.json").is_file()
    assert "wrote" in capsys.readouterr().out
    data = json.loads(out.with_name("report.json").read_text(encoding="utf-8"))
    first = data["uncertainty"]["cases"][0]
    preds = pd.read_csv(tiny_study / "finetune" / "ssl_vit" / "predictions.csv", dtype=str)
    assert first["case"] in {pseudonym(c, salt, prefix="case-") for c in preds["case_id"]}
    assert salt not in out.read_text(encoding="utf-8") and "salt file" in data["provenance"]["pseudonyms"]


def test_missing_stats_is_one_clear_error(tiny_study, tmp_path):
    with pytest.raises(InputError, match="stats.json does not exist.*--stats"):
        build_report(tiny_study / "finetune" / "ssl_vit", out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_scrub_paths_keeps_only_the_last_component():
    text = "data:\n  internal_cache: /home/dr/molab/cache/internal\n  split: C:\\Users\\dr\\split.csv\nname: ssl_vit"
    assert scrub_paths(text) == "data:\n  internal_cache: …/internal\n  split: …/split.csv\nname: ssl_vit"
    assert scrub_paths("cache: /srv/runs/s1/cache/internal", "/srv/runs/s1") == "cache: ./cache/internal"


def test_missing_caches_give_a_report_that_says_why(tiny_study, tmp_path):
    import shutil

    study = tmp_path / "moved"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("cache", "report"))
    for config in (study / "finetune").glob("*/config.yaml"):        # the caches are gone
        config.write_text(config.read_text(encoding="utf-8").replace(str(tiny_study), str(study)))
    out = build_report(study, out=tmp_path / "r" / "report.html", pseudonymize=True)
    data = json.loads(out.with_name("report.json").read_text(encoding="utf-8"))
    assert data["attention"]["available"] is False and "cache" in data["attention"]["reason"]
    html = out.read_text(encoding="utf-8")
    assert str(tmp_path) not in html and "Attention maps not available" in html


# -- paths from any working directory (issue 15, item 4) ------------------------------------------

def test_run_folders_store_paths_relative_to_themselves(tiny_study):
    import yaml

    cfg = yaml.safe_load((tiny_study / "finetune" / "ssl_vit" / "config.yaml").read_text())
    for key in ("internal_manifest", "external_manifest", "internal_cache", "external_cache", "split"):
        assert not Path(cfg["data"][key]).is_absolute(), key
        assert (tiny_study / "finetune" / "ssl_vit" / cfg["data"][key]).exists(), key
    late = json.loads((tiny_study / "finetune" / "ssl_vit_clinical_late" / "provenance.json").read_text())
    assert late["image_run"] == "../ssl_vit"
    stats = json.loads((tiny_study / "compare" / "stats.json").read_text())
    assert all(not Path(p).is_absolute() and (tiny_study / "compare" / p).is_file() for p in stats["inputs"])


def test_a_moved_study_reports_in_full_from_another_working_directory(tiny_study, tmp_path, monkeypatch, capsys):
    """Before: exit 0 with a report lacking the attention gallery and the centres ("manifest not found"
    only inside the HTML)."""
    import shutil

    study = tmp_path / "elsewhere" / "study"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("report"))
    shutil.move(str(tiny_study), str(tmp_path / "hidden"))    # nothing can be found at the old place
    try:
        monkeypatch.chdir(tmp_path)
        rc = main(["report", "elsewhere/study", "--out", "r/report.html"])
        assert rc == 0, capsys.readouterr().err
        data = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
        assert data["attention"]["available"] is True and data["missing_sections"] == []
        assert set(data["provenance"]["data"]) == {"internal", "external"}
    finally:
        shutil.move(str(tmp_path / "hidden"), str(tiny_study))


def test_a_report_that_lacks_a_section_exits_non_zero_unless_allowed(tiny_study, tmp_path, capsys):
    import shutil

    study = tmp_path / "moved"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("cache", "report"))
    assert main(["report", str(study), "--out", str(tmp_path / "a" / "report.html")]) == 1
    err = capsys.readouterr().err
    assert "warning: the report lacks attention maps:" in err
    assert "error: 1 report section(s) could not be included" in err and "--allow-partial" in err
    assert main(["report", str(study), "--out", str(tmp_path / "b" / "report.html"), "--allow-partial"]) == 0
    html = (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    assert 'id="partial"' in html and "Partial report: attention maps:" in html
