"""Synthetic clinical variables, correlated with the label but none decisive on its own.

Directions follow the clinical literature on radiation necrosis after radiosurgery (e.g.
Minniti et al., Radiat Oncol 2011; Sneed et al., J Neurosurg 2015; Vellayappan et al., Front
Oncol 2018): RN is more likely after higher single-fraction doses and less likely after
hypofractionation, peaks 6–18 months after radiosurgery and is more often treated with
steroids (symptomatic oedema); progression is more likely with radioresistant primaries
(melanoma, kidney, colon) and appears over a wider range of intervals. Effect sizes are set
so that each variable alone gives AUC ≲ 0.7 and all together ≈ 0.75–0.8 — clinical data add
signal that the image does not carry (the drawn values do not depend on the lesion's image
phenotype, only on its label).

The spreadsheet layout (by position, two header rows) mirrors MOLAB's clinical file; see
:data:`SPREADSHEET_COLUMNS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# MOLAB primary tumour codes
PRIMARY_CODES = {1: "breast", 2: "NSCLC", 3: "SCLC", 4: "melanoma", 5: "kidney", 6: "colon",
                 7: "bladder", 8: "unknown", 9: "ovary", 10: "pharynx", 11: "bone sarcoma",
                 12: "uterus"}
FEMALE_ONLY = {1, 9, 12}
# odds multiplier for progression (vs RN) by primary: radioresistant histologies progress
PROGRESSION_ODDS = {1: 0.7, 2: 0.9, 3: 1.2, 4: 2.2, 5: 2.0, 6: 1.4, 7: 1.0, 8: 1.0, 9: 1.0,
                    10: 1.0, 11: 1.5, 12: 1.0}


@dataclass(frozen=True)
class SpreadsheetColumn:
    """One spreadsheet column: header group (first header row), header name (second header
    row) and the manifest name the importer's column map gives it (None: an id column)."""

    group: str
    header: str
    name: str | None
    kind: str | None = None   # "numeric" / "categorical" for clinical variables


# Position in this tuple = column position in the spreadsheet (MOLAB's first six, then the
# synthetic extras); the importer's column map (configs/data/synthetic_columns.yaml) must agree.
SPREADSHEET_COLUMNS: tuple[SpreadsheetColumn, ...] = (
    SpreadsheetColumn("Patient", "Patient ID", None),
    SpreadsheetColumn("Patient", "Age at first MRI (years)", "age", "numeric"),
    SpreadsheetColumn("Patient", "Sex (1=F, 2=M)", "sex", "categorical"),
    SpreadsheetColumn("Patient", "GPA", "gpa", "numeric"),
    SpreadsheetColumn("Lesion", "Lesion ID", None),
    SpreadsheetColumn("Lesion", "Primary tumour (code)", "primary", "categorical"),
    SpreadsheetColumn("Radiosurgery", "Prescribed dose (Gy)", "dose_gy", "numeric"),
    SpreadsheetColumn("Radiosurgery", "Fractions", "fractions", "numeric"),
    SpreadsheetColumn("Radiosurgery", "Months since radiosurgery", "months_since_srs", "numeric"),
    SpreadsheetColumn("Radiosurgery", "Steroids (0/1)", "steroids", "categorical"),
)
PATIENT_ID_COLUMN = 0
LESION_ID_COLUMN = 4


def column_map():
    """The importer's :class:`~rn_classifier.data.molab.ColumnMap` for this spreadsheet."""
    from ..molab import ColumnMap

    named = {i: c for i, c in enumerate(SPREADSHEET_COLUMNS) if c.name}
    return ColumnMap(header_rows=2, patient_id=PATIENT_ID_COLUMN, lesion=LESION_ID_COLUMN,
                     columns={c.name: i for i, c in named.items()},
                     types={c.name: c.kind for c in named.values()})


@dataclass(frozen=True)
class CaseMix:
    """A centre's population: RN prevalence among lesions and primary tumour weights."""

    rn_prevalence: float
    primary_weights: dict[int, float]
    patient_concordance: float = 2.0   # Beta concentration: low = lesions of a patient agree


def draw_patient_labels(rng: np.random.Generator, n_lesions: int, mix: CaseMix) -> list[int]:
    """Labels of one patient's lesions: a patient-level RN propensity ~ Beta, then Bernoulli
    per lesion (lesions of one patient tend to share their outcome)."""
    a = mix.patient_concordance
    p = rng.beta(a * mix.rn_prevalence, a * (1 - mix.rn_prevalence))
    return [int(v) for v in rng.random(n_lesions) < p]


def draw_patient(rng: np.random.Generator, labels: list[int], mix: CaseMix) -> dict:
    """Patient-level variables (age, sex, GPA, primary) given the patient's lesion labels."""
    rn_share = float(np.mean(labels))
    codes = sorted(mix.primary_weights)
    base = np.array([mix.primary_weights[c] for c in codes], float)
    # Bayes: P(primary | outcome) ∝ P(primary) · P(outcome | primary)
    odds = np.array([PROGRESSION_ODDS[c] for c in codes])
    p_prog_given_primary = odds / (1 + odds)
    likelihood = rn_share * (1 - p_prog_given_primary) + (1 - rn_share) * p_prog_given_primary
    weights = base * likelihood
    primary = int(rng.choice(codes, p=weights / weights.sum()))
    if primary in FEMALE_ONLY:
        sex = 1
    else:
        sex = int(rng.choice([1, 2], p=[0.42, 0.58] if primary in (4, 5, 7) else [0.5, 0.5]))
    # RN patients live long enough to develop it: younger, better prognostic score
    age = float(np.clip(rng.normal(62 - 3.5 * rn_share, 11), 25, 88))
    gpa = float(np.clip(np.round(rng.normal(2.0 + 0.45 * rn_share, 0.8) * 2) / 2, 0, 4))
    return {"age": round(age, 1), "sex": sex, "gpa": gpa, "primary": primary}


def draw_lesion(rng: np.random.Generator, label: int) -> dict:
    """Lesion-level treatment variables given the lesion's label (1 = RN)."""
    single = rng.random() < (0.78 if label == 1 else 0.6)
    if single:
        fractions = 1
        dose = np.clip(rng.normal(20.5 if label == 1 else 18.5, 2.0), 14, 24)
    else:
        fractions = int(rng.choice([3, 5]))
        dose = rng.uniform(24, 27) if fractions == 3 else rng.uniform(25, 35)
    months = np.exp(rng.normal(np.log(10.5), 0.5) if label == 1 else rng.normal(np.log(7.5), 0.65))
    steroids = int(rng.random() < (0.5 if label == 1 else 0.28))
    return {"dose_gy": float(np.round(dose * 2) / 2), "fractions": fractions,
            "months_since_srs": round(float(np.clip(months, 1.0, 60.0)), 1),
            "steroids": steroids}


def blank_some(rng: np.random.Generator, values: dict, rate: float,
               keep: tuple[str, ...] = ("primary", "sex")) -> dict:
    """Leave a few values missing, as in real spreadsheets (each with probability ``rate``)."""
    return {k: (None if k not in keep and rng.random() < rate else v) for k, v in values.items()}
