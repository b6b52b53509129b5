# synthprobe: every stage is a target; a stage whose inputs and parameters did
# not change does no work on a rerun. Parameters live in config.mk.
include config.mk

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-synthprobe
CONCEPT_SOURCE := $(if $(SYNSETS),--synsets $(SYNSETS),$(if $(CORE_WORDNET),--core-wordnet $(CORE_WORDNET)))
STATS_ARGS = --permutations $(PERMUTATIONS) --seed $(SEED)

.PHONY: help setup system-deps test prompts FORCE
.DEFAULT_GOAL := help

help:
	@echo "make all      the whole study with the real models (see config.mk)"
	@echo "make demo     the whole pipeline offline on tiny models"
	@echo "make test     install what is needed and run the test suite"
	@echo "make prompts  stage 1 only; also: images, checks, activations, separability, bias, report"
	@echo "make transfer REAL=DIR  the same classifiers on photos of the concept synsets, against the generated images"
	@echo "make gpu-check  every CUDA path on tiny local models, then the benchmarks (bench/results/)"

# Debian packages the tools and tests need: installed as root, else the apt command to run.
system-deps:
	@PYTHON=$(PYTHON) scripts/system-deps

$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,dask]'
	touch $@

setup: system-deps $(STAMP)

# A model's float output differs in its last digits between CPUs, instruction sets and thread counts: the golden
# tests run again on other kernels (torch's scalar ones, oneDNN and MKL at SSE4, numpy without the SIMD it dispatches
# to on this CPU, one thread), so that a golden only this machine passes fails here, not on a user's machine.
NUMPY_DISPATCHED = $(BIN)/python -c 'import numpy as np; m = np._core._multiarray_umath if hasattr(np, "_core") \
	else np.core._multiarray_umath; print(*(f for f in m.__cpu_dispatch__ if m.__cpu_features__.get(f)))'
OTHER_KERNELS = ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 OMP_NUM_THREADS=1 \
	NPY_DISABLE_CPU_FEATURES="$$($(NUMPY_DISPATCHED))"

# The lint and format gate runs first: CI runs make test.
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(OTHER_KERNELS) $(BIN)/python -m pytest -q $(PYTEST_ARGS) -m golden

# Each stage's parameters go into a file that changes only when they do, so
# make reruns exactly the stages whose parameters changed.
define params
$(OUT)/.params/$(1): FORCE
	@mkdir -p $$(@D); echo '$(2)' | cmp -s - $$@ || echo '$(2)' > $$@
endef
FORCE:

$(eval $(call params,concepts,$(SYNSETS) $(CORE_WORDNET) $(N_SYNSETS) $(PER_SYNSET) $(SEED)))
$(eval $(call params,bias-prompts,$(BIAS_CLASSES) $(PER_GROUP) $(SEEDS_PER_PROMPT) $(SEED)))

$(OUT)/prompts/concepts.jsonl: $(OUT)/.params/concepts | $(STAMP)
	$(BIN)/wn-prompts concepts $(CONCEPT_SOURCE) $(if $(SYNSETS),,--n-synsets $(N_SYNSETS)) --per-synset $(PER_SYNSET) --seed $(SEED) -o $@

