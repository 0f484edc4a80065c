"""python -m backpack_dist.model: parameter counts and training FLOPs of the six models."""

import torch

from . import MODEL_NAMES, build_model
from .flops import parameter_counts, training_flops_per_token


def main():
    print("| model | total params | non-embedding params | training GFLOPs/token |")
    print("|---|---|---|---|")
    for name in MODEL_NAMES:
        with torch.device("meta"):
            model = build_model(name)
        counts = parameter_counts(model)
        gflops = training_flops_per_token(model.config) / 1e9
        print(f"| {name} | {counts['total'] / 1e6:.1f}M | {counts['non_embedding'] / 1e6:.1f}M | {gflops:.3f} |")


if __name__ == "__main__":
    main()
