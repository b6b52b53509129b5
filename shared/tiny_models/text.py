"""Tiny tokenizers and text encoders written locally: diffusers' test tokenizers live on the hub."""

from __future__ import annotations

import string

# T5's longest input in the tiny pipelines; the real T5 reads up to 512.
TINY_T5_MAX_LENGTH = 128


def tiny_clip_tokenizer():
    """A byte-level CLIP tokenizer with no merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # Without model_max_length the tokenizer pads prompts to 1e30 tokens.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_clip_text_config(tokenizer):
    """The CLIP text encoder of diffusers' SD3, SDXL and FLUX fast tests, sized to ``tokenizer``."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        # The pooled output is read at the eos token; a wrong id pools the wrong position.
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(tokenizer),
        hidden_act="gelu",
        projection_dim=32,
    )


def tiny_t5_tokenizer():
    """A character-level T5 tokenizer: a Unigram vocabulary of printable ASCII, with and without the word-start
    mark, so no sentencepiece model is needed; saves as tokenizer.json and loads back as T5TokenizerFast."""
    from transformers import T5TokenizerFast

    characters = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in characters] + [("\u2581" + c, -2.5) for c in characters]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=TINY_T5_MAX_LENGTH)


def tiny_t5_encoder(tokenizer):
    """The T5 encoder of hf-internal-testing/tiny-random-t5 (d_model 32, 5 layers, 4 heads), seeded."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_layers=5,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    ).eval()
