# The run's parameters, in one place. Override any of them on the command line:
#   make all N_SYNSETS=20 STEPS=20
# The tools' own defaults live in their settings dataclasses (docs/cli.md); make passes every value here
# explicitly, so these override them for make runs. They equal the tools' defaults unless a comment says
# otherwise (tests/test_cli_help.py checks).
OUT ?= out
# Image cache shared by every run (empty: ~/.cache/synthprobe/images, or $$SYNTHPROBE_CACHE/images)
IMAGE_CACHE ?=
# Core WordNet list, a file or URL (empty: the copy bundled in data/)
CORE_WORDNET ?=
SEED ?= 0

# Concept prompts: SYNSETS (comma list) instead of sampling N_SYNSETS from Core WordNet
SYNSETS ?=
N_SYNSETS ?= 10
PER_SYNSET ?= 8
# Bias prompts
BIAS_CLASSES ?= bee,frog,airplane,guitar,strawberry
# wn-prompts bias takes every prompt text of a group by default; a make run takes at most 4
PER_GROUP ?= 4
SEEDS_PER_PROMPT ?= 2

# Dask cluster for sd-generate and cnn-hooks (empty: one process): local:N for N worker processes here (one GPU
# each), a scheduler address (tcp://host:8786) or a scheduler file (scripts/dask-slurm writes one)
DASK ?=

# Generator
GEN_MODEL ?= stabilityai/stable-diffusion-3.5-large
# Empty: the model family's default (README, sd-generate), e.g. 28, 3.5 and 1024 for SD 3.5 Large
STEPS ?=
GUIDANCE ?=
SIZE ?=
GEN_BATCH ?= 1
QUANTIZE ?= auto

# Classifiers, side by side: torchvision names or timm:<name>, each optionally =WEIGHTS (a local file);
# the others take WEIGHTS. Each gets $(OUT)/<name>/; e.g. CNNS = resnet50 timm:efficientnet_lite0=lite0.pth
CNNS ?= resnet50
WEIGHTS ?= DEFAULT
HOOK_BATCH ?= 16

# Image check (image-check): the judge (clip:<hub id[@revision] or folder>, owlv2:<the same>, a torchvision
# name, or timm:<name>), its weights (classifier judges), and the verdict thresholds (docs/methods.md)
JUDGE ?= clip:openai/clip-vit-large-patch14
JUDGE_WEIGHTS ?= DEFAULT
MISSING_BELOW ?= 0.1
LEAKED_ABOVE ?= 0.5
# An image-check audit folder (image-check audit): with MISSING_BELOW=audited and/or LEAKED_ABOVE=audited its
# thresholds for JUDGE are taken
AUDIT ?=
CHECK_BATCH ?= 32
# Verdicts whose images the analyses leave out (empty: none, the flags are only counted), e.g. object-missing,object-leaked
DROP ?=

# Analyses
PERMUTATIONS ?= 1000
# A line shown at the top of the report
REPORT_NOTICE ?=