$(OUT)/prompts/bias.jsonl: $(OUT)/.params/bias-prompts $(wildcard data/bias_classes/*.json) | $(STAMP)
	$(BIN)/wn-prompts bias --classes $(BIAS_CLASSES) --per-group $(PER_GROUP) \
		--seeds-per-prompt $(SEEDS_PER_PROMPT) --seed $(SEED) -o $@

prompts: $(OUT)/prompts/concepts.jsonl $(OUT)/prompts/bias.jsonl

# ---- stages after the prompts ------------------------------------------------
CACHE_ARG := $(if $(IMAGE_CACHE),--cache $(IMAGE_CACHE))
DASK_ARG = $(if $(DASK),--dask $(DASK))
$(eval $(call params,generate,$(GEN_MODEL) steps=$(STEPS) guidance=$(GUIDANCE) size=$(SIZE) $(QUANTIZE)))
$(eval $(call params,stats,$(PERMUTATIONS) $(SEED)))

# A run with failed records still writes images.jsonl (the failed rows hold the errors); ageing it
# makes the next make retry them (finished images come from the cache).
$(OUT)/images/%/images.jsonl: $(OUT)/prompts/%.jsonl $(OUT)/.params/generate | $(STAMP)
	$(BIN)/sd-generate $< --out $(@D) --model $(GEN_MODEL) $(if $(STEPS),--steps $(STEPS)) \
		$(if $(GUIDANCE),--guidance $(GUIDANCE)) $(if $(SIZE),--size $(SIZE)) --batch-size $(GEN_BATCH) \
		--quantize $(QUANTIZE) $(CACHE_ARG) $(DASK_ARG) \
		|| { touch -c -d @0 $@ 2>/dev/null; exit 1; }

# A tiny random SD3 pipeline (about 2 MB, built from configs, no download) for tests and the offline demo;
# `python -m synthprobe.tiny_models --family sdxl|flux|pixart-sigma DIR` writes the other families'.
TINY_SD3 := models/tiny-sd3
$(TINY_SD3)/model_index.json: $(wildcard shared/tiny_models/*.py) | $(STAMP)
	$(BIN)/python -m synthprobe.tiny_models $(@D)

# A tiny random CLIP (about 250 kB) for the image check of the offline demo.
TINY_CLIP := models/tiny-clip
$(TINY_CLIP)/config.json: $(wildcard shared/tiny_models/*.py) | $(STAMP)
	$(BIN)/python -m synthprobe.tiny_models --clip $(@D)

.PHONY: tiny-models
tiny-models: $(TINY_SD3)/model_index.json $(TINY_CLIP)/config.json

# image-check scores only images its checks.jsonl lacks; a failed run ages the file so make retries.
$(eval $(call params,checks,$(JUDGE) $(JUDGE_WEIGHTS) $(MISSING_BELOW) $(LEAKED_ABOVE) $(AUDIT)))
$(OUT)/checks/%/checks.jsonl: $(OUT)/images/%/images.jsonl $(OUT)/.params/checks | $(STAMP)
	$(BIN)/image-check $(<D) --out $(@D) --judge $(JUDGE) --weights $(JUDGE_WEIGHTS) \
		--missing-below $(MISSING_BELOW) --leaked-above $(LEAKED_ABOVE) $(if $(AUDIT),--audit $(AUDIT)) \
		--batch-size $(CHECK_BATCH) \
		|| { touch -c -d @0 $@ 2>/dev/null; exit 1; }

# Each classifier of CNNS (a model name, or MODEL=WEIGHTS for its own weights; else WEIGHTS) gets its
# stores and analyses under $(OUT)/<model, ':' as '-'>/ (cnn-hooks' {model}). One cnn-hooks call per image set
# runs them all, decoding each image once. cnn-hooks resumes an unfinished store and refuses one made with
# another model or images: new images or new weights start that classifier's store anew (its acts/SET.params,
# a checksum of its parameters and inputs, changed), an interrupted run resumes, and the other classifiers'
# stores stay (a complete one costs cnn-hooks a check). Each store's .done copies its .params when the call
# succeeds and is rewritten only when that changes, so only the changed classifier's analyses run again.
classifier_model = $(firstword $(subst =, ,$(1)))
classifier_weights = $(or $(word 2,$(subst =, ,$(1))),$(WEIGHTS))
classifier_dir = $(OUT)/$(subst :,-,$(call classifier_model,$(1)))
CLASSIFIER_PARAMS := $(foreach c,$(CNNS),$(call classifier_dir,$(c))/.params)
HOOK_MODELS := $(foreach c,$(CNNS),--model $(call classifier_model,$(c))=$(call classifier_weights,$(c)))
HOOKS = $(BIN)/cnn-hooks --out '$(OUT)/{model}/acts/$(1).zarr' $(HOOK_MODELS) --batch-size $(HOOK_BATCH) $(DASK_ARG)
# $(1): image set; $(2): what besides a classifier's .params its store is made from. A changed checksum
# deletes the store, so that cnn-hooks starts it anew.
store_params = $(foreach d,$(patsubst %/.params,%,$(CLASSIFIER_PARAMS)),mkdir -p $(d)/acts && \
	cat $(d)/.params $(2) | cksum > $(d)/acts/$(1).params.new && \
	{ cmp -s $(d)/acts/$(1).params.new $(d)/acts/$(1).params || rm -rf $(d)/acts/$(1).zarr; } && \
	mv $(d)/acts/$(1).params.new $(d)/acts/$(1).params &&) true

$(OUT)/.hooks/%.done: $(OUT)/images/%/images.jsonl $(CLASSIFIER_PARAMS) | $(STAMP)
	@$(call store_params,$*,$<)
	$(call HOOKS,$*) $(<D)
	@mkdir -p $(@D); touch $@

# The analyses count the image checks' flags and leave out the DROP verdicts (config.mk);
# CHECKS_ARGS names each rule's second prerequisite, its checks.jsonl.
$(eval $(call params,drop,$(DROP)))
CHECKS_ARGS = --checks $(word 2,$^) $(if $(DROP),--drop $(DROP))

# Real photos of the concept synsets for the transfer stage: REAL=DIR (ImageFolder or ImageNet wnid folders), or
# any folder with REAL_LABELS=FILE (a CSV path,synset). Empty: no transfer stage and no photo section.
REAL ?=
REAL_LABELS ?=
$(eval $(call params,real,$(abspath $(REAL)) $(abspath $(REAL_LABELS))))

# Photos of the concept synsets (REAL) for the transfer stage, through the same classifiers.
$(OUT)/.hooks/photos.done: $(OUT)/.params/real $(CLASSIFIER_PARAMS) $(REAL_PREREQUISITES) | $(STAMP)
	@$(call store_params,photos,$(OUT)/.params/real)
	$(call HOOKS,photos) $(REAL) $(if $(REAL_LABELS),--labels $(REAL_LABELS))
	@mkdir -p $(@D); touch $@

define classifier
$(1)/acts/%.done: $(OUT)/.hooks/%.done
	@cmp -s $$(@D)/$$*.params $$@ || cp $$(@D)/$$*.params $$@

$(1)/.params: FORCE
	@mkdir -p $$(@D); echo '$(2) $(3)' | cmp -s - $$@ || echo '$(2) $(3)' > $$@

$(1)/separability/concepts/summary.json: $(1)/acts/concepts.done $(OUT)/checks/concepts/checks.jsonl $(OUT)/.params/stats $(OUT)/.params/drop
	$(BIN)/separability $(1)/acts/concepts.zarr --out $$(@D) --group concept $(STATS_ARGS) $$(CHECKS_ARGS)

$(1)/separability/bias/summary.json: $(1)/acts/bias.done $(OUT)/checks/bias/checks.jsonl $(OUT)/.params/stats $(OUT)/.params/drop
	$(BIN)/separability $(1)/acts/bias.zarr --out $$(@D) --group object-only,mixed $(STATS_ARGS) $$(CHECKS_ARGS)

$(1)/bias/summary.json: $(1)/acts/bias.done $(OUT)/checks/bias/checks.jsonl $(OUT)/prompts/bias.jsonl $(OUT)/.params/drop
	$(BIN)/bias-report $(1)/acts/bias.zarr --out $$(@D) --prompts $(OUT)/prompts/bias.jsonl --classes $(BIAS_CLASSES) $$(CHECKS_ARGS)

# The transfer against the concept images, on the photos' store.
$(1)/transfer/summary.json: $(1)/acts/concepts.done $(1)/acts/photos.done $(OUT)/.params/stats
	$(BIN)/transfer $(1)/acts/concepts.zarr $(1)/acts/photos.zarr -o $$(@D) $(STATS_ARGS)

TRANSFER += $(1)/transfer/summary.json
REPORT_TRANSFER += --transfer $(1)/transfer
ACTIVATIONS += $(1)/acts/concepts.done $(1)/acts/bias.done
SEPARABILITY += $(1)/separability/concepts/summary.json $(1)/separability/bias/summary.json
BIAS += $(1)/bias/summary.json
REPORT_INPUTS += --separability $(1)/separability/concepts --separability $(1)/separability/bias --bias $(1)/bias
endef
$(foreach c,$(CNNS),$(eval $(call classifier,$(call classifier_dir,$(c)),$(call classifier_model,$(c)),$(call classifier_weights,$(c)))))

.PHONY: images checks activations separability bias transfer
images: $(OUT)/images/concepts/images.jsonl $(OUT)/images/bias/images.jsonl
CHECKS := $(OUT)/checks/concepts/checks.jsonl $(OUT)/checks/bias/checks.jsonl
checks: $(CHECKS)
activations: $(ACTIVATIONS)
separability: $(SEPARABILITY)
bias: $(BIAS)
transfer: $(if $(REAL),$(TRANSFER))
	@$(if $(REAL),true,echo "make transfer needs REAL=DIR, a folder of photos of the concept synsets" >&2; exit 2)

$(OUT)/report.html: $(SEPARABILITY) $(BIAS) $(CHECKS) $(if $(REAL),$(TRANSFER)) $(wildcard templates/*.j2)
	$(BIN)/report $(REPORT_INPUTS) $(if $(REAL),$(REPORT_TRANSFER)) --images $(OUT)/images/concepts --images $(OUT)/images/bias \
		$(foreach c,$(CHECKS),--checks $(dir $(c))) $(if $(REPORT_NOTICE),--notice "$(REPORT_NOTICE)") -o $@

.PHONY: report all preflight demo
report: $(OUT)/report.html

# Stops at once, saying what to do, when the generator or the CNN weights cannot be had.
preflight: | $(STAMP)
	$(foreach c,$(CNNS),$(BIN)/python -m synthprobe.tools.preflight --generator $(GEN_MODEL) --cnn $(call classifier_model,$(c)) --weights $(call classifier_weights,$(c)) &&) true

all: preflight
	$(MAKE) report

# The whole pipeline offline on toy models: a tiny random SD3, a tiny random CLIP judge and an untrained ResNet-50;
# its photo side is crops of scikit-image's public-domain photos (a cat, coffee, a rocket, an astronaut).
DEMO_PHOTOS := out/demo/photos
DEMO := OUT=out/demo GEN_MODEL=$(TINY_SD3) STEPS=2 SIZE=64 QUANTIZE=none WEIGHTS=none JUDGE=clip:$(TINY_CLIP) \
	SYNSETS=dog.n.01,cat.n.01,car.n.01,apple.n.01,chair.n.01,tree.n.01,coffee.n.01,rocket.n.01,astronaut.n.01 \
	PER_SYNSET=4 REAL=$(DEMO_PHOTOS) REAL_PREREQUISITES=$(DEMO_PHOTOS).done \
	BIAS_CLASSES=bee,frog,guitar PER_GROUP=2 SEEDS_PER_PROMPT=2 PERMUTATIONS=200 \
	REPORT_NOTICE="Demo run on toy models (a tiny random Stable Diffusion 3 and an untrained ResNet-50): it shows that the pipeline works, not what ResNet-50 learned."
$(DEMO_PHOTOS).done: shared/transfer/demo_photos.py | $(STAMP)
	rm -rf $(DEMO_PHOTOS) && $(BIN)/python -m synthprobe.transfer.demo_photos $(DEMO_PHOTOS)
	touch $@

demo: $(TINY_SD3)/model_index.json $(TINY_CLIP)/config.json $(DEMO_PHOTOS).done
	@$(MAKE) --no-print-directory -s report $(DEMO)
	@echo "Open out/demo/report.html"

# Every CUDA path on tiny models built here, then the benchmarks; no network. Without CUDA: the CPU parts.
.PHONY: gpu-check
gpu-check: | $(STAMP)
	$(BIN)/python bench/gpu_check.py
