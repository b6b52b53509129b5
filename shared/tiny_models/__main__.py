"""``python -m synthprobe.tiny_models [--family F | --clip | --owlv2] DIR``: write a tiny model to DIR."""

import argparse

from synthprobe.common.quiet import quiet_libraries
from synthprobe.tiny_models import BUILDERS, build_tiny_owlv2, save_tiny_clip, save_tiny_model, save_tiny_pipeline

parser = argparse.ArgumentParser(prog="python -m synthprobe.tiny_models", description=__doc__)
kind = parser.add_mutually_exclusive_group()
kind.add_argument("--family", choices=list(BUILDERS), default="sd3", help="a tiny text-to-image pipeline")
kind.add_argument("--clip", action="store_true", help="the tiny CLIP judge of image-check")
kind.add_argument("--owlv2", action="store_true", help="the tiny OWLv2 judge of image-check")
parser.add_argument("folder")
args = parser.parse_args()
quiet_libraries(silent=True)  # diffusers' notes on absent components and its save bars
if args.clip:
    print(save_tiny_clip(args.folder))
elif args.owlv2:
    print(save_tiny_model(args.folder, build_tiny_owlv2))
else:
    print(save_tiny_pipeline(args.folder, args.family))
