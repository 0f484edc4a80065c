"""Training: `python -m backpack_dist.train` (see __main__.py for the flags)."""
