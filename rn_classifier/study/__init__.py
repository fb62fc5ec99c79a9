"""The whole study from one config: data stages, pretraining, fine-tuning, baselines, report."""
