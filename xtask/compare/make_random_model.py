#!/usr/bin/env python3
"""Write a full-size model with random bf16 weights, to measure loading time and memory.

    python xtask/compare/make_random_model.py gemma2-2b OUT_DIR
    python xtask/compare/make_random_model.py llama31-8b OUT_DIR

Needs torch and transformers. The shapes are those of the published models (Gemma 2 2B,
Llama 3.1 8B with its `llama3` RoPE scaling); nothing is downloaded. The tokenizer is the
tiny word-level one of the test fixtures (the vocabulary size comes from the config), enough
for `monoscope model info` and `monoscope model run --text "t5 t9 ..."`.
"""

import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

FIXTURES = Path(__file__).resolve().parents[2] / "crates/monoscope-lm/tests/fixtures/transformers"

SHAPES = {
    "gemma2-2b": lambda: (Gemma2ForCausalLM, Gemma2Config(
        hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, intermediate_size=9216, vocab_size=256000, max_position_embeddings=8192,
        query_pre_attn_scalar=256, sliding_window=4096, bos_token_id=0, eos_token_id=1,
        pad_token_id=None)),
    "llama31-8b": lambda: (LlamaForCausalLM, LlamaConfig(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=0, eos_token_id=1)),
}


def main():
    shape, out = sys.argv[1], sys.argv[2]
    start = time.time()
    model_class, config = SHAPES[shape]()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("meta"):
        model = model_class(config)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_((torch.randn(p.shape, generator=generator, dtype=torch.float32) * 0.02)
                    .to(torch.bfloat16))
    n = sum(p.numel() for p in model.parameters())
    print(f"{shape}: {n / 1e9:.2f}B parameters in {time.time() - start:.0f} s", flush=True)
    model.save_pretrained(out, max_shard_size="4GB")
    shutil.copy(FIXTURES / "llama/tokenizer.json", out)
    print(f"saved to {out} after {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
