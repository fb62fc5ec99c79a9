"""Is a cohort, or a case, outside the range of the internal data? No labels of it are needed.

Reference: the internal training part (the cases with oof predictions). Two views:

* **image statistics** (:mod:`.features`): each feature is put on the reference's robust scale,
  ``z = (x − median) / scale`` with ``scale = IQR / 1.349`` (floored at 5 % of |median| and
  1e-3, so a feature that never varies internally, such as the slice thickness, still has one).
  Cohort distance = mean over features of |median of the cohort's z|; case distance = mean |z|.
* **score distribution**: Wasserstein-1 distance (in probability units) between the cohort's
  P(RN) and the reference's oof P(RN), per model.

"Outside the range": a cohort distance above the ``level`` quantile (default 0.99) of the
distances of random patient-level subsets of the reference with the cohort's number of cases,
each measured against the rest of the reference — internal parts held out as if they were new
(the cross-validation folds are such subsets; each is also checked against the other folds, and
should not be flagged). Each held-out subset is measured against the rest only, a smaller
reference than the real one, so the threshold errs on the side of not flagging when the cohort
is large next to the internal set. A case is flagged when its distance is above the ``level`` quantile of
the internal cases' distances, each internal case measured with its own fold held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import InputError

DEFAULT_LEVEL = 0.99
DEFAULT_DRAWS = 200
_RELATIVE_FLOOR, _ABSOLUTE_FLOOR = 0.05, 1e-3


@dataclass(frozen=True)
class RobustScale:
    """Per feature median and robust scale of a reference set of cases."""

    centre: pd.Series
    scale: pd.Series

    @classmethod
    def fit(cls, features: pd.DataFrame) -> RobustScale:
        centre = features.median()
        iqr = features.quantile(0.75) - features.quantile(0.25)
        floor = np.maximum(_RELATIVE_FLOOR * centre.abs(), _ABSOLUTE_FLOOR)
        return cls(centre, np.maximum(iqr / 1.349, floor))

    def z(self, features: pd.DataFrame) -> pd.DataFrame:
        return (features[self.centre.index] - self.centre) / self.scale

    def as_dict(self) -> dict:
        return {"median": self.centre.to_dict(), "scale": self.scale.to_dict()}


def cohort_image_distance(reference: pd.DataFrame, cohort: pd.DataFrame) -> tuple[float, dict]:
    """Mean over features of |median z| of ``cohort`` on ``reference``'s scale; and per feature."""
    z = RobustScale.fit(reference).z(cohort).median().abs()
    return float(z.mean()), z.to_dict()


