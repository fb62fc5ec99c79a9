"""Baselines the paper compares against (radiomics) and the clinical-only model."""
