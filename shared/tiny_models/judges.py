"""The tiny judges of image-check: a CLIP model and an OWLv2 detector, seeded random weights."""

from __future__ import annotations

from pathlib import Path

from synthprobe.tiny_models.text import tiny_clip_tokenizer

# The two towers of the tiny CLIP and the tiny OWLv2: 32 px images, patch 8, two layers each.
TINY_VISION = dict(
    image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2
)


def tiny_text_config(tokenizer) -> dict:
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return dict(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=end,
        pad_token_id=end,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
    )


def build_tiny_clip():
    """A CLIPModel (32 px images, patch 8, two layers per tower) and its CLIPProcessor, seeded random weights."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_clip_tokenizer()
    text, vision = tiny_text_config(tokenizer), TINY_VISION
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def save_tiny_clip(folder: str | Path) -> Path:
    """Write the tiny CLIP model and processor to ``folder`` (about 300 kB) with save_pretrained."""
    return save_tiny_model(folder, build_tiny_clip)


def build_tiny_owlv2():
    """An Owlv2ForObjectDetection with the tiny CLIP's towers (16 boxes on a 32 px image) and its Owlv2Processor,
    seeded random weights; box scores lie between sigmoid(-1) and sigmoid(1). The class head maps image features
    into the text tower's width, so the projection dimension equals it."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = tiny_clip_tokenizer()
    text = tiny_text_config(tokenizer)
    torch.manual_seed(0)
    config = Owlv2Config(text_config=text, vision_config=TINY_VISION, projection_dim=text["hidden_size"])
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():  # random logit scales saturate every score at 0 or 1; unit scale leaves the cosine, -1..1
        for layer in (model.class_head.logit_shift, model.class_head.logit_scale):
            layer.weight.zero_()
            layer.bias.zero_()
    images = Owlv2ImageProcessor(size={"height": 32, "width": 32})
    return model, Owlv2Processor(image_processor=images, tokenizer=tokenizer)


def save_tiny_model(folder: str | Path, build) -> Path:
    """Write a tiny judge's model and processor (``build()``) to ``folder`` with save_pretrained."""
    folder = Path(folder)
    model, processor = build()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
