"""The training-step benchmark (python -m backpack_dist.bench) and the first-GPU-contact run.

variants: what is compared; measure: timing one variant; engine_step: the trainer's own engine step;
environment: versions and a measured matmul ceiling; report: the table; first_contact and stages:
everything a lent GPU should tell us, stage by stage; command: the command line."""
