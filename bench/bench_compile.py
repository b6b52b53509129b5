"""torch.compile of an SD3 transformer against eager (random weights, built from a config; nothing is downloaded).

Reports the first compiled call's seconds (the compilation), denoiser forwards per second eager and compiled, the
images per second they mean at 28 steps, and the largest difference of the outputs relative to their scale.
The default shape is an SD 3.5 Medium block (24 heads of 64) with 4 of its 24 layers, on a 512 px latent in bf16:
large enough that kernels, not Python, set the pace on a GPU, small enough to compile quickly (not yet timed on a GPU).
Usage: python bench/bench_compile.py [--device cuda] [--layers 4] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

MEDIUM = {"heads": 24, "head_dim": 64, "latent": 64, "text_tokens": 154, "text_dim": 4096, "pooled_dim": 2048}
# The tiny SD3 of the test suite, for a CPU smoke run.
TINY = {"heads": 4, "head_dim": 8, "latent": 16, "text_tokens": 8, "text_dim": 32, "pooled_dim": 64}
STEPS = 28  # SD 3.5 Large's default steps: forwards per image at guidance 1 (twice as many with guidance)


def transformer(shape: dict, layers: int, device: str, dtype):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    width = shape["heads"] * shape["head_dim"]
    model = SD3Transformer2DModel(
        sample_size=shape["latent"],
        patch_size=2,
        in_channels=16,
        num_layers=layers,
        attention_head_dim=shape["head_dim"],
        num_attention_heads=shape["heads"],
        joint_attention_dim=shape["text_dim"],
        caption_projection_dim=width,
        pooled_projection_dim=shape["pooled_dim"],
        out_channels=16,
    )
    return model.to(device, dtype).eval()


def inputs(shape: dict, batch: int, device: str, dtype) -> dict:
    generator = torch.Generator("cpu").manual_seed(1)

    def noise(*size):
        return torch.randn(*size, generator=generator).to(device, dtype)

    return {
        "hidden_states": noise(batch, 16, shape["latent"], shape["latent"]),
        "encoder_hidden_states": noise(batch, shape["text_tokens"], shape["text_dim"]),
        "pooled_projections": noise(batch, shape["pooled_dim"]),
        "timestep": torch.full((batch,), 500.0, device=device),
        "return_dict": False,
    }


def forwards_per_second(model, args: dict, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    def call():
        with torch.no_grad():
            out = model(**args)[0]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    call()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = call()
    return repeats / (time.perf_counter() - start), out


def run(
    device: str = "cuda",
    layers: int = 4,
    batch: int = 2,
    repeats: int = 10,
    shape: dict = MEDIUM,
    backend: str = "inductor",
    dtype: str = "bfloat16",
) -> dict:
    torch_dtype = getattr(torch, dtype)
    model = transformer(shape, layers, device, torch_dtype)
    args = inputs(shape, batch, device, torch_dtype)
    eager, reference = forwards_per_second(model, args, repeats, device)
    model.compile(backend=backend)
    start = time.perf_counter()
    with torch.no_grad():
        model(**args)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    compile_seconds = time.perf_counter() - start
    compiled, out = forwards_per_second(model, args, repeats, device)
    scale = float(reference.float().abs().max())
    return {
        "device": device,
        "backend": backend,
        "dtype": dtype,
        "layers": layers,
        "batch": batch,
        "shape": shape,
        "compile_seconds": compile_seconds,
        "eager_forwards_per_s": eager,
        "compiled_forwards_per_s": compiled,
        "eager_images_per_s": eager * batch / STEPS,
        "compiled_images_per_s": compiled * batch / STEPS,
        "speedup": compiled / eager,
        "max_rel_diff": float((out.float() - reference.float()).abs().max()) / max(scale, 1e-12),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="the tiny SD3's shape, fp32 (a CPU smoke run)")
    args = parser.parse_args()
    shape, dtype = (TINY, "float32") if args.tiny else (MEDIUM, "bfloat16")
    print(json.dumps(run(args.device, args.layers, args.batch, args.repeats, shape, dtype=dtype), indent=2))


if __name__ == "__main__":
    main()
