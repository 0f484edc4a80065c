"""Reading and steering a Backpack's sense vectors: look-up, interventions, knowledge edits,
topic-controlled generation and the gender-bias measurement of the paper. Every function takes
(model, tokenizer) and returns plain data; `python -m backpack_dist.senses` prints it."""

from .bias import bias_report
from .edit import knowledge_edit
from .generate import sample, topic_control
from .intervention import SenseScale, parse_scales, predict, sense_scales_for
from .lookup import lookup_token, lookup_word, sense_scores
from .words import SenseToolError, require_backpack, word_positions

__all__ = ["SenseScale", "SenseToolError", "bias_report", "knowledge_edit", "lookup_token", "lookup_word",
           "parse_scales", "predict", "require_backpack", "sample", "sense_scales_for", "sense_scores",
           "topic_control", "word_positions"]
