"""SYNTHETIC MOLAB-like cohort: a stand-in for patient data, clearly labelled as such.

``make_synthetic_cohort(out, preset, seed)`` writes an internal centre, an external centre and
an unlabeled pretraining pool in MOLAB's layout, then their manifests through the MOLAB
importer. Modules: ``geometry`` (grids, poses), ``anatomy`` (MNI152 head, deformation, T1CE
contrast), ``lesions`` (RN vs progression phenotypes), ``clinical`` (clinical variables and the
spreadsheet layout), ``centers`` (scanner / domain shift), ``presets`` (sizes), ``writer``
(reproducible files), ``cohort`` (the builder).
"""

from .cohort import make_synthetic_cohort
from .presets import PRESETS, get_preset

__all__ = ["make_synthetic_cohort", "PRESETS", "get_preset"]
