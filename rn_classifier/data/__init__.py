"""The cohort data layer: ingest, manifests, MOLAB import, synthetic cohort, checks, cache."""
