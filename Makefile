# The README's two commands: `make demo` (main job on the simulated building) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup test demo bench-quick clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q test

demo: setup
	$(VENV)/bin/tst-ros specialize

bench-quick: setup
	@for b in convert sim record pretrain transfer perception ttt-kd specialization; do $(VENV)/bin/tst-ros bench $$b --json --quick; done

clean:
	rm -rf build install log $(VENV)
