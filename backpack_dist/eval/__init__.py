"""Evaluation harness: score exported models and checkpoints on the paper's benchmarks
(OpenWebText, LAMBADA, WikiText, BLiMP, lexical similarity) and tabulate them beside the paper.

Kept free of heavy imports: the lm-evaluation-harness hook imports this package at startup."""
