# Two entry points on a fresh machine: `make repro` (install, then run the pipeline) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(BIN):$(PATH)

.PHONY: install repro lint test test-fast test-faults bench bench-extract bench-extract-speed bench-clustering bench-pretrain bench-finetune bench-quality bench-ablation bench-turtle bench-choose-k bench-choose-method bench-auto-screen bench-report-size bench-size-prior bench-size-prior-long-tail bench-turtle-few-rows bench-referee-space bench-referee-space-lite2

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

repro: install
	dvc repro

lint: install
	ruff check .
	ruff format --check .

test: lint
	OMP_NUM_THREADS=1 python -m pytest -ra --durations=10 -n 2 --dist loadfile --no-loadscope-reorder --max-worker-restart=0

test-fast: install
	python -m pytest -ra -m "not slow"

test-faults: install
	python -m pytest -ra -m faults

bench: install
	python benchmarks/digits.py --out benchmarks/results/digits.json

bench-extract: install
	python benchmarks/extract.py --out benchmarks/results/extract.json

bench-extract-speed: install
	python benchmarks/extract_speed.py --out benchmarks/results/extract_speed.json

bench-clustering: install
	python benchmarks/clustering.py --out benchmarks/results/clustering.json

bench-pretrain: install
	python benchmarks/pretrain_throughput.py --out benchmarks/results/pretrain_throughput.json
	python benchmarks/pretrain.py --out benchmarks/results/pretrain.json

bench-finetune: install
	python benchmarks/finetune.py --out benchmarks/results/finetune.json

bench-quality: install
	python benchmarks/quality.py --out benchmarks/results/quality.json

# FEATURES: an extract stage's output, e.g. a quality.py --workdir clone's artifacts/features
bench-turtle: install
	python benchmarks/turtle.py --features $(FEATURES) --setting default --setting restarts=1 \
		--setting "restarts=1 init=random" --setting "restarts=1 outer_lr=0.03" \
		--setting "restarts=1 whiten=true" --setting "restarts=1 warm_start=false" --out benchmarks/results/turtle.json

# DATA: one or more --data NAME=PROJECT[:SPACE] (projects whose extract stage ran; see the script)
bench-choose-k: install
	python benchmarks/choose_k.py $(DATA) --out benchmarks/results/choose_k.json --docs

bench-choose-method: install   # RUNS="--run NAME=PROJECT[:SPLIT] ..."
	python benchmarks/choose_method.py $(RUNS) --out benchmarks/results/choose_method.json --docs

bench-auto-screen: install   # RUNS="--run NAME=PROJECT[:SPLIT] ..."
	python benchmarks/auto_screen.py $(RUNS) --screen-rows 3000 10000 none --out benchmarks/results/auto_screen.json --docs

bench-report-size: install   # a folder of 10,000 photo-sized JPEGs through photos_frozen: the report, git
	python benchmarks/report_size.py --out benchmarks/results/report_size.json

# DATA: one or more --data NAME=PROJECT (projects whose extract stage ran)
bench-size-prior: install
	python benchmarks/size_prior.py $(DATA) --seeds 0 1 2 --per-class 150 --out benchmarks/results/size_prior.json --docs

# DATA as for bench-size-prior: the same draws with size_prior long_tail at three imbalance ratios
bench-size-prior-long-tail: install
	python benchmarks/size_prior.py $(DATA) --seeds 0 1 2 --per-class 150 --long-tail 3 10 30 \
		--out benchmarks/results/size_prior_long_tail.json --docs

# DATA as for bench-size-prior: TURTLE's components fixed against the rows_per_component cap, on the same draws
bench-turtle-few-rows: install
	python benchmarks/turtle_few_rows.py $(DATA) --dims 256 64 32 --caps 25 --seeds 0 1 2 --out benchmarks/results/turtle_few_rows.json

# DATA as for bench-size-prior: auto's candidates judged in spaces they were not fitted in, on the same draws
bench-referee-space: install
	python benchmarks/referee_space.py $(DATA) --referee efficientnet_lite2@160 --referee efficientnet_lite0@224 --referee efficientnet_lite1@240 --seeds 0 1 2 --per-class 150 --out benchmarks/results/referee_space.json --docs

# DATA="--data cifar10=PROJECT", a project whose extract stage ran photos_frozen's backbone (Lite2): the preset's
# candidates (TURTLE with Lite0 as a second space) on the same draws, judged in its referee and in Lite0 at 224
bench-referee-space-lite2: install
	python benchmarks/referee_space.py $(DATA) --space efficientnet_lite0@160 --referee efficientnet_lite1@240 --referee efficientnet_lite0@224 --seeds 0 1 2 --per-class 150 --out benchmarks/results/referee_space_lite2.json

bench-ablation: install
	python benchmarks/ablation.py --runs fashion_mnist --out benchmarks/results/ablation.json
