"""What the clinical columns of a cohort lack: missing values per column and case, and levels
of a categorical column that the training (internal) cohort never holds.

A model cannot learn anything about a level it never saw. One policy, decided before any
training (``clinical.unseen_levels`` of a study, ``unseen_levels`` of a fine-tuning config):

``impute`` (default)  such a value is treated as missing: the models impute it as they impute
                      every missing value (fitted on the training folds), and it is listed in
                      check-data's output, ``stats.json`` and the report
``error``             the study stops at its check-data stage, listing the cases to recode

Empty values are missing, never a level. The audit is plain JSON (case ids, no values), so it
can go into ``stats.json`` and the report unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ..errors import ConfigError, DataIntegrityError

UNSEEN_LEVEL_POLICIES = ("impute", "error")
SHOWN_CASES = 10


def check_unseen_policy(policy: str, key: str = "clinical.unseen_levels") -> str:
    if policy not in UNSEEN_LEVEL_POLICIES:
        raise ConfigError(f"{key} must be one of {list(UNSEEN_LEVEL_POLICIES)}, got {policy!r} "
                          "(impute: an unseen level is treated as missing; error: the study stops "
                          "at check-data)")
    return policy


def _cases(df: pd.DataFrame, rows: pd.Series) -> list[str]:
    return df.loc[rows, "case_id"].astype(str).tolist()


def missing_values(df: pd.DataFrame, spec: Mapping[str, str]) -> dict[str, list[str]]:
    """``{column: [case ids with an empty value]}`` for the declared columns that have any."""
    out = {}
    for col in spec:
        if col not in df.columns:
            continue
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            out[col] = _cases(df, empty)
    return out


def _levels(values: pd.Series) -> pd.Series:
    return values.dropna().astype(str).str.strip().str.removesuffix(".0")


def unseen_levels(reference: pd.DataFrame, other: pd.DataFrame,
                  spec: Mapping[str, str]) -> dict[str, dict[str, list[str]]]:
    """``{column: {level: [case ids]}}``: categorical levels of ``other`` absent from ``reference``."""
    out: dict[str, dict[str, list[str]]] = {}
    for col, kind in spec.items():
        if kind != "categorical" or col not in reference.columns or col not in other.columns:
            continue
        known = set(_levels(reference[col]))
        values = _levels(other[col])
        values = values[values != ""]
        unknown = values[~values.isin(known)]
        if len(unknown):
            out[col] = {level: other.loc[unknown.index[unknown == level], "case_id"].astype(str).tolist()
                        for level in sorted(set(unknown))}
    return out


def blank_unseen_levels(df: pd.DataFrame, unseen: Mapping[str, Mapping[str, list[str]]]) -> pd.DataFrame:
    """A copy of ``df`` with the unseen levels made missing (the ``impute`` policy)."""
    out = df.copy()
    for col, levels in unseen.items():
        out.loc[_levels(out[col]).reindex(out.index).isin(list(levels)), col] = float("nan")
    return out


def unseen_level_problems(unseen: Mapping[str, Mapping[str, list[str]]], reference: pd.DataFrame,
                          source: str) -> list[str]:
    """One line per column and level, naming the cases, the known levels and what to do."""
    problems = []
    for col, levels in unseen.items():
        known = sorted(set(_levels(reference[col])))
        for level, cases in levels.items():
            shown = ", ".join(cases[:SHOWN_CASES]) + (" ..." if len(cases) > SHOWN_CASES else "")
            problems.append(f"{source}: categorical clinical column '{col}' holds level {level!r}, never "
                            f"seen in the internal cohort (case(s) {shown}); known levels {known}. "
                            "Recode it to a known level, leave it empty (= missing), or set "
                            "clinical.unseen_levels=impute to treat it as missing")
    return problems


def apply_unseen_policy(reference: pd.DataFrame, other: pd.DataFrame, spec: Mapping[str, str],
                        policy: str, source: str) -> tuple[pd.DataFrame, dict]:
    """``(other with unseen levels made missing, {column: {level: [cases]}})`` under ``impute``;
    a :class:`DataIntegrityError` listing them under ``error``."""
    check_unseen_policy(policy)
    unseen = unseen_levels(reference, other, spec)
    if unseen and policy == "error":
        raise DataIntegrityError("internal vs external manifest",
                                 unseen_level_problems(unseen, reference, source))
    return (blank_unseen_levels(other, unseen) if unseen else other), unseen


def clinical_audit(cohorts: Mapping[str, pd.DataFrame], spec: Mapping[str, str], policy: str,
                   reference: str = "internal") -> dict:
    """Per cohort: missing values, unseen levels (vs ``reference``) and what the models impute.

    ``{"policy", "columns", "cohorts": {name: {"n_cases", "missing": {col: [cases]},
    "unseen_levels": {col: {level: [cases]}}, "imputed": {col: [cases]}}}}``; ``imputed`` is
    missing + unseen (under ``impute``), the values a model fills in.
    """
    check_unseen_policy(policy)
    out: dict = {"policy": policy, "columns": dict(spec), "cohorts": {}}
    ref = cohorts.get(reference)
    for name, df in cohorts.items():
        missing = missing_values(df, spec)
        unseen = unseen_levels(ref, df, spec) if ref is not None and name != reference else {}
        imputed = {col: list(cases) for col, cases in missing.items()}
        for col, levels in unseen.items():
            imputed[col] = sorted({*imputed.get(col, []), *(c for cases in levels.values() for c in cases)})
        out["cohorts"][name] = {"n_cases": int(len(df)), "missing": missing, "unseen_levels": unseen,
                                "imputed": {c: imputed[c] for c in spec if c in imputed}}
    return out


def audit_lines(audit: Mapping) -> list[str]:
    """The audit as terminal lines (check-data's output); empty when nothing is missing."""
    lines = []
    for name, info in audit.get("cohorts", {}).items():
        for col, cases in info["missing"].items():
            shown = ", ".join(cases[:SHOWN_CASES]) + (" ..." if len(cases) > SHOWN_CASES else "")
            lines.append(f"{name}: clinical column '{col}' is empty for {len(cases)}/{info['n_cases']} "
                         f"case(s) ({shown}): imputed as missing")
        for col, levels in info["unseen_levels"].items():
            for level, cases in levels.items():
                shown = ", ".join(cases[:SHOWN_CASES]) + (" ..." if len(cases) > SHOWN_CASES else "")
                lines.append(f"{name}: clinical column '{col}' level {level!r} is never seen in the "
                             f"internal cohort ({len(cases)} case(s): {shown}): treated as missing "
                             "and imputed (clinical.unseen_levels=impute)")
    return lines
