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
	@echo "make prompts  stage 1 only; also: images, activations, separability, bias, report"
	@echo "make gpu-check  every CUDA path on tiny local models, then the benchmarks (bench/results/)"

# Debian packages the tools need (root only; skipped where already present).
system-deps:
	@if [ ! -f /usr/share/wordnet/data.noun ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq wordnet-base; fi

$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: system-deps $(STAMP)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
$(eval $(call params,generate,$(GEN_MODEL) $(STEPS) $(GUIDANCE) $(SIZE) $(QUANTIZE)))
$(eval $(call params,hooks,$(CNN) $(WEIGHTS)))
$(eval $(call params,stats,$(PERMUTATIONS) $(SEED)))

# A run with failed records still writes images.jsonl (the failed rows hold the errors); ageing it
# makes the next make retry them (finished images come from the cache).
$(OUT)/images/%/images.jsonl: $(OUT)/prompts/%.jsonl $(OUT)/.params/generate | $(STAMP)
	$(BIN)/sd-generate $< --out $(@D) --model $(GEN_MODEL) --steps $(STEPS) --guidance $(GUIDANCE) \
		--size $(SIZE) --batch-size $(GEN_BATCH) --quantize $(QUANTIZE) $(CACHE_ARG) \
		|| { touch -c -d @0 $@ 2>/dev/null; exit 1; }

# A tiny random SD3 pipeline (about 2 MB, built from configs, no download) for tests and the offline demo.
TINY_SD3 := models/tiny-sd3
$(TINY_SD3)/model_index.json: shared/tiny_models.py | $(STAMP)
	$(BIN)/python -m synthprobe.tiny_models $(@D)

.PHONY: tiny-models
tiny-models: $(TINY_SD3)/model_index.json

# cnn-hooks resumes an unfinished store and refuses one made with another model or images:
# new images or a new CNN or WEIGHTS start a new store, an interrupted run resumes.
# .done is written on success.
$(OUT)/acts/%.done: $(OUT)/images/%/images.jsonl $(OUT)/.params/hooks | $(STAMP)
	@mkdir -p $(OUT)/acts; cat $(OUT)/.params/hooks $< | cksum > $(OUT)/acts/$*.params.new
	@cmp -s $(OUT)/acts/$*.params.new $(OUT)/acts/$*.params || rm -rf $(OUT)/acts/$*.zarr
	mv $(OUT)/acts/$*.params.new $(OUT)/acts/$*.params
	$(BIN)/cnn-hooks $(<D) --out $(OUT)/acts/$*.zarr --model $(CNN) --weights $(WEIGHTS) --batch-size $(HOOK_BATCH)
	touch $@

$(OUT)/separability/concepts/summary.json: $(OUT)/acts/concepts.done $(OUT)/.params/stats
	$(BIN)/separability $(OUT)/acts/concepts.zarr --out $(@D) --group concept $(STATS_ARGS)

$(OUT)/separability/bias/summary.json: $(OUT)/acts/bias.done $(OUT)/.params/stats
	$(BIN)/separability $(OUT)/acts/bias.zarr --out $(@D) --group object-only,mixed $(STATS_ARGS)

$(OUT)/bias/summary.json: $(OUT)/acts/bias.done $(OUT)/prompts/bias.jsonl
	$(BIN)/bias-report $(OUT)/acts/bias.zarr --out $(@D) --prompts $(OUT)/prompts/bias.jsonl --classes $(BIAS_CLASSES)

.PHONY: images activations separability bias
images: $(OUT)/images/concepts/images.jsonl $(OUT)/images/bias/images.jsonl
activations: $(OUT)/acts/concepts.done $(OUT)/acts/bias.done
separability: $(OUT)/separability/concepts/summary.json $(OUT)/separability/bias/summary.json
bias: $(OUT)/bias/summary.json

ANALYSES := $(OUT)/separability/concepts/summary.json $(OUT)/separability/bias/summary.json $(OUT)/bias/summary.json
$(OUT)/report.html: $(ANALYSES) $(wildcard templates/*.j2)
	$(BIN)/report --separability $(OUT)/separability/concepts --separability $(OUT)/separability/bias \
		--bias $(OUT)/bias --images $(OUT)/images/concepts --images $(OUT)/images/bias \
		$(if $(REPORT_NOTICE),--notice "$(REPORT_NOTICE)") -o $@

.PHONY: report all preflight demo
report: $(OUT)/report.html

# Stops at once, saying what to do, when the generator or the CNN weights cannot be had.
preflight: | $(STAMP)
	$(BIN)/python -m synthprobe.preflight --generator $(GEN_MODEL) --cnn $(CNN) --weights $(WEIGHTS)

all: preflight
	$(MAKE) report

# The whole pipeline offline on toy models: a tiny random SD3 and an untrained ResNet-50.
DEMO := OUT=out/demo GEN_MODEL=$(TINY_SD3) STEPS=2 SIZE=64 QUANTIZE=none WEIGHTS=none \
	SYNSETS=dog.n.01,cat.n.01,car.n.01,apple.n.01,chair.n.01,tree.n.01 PER_SYNSET=4 \
	BIAS_CLASSES=bee,frog,guitar PER_GROUP=2 SEEDS_PER_PROMPT=2 PERMUTATIONS=200 \
	REPORT_NOTICE="Demo run on toy models (a tiny random Stable Diffusion 3 and an untrained ResNet-50): it shows that the pipeline works, not what ResNet-50 learned."
demo: $(TINY_SD3)/model_index.json
	$(MAKE) report $(DEMO)
	@echo "Open out/demo/report.html"

# Every CUDA path on tiny models built here, then the benchmarks; no network. Without CUDA: the CPU parts.
.PHONY: gpu-check
gpu-check: | $(STAMP)
	$(BIN)/python bench/gpu_check.py
