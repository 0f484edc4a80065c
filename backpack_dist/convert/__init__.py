"""Hugging Face interop (python -m backpack_dist.convert): the authors' Backpack format
(BackpackGPT2LMHeadModel) and transformers' GPT2LMHeadModel, to and from our exports.

  layout.py        weight names and orientation, the inverse-layer scaling fold
  hf_config.py     config.json <-> ModelConfig
  weights.py       reading an HF folder's weights and matching them to a config
  hf_tokenizer.py  the folder's tokenizer, and tokenizer files for AutoTokenizer
  hub.py           SRC as a local folder or a Hub id
  read_hf.py       an HF folder as our state dict (load_pretrained reads such folders directly)
  write_hf.py      our model as an HF folder
"""