def score_distance(reference, cohort) -> float:
    """Wasserstein-1 distance between two samples of P(RN)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(np.asarray(reference, float), np.asarray(cohort, float)))


def held_out_null(patients: np.ndarray, n_cases: int, distance, n_draws: int,
                  seed: int) -> np.ndarray | None:
    """Distances of ``n_draws`` random patient-level subsets (≥ ``n_cases`` cases each) of the
    reference from the rest of it: ``distance(rest_mask, subset_mask)`` per draw; None when the
    reference has fewer than 3 patients (a held-out part and a rest of at least 2)."""
    rng = np.random.default_rng(seed)
    unique = np.unique(patients)
    if unique.size < 3:
        return None
    out = np.empty(n_draws)
    for d in range(n_draws):
        order = rng.permutation(unique)
        counts = pd.Series(patients).value_counts().reindex(order).to_numpy()
        n_patients = min(int(np.searchsorted(np.cumsum(counts), n_cases) + 1), unique.size - 2)
        subset = np.isin(patients, order[:n_patients])
        out[d] = distance(~subset, subset)
    return out


def _verdict(distance: float, null: np.ndarray | None, level: float, n_cases: int) -> dict:
    if null is None:
        return {"distance": distance, "threshold": None, "flagged": None, "null_median": None,
                "n_cases": int(n_cases),
                "note": "too few internal patients (< 3) to measure the held-out spread"}
    threshold = float(np.quantile(null, level))
    return {"distance": distance, "threshold": threshold, "flagged": bool(distance > threshold),
            "null_median": float(np.median(null)), "n_cases": int(n_cases)}


@dataclass(frozen=True)
class ShiftInputs:
    """What the check reads: image features per case (index case_id; a ``patient_id`` column)
    and one model's predictions (seam 2 columns) that say which cases are the oof reference,
    their folds, and which are internal_test / external."""

    features: pd.DataFrame
    predictions: pd.DataFrame


def _parts(predictions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    parts = {c: predictions[predictions["cohort"] == c].set_index("case_id")
             for c in ("oof", "internal_test", "external")}
    if parts["oof"].empty:
        raise InputError("the shift check needs internal oof predictions (the reference); none found")
    return parts


def _image_check(features: pd.DataFrame, parts: dict, level: float, n_draws: int,
                 seed: int) -> dict:
    feats = features.drop(columns=["patient_id"])
    ref_ids = [c for c in parts["oof"].index if c in feats.index]
    missing = sorted(set(parts["oof"].index) - set(ref_ids))
    if missing:
        raise InputError(f"shift check: no image features for oof case(s) {missing[:10]}; is the "
                         "internal cache the one these predictions were made from?")
    ref = feats.loc[ref_ids]
    patients = parts["oof"].loc[ref_ids, "patient_id"].astype(str).to_numpy()
    folds = parts["oof"].loc[ref_ids, "fold"].to_numpy()

    def null(reference: pd.DataFrame, reference_patients: np.ndarray, n: int) -> np.ndarray:
        return held_out_null(reference_patients, n, lambda rest, subset: cohort_image_distance(
            reference[rest], reference[subset])[0], n_draws, seed)

    out: dict = {"cohorts": {}, "folds": []}
    for cohort in ("internal_test", "external"):
        ids = [c for c in parts[cohort].index if c in feats.index]
        if not ids:
            continue
        distance, per_feature = cohort_image_distance(ref, feats.loc[ids])
        verdict = _verdict(distance, null(ref, patients, len(ids)), level, len(ids))
        out["cohorts"][cohort] = {**verdict, "per_feature": per_feature}
    for fold in sorted(set(folds)):
        held, rest = folds == fold, folds != fold
        distance, per_feature = cohort_image_distance(ref[rest], ref[held])
        fold_null = null(ref[rest], patients[rest], int(held.sum()))
        out["folds"].append({"fold": int(fold), **_verdict(distance, fold_null, level, int(held.sum())),
                             "per_feature": per_feature})
    out["cases"] = _case_check(feats, ref, folds, parts, level)
    return out


def _case_check(feats: pd.DataFrame, ref: pd.DataFrame, folds: np.ndarray, parts: dict,
                level: float) -> dict:
    """Per case mean |z|; threshold from the internal cases, each with its own fold held out."""
    internal = pd.Series(index=ref.index, dtype=float)
    for fold in sorted(set(folds)):
        scale = RobustScale.fit(ref[folds != fold])
        internal[ref.index[folds == fold]] = scale.z(ref[folds == fold]).abs().mean(axis=1)
    threshold = float(np.quantile(internal.to_numpy(), level))
    scale = RobustScale.fit(ref)
    cases = []
    for cohort in ("internal_test", "external"):
        ids = [c for c in parts[cohort].index if c in feats.index]
        if not ids:
            continue
        z = scale.z(feats.loc[ids])
        for case_id, row in z.iterrows():
            distance = float(row.abs().mean())
            top = row.abs().sort_values(ascending=False).index[:3]
            cases.append({"case_id": case_id, "cohort": cohort, "distance": distance,
                          "flagged": distance > threshold,
                          "furthest": {f: float(row[f]) for f in top}})
    n_flagged = {c: sum(k["flagged"] for k in cases if k["cohort"] == c)
                 for c in ("internal_test", "external") if any(k["cohort"] == c for k in cases)}
    return {"threshold": threshold, "reference": scale.as_dict(),
            "internal_flagged_fraction": float((internal > threshold).mean()),
            "n_flagged": n_flagged, "cases": cases}


def _score_check(parts: dict, level: float, n_draws: int, seed: int) -> dict:
    oof = parts["oof"]
    p_ref, patients, folds = (oof["y_prob"].to_numpy(float), oof["patient_id"].astype(str).to_numpy(),
                              oof["fold"].to_numpy())

    def null(p, pats, n):
        return held_out_null(pats, n, lambda rest, subset: score_distance(p[rest], p[subset]),
                             n_draws, seed)

    out: dict = {"cohorts": {}, "folds": []}
    for cohort in ("internal_test", "external"):
        if parts[cohort].empty:
            continue
        p = parts[cohort]["y_prob"].to_numpy(float)
        out["cohorts"][cohort] = {**_verdict(score_distance(p_ref, p), null(p_ref, patients, p.size),
                                             level, p.size),
                                  "median_y_prob": float(np.median(p))}
    for fold in sorted(set(folds)):
        held, rest = folds == fold, folds != fold
        out["folds"].append({"fold": int(fold), **_verdict(
            score_distance(p_ref[rest], p_ref[held]), null(p_ref[rest], patients[rest], int(held.sum())),
            level, int(held.sum()))})
    out["reference_median_y_prob"] = float(np.median(p_ref))
    return out


def shift_check(features: pd.DataFrame, predictions: pd.DataFrame, level: float = DEFAULT_LEVEL,
                n_draws: int = DEFAULT_DRAWS, seed: int = 0) -> dict:
    """The shift check of every cohort and model (the content of ``shift.json``).

    features: per case image statistics (index case_id, a ``patient_id`` column; internal and
    external cases together); predictions: a checked predictions table (seam 2, one or more
    models). Image statistics are checked once (the cases are the same for every model); score
    distributions per model.
    """
    if not 0.5 < float(level) < 1.0:
        raise InputError(f"shift check level must be in (0.5, 1), got {level}")
    if int(n_draws) < 20:
        raise InputError(f"shift check n_draws must be at least 20, got {n_draws}")
    models = list(dict.fromkeys(predictions["model"]))
    if not models:
        raise InputError("shift check: no predictions given")
    first = _parts(predictions[predictions["model"] == models[0]])
    return {
        "level": float(level), "n_draws": int(n_draws), "seed": int(seed),
        "features": [c for c in features.columns if c != "patient_id"],
        "reference": "internal training part (cases with oof predictions)",
        "image": _image_check(features, first, level, n_draws, seed),
        "scores": {m: _score_check(_parts(predictions[predictions["model"] == m]), level, n_draws, seed)
                   for m in models},
    }


def case_reference(shift: dict, where: str = "shift check") -> dict:
    """What judging one new case needs of a shift check (the content of ``shift.json``): the
    internal cases' robust ``{"median", "scale"}`` per image statistic, the flag threshold (the
    ``level`` quantile of the internal cases' distances) and that level. A model bundle carries
    this (:func:`rn_classifier.models.bundle.set_shift_reference`), so ``predict`` can check a case
    with no study folder around the model."""
    try:
        cases = shift["image"]["cases"]
        reference = {"reference": cases["reference"], "threshold": cases["threshold"],
                     "level": shift["level"]}
    except (KeyError, TypeError) as exc:
        raise InputError(f"{where}: not a shift check of `rn-classifier shift-check` (it needs level "
                         f"and image.cases with reference and threshold; {exc!r})") from None
    return check_case_reference(reference, where)


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def check_case_reference(reference, where: str) -> dict:
    """``reference`` (a :func:`case_reference`) checked and in plain floats, or one InputError
    naming ``where`` (the file or bundle it came from) and every problem found."""
    if not isinstance(reference, dict):
        raise InputError(f"{where}: the shift reference is a {type(reference).__name__}, not an object "
                         "with reference, threshold and level")
    problems = [f"lacks {key!r}" for key in ("reference", "threshold", "level") if key not in reference]
    stats = reference.get("reference")
    if not (isinstance(stats, dict) and all(isinstance(stats.get(p), dict) for p in ("median", "scale"))
            and stats["median"]):
        if "reference" in reference:
            problems.append("'reference' must hold 'median' and 'scale', one number per image statistic")
        stats = {"median": {}, "scale": {}}
    elif set(stats["median"]) != set(stats["scale"]):
        problems.append(f"'median' and 'scale' name different statistics "
                        f"({sorted(set(stats['median']) ^ set(stats['scale']))})")
    given = {**{k: reference[k] for k in ("threshold", "level") if k in reference},
             **{f"{part}.{f}": v for part in ("median", "scale") for f, v in stats[part].items()}}
    numbers = {name: _finite(value) for name, value in given.items()}
    problems += [f"{name} = {given[name]!r} is not a finite number" for name, x in numbers.items() if x is None]
    # a zero scale would divide by zero; RobustScale.fit floors every scale above 0
    problems += [f"{name} = {x} is not positive" for name, x in numbers.items()
                 if name.startswith("scale.") and x is not None and x <= 0]
    if problems:
        raise InputError(f"{where}: not a shift reference of `rn-classifier shift-check`: " + "; ".join(problems))
    return {"reference": {part: {f: numbers[f"{part}.{f}"] for f in stats[part]} for part in ("median", "scale")},
            "threshold": numbers["threshold"], "level": numbers["level"]}


def case_verdict(features: dict[str, float], reference: dict, threshold: float) -> dict:
    """One new case against the internal range (for ``predict``): ``reference`` and ``threshold``
    as ``shift.json["image"]["cases"]`` stores them (``reference`` = {"median", "scale"} per
    feature). Features the case lacks (no source spacing recorded) are left out."""
    names = [f for f in reference["median"] if f in features and np.isfinite(features[f])]
    if not names:
        raise InputError("shift check: the case has none of the reference's image statistics "
                         f"({', '.join(reference['median'])})")
    z = {f: (float(features[f]) - float(reference["median"][f])) / float(reference["scale"][f])
         for f in names}
    distance = float(np.mean(np.abs(list(z.values()))))
    furthest = sorted(z, key=lambda f: abs(z[f]), reverse=True)[:3]
    return {"distance": distance, "threshold": float(threshold), "flagged": distance > float(threshold),
            "furthest": {f: z[f] for f in furthest}, "n_features": len(names)}
