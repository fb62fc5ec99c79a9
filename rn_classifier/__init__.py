"""rn-classifier: radiation necrosis vs. tumour progression on routine T1CE MRI.

Reproduces the study of Gomaa et al. (2025), "Large-Scale Pre-training Enables Multimodal AI
Differentiation of Radiation Necrosis from Brain Metastasis Progression on Routine MRI".
Positive class everywhere: 1 = radiation necrosis, 0 = progression.
"""

__version__ = "0.1.0"
