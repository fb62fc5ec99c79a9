"""Statistics of the study: pROC-equivalent DeLong AUC tests, bootstrap CIs, operating points,
calibration, decision curves and multiple-comparison correction.

Arguments follow scikit-learn's order ``(y_true, score...)``; label 1 = radiation necrosis
(positive class), and a higher score always means "more likely 1" (no automatic flipping).
The compare stage (:mod:`.compare`) reads only predictions files (seam 2) and writes stats.json.
"""

from .bootstrap import (BootstrapCI, bootstrap_auc, bootstrap_auc_difference,
                        bootstrap_auc_replicates)
from .calibration import (LogisticCalibration, Recalibrator, ReliabilityCurve, brier_score,
                          calibration_slope_intercept, expected_calibration_error,
                          reliability_curve)
from .decision_curve import DecisionCurve, decision_curve
from .delong import (AUCResult, DeLongCovariance, PairedDeLongResult, UnpairedDeLongResult,
                     auc_delong, delong_covariance, delong_paired, delong_unpaired,
                     paired_test_from_covariance)
from .multiple import holm
from .thresholds import (ThresholdMetrics, YoudenThreshold, metrics_at_threshold,
                         wilson_interval, youden_threshold)

__all__ = [
    "AUCResult", "BootstrapCI", "DeLongCovariance", "DecisionCurve", "LogisticCalibration",
    "PairedDeLongResult", "Recalibrator", "ReliabilityCurve", "ThresholdMetrics",
    "UnpairedDeLongResult", "YoudenThreshold", "auc_delong", "bootstrap_auc",
    "bootstrap_auc_difference", "bootstrap_auc_replicates", "brier_score",
    "calibration_slope_intercept", "decision_curve", "delong_covariance", "delong_paired",
    "delong_unpaired", "expected_calibration_error", "holm", "metrics_at_threshold",
    "paired_test_from_covariance", "reliability_curve", "wilson_interval", "youden_threshold",
]
