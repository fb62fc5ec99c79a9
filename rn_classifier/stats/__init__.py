"""Statistics of the study: pROC-equivalent DeLong AUC tests, bootstrap CIs, operating points,
calibration, decision curves and multiple-comparison correction.

Arguments follow scikit-learn's order ``(y_true, score...)``; label 1 = radiation necrosis
(positive class), and a higher score always means "more likely 1" (no automatic flipping).
The compare stage (:mod:`.compare`) reads only predictions files (seam 2) and writes stats.json.
"""

import importlib

# Public name -> submodule. Loaded on first use (PEP 562) so that `rn-classifier --help`
# and the other stages' commands do not pay for importing scipy.stats and statsmodels.
_EXPORTS = {
    "bootstrap": ("BootstrapCI", "bootstrap_auc", "bootstrap_auc_difference",
                  "bootstrap_auc_replicates"),
    "calibration": ("LogisticCalibration", "Recalibrator", "ReliabilityCurve", "brier_score",
                    "calibration_slope_intercept", "expected_calibration_error",
                    "reliability_curve"),
    "decision_curve": ("DecisionCurve", "decision_curve"),
    "delong": ("AUCResult", "DeLongCovariance", "PairedDeLongResult", "UnpairedDeLongResult",
               "auc_delong", "delong_covariance", "delong_paired", "delong_unpaired",
               "paired_test_from_covariance"),
    "multiple": ("holm",),
    "thresholds": ("ThresholdMetrics", "YoudenThreshold", "metrics_at_threshold",
                   "wilson_interval", "youden_threshold"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_MODULE_OF))


__all__ = [
    "AUCResult", "BootstrapCI", "DeLongCovariance", "DecisionCurve", "LogisticCalibration",
    "PairedDeLongResult", "Recalibrator", "ReliabilityCurve", "ThresholdMetrics",
    "UnpairedDeLongResult", "YoudenThreshold", "auc_delong", "bootstrap_auc",
    "bootstrap_auc_difference", "bootstrap_auc_replicates", "brier_score",
    "calibration_slope_intercept", "decision_curve", "delong_covariance", "delong_paired",
    "delong_unpaired", "expected_calibration_error", "holm", "metrics_at_threshold",
    "paired_test_from_covariance", "reliability_curve", "wilson_interval", "youden_threshold",
]
