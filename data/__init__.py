"""Dataset discovery + validation, audit, splits, cache, batch augmentation, synthetic data."""
