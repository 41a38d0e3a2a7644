# The two commands of the README. Each does all of its own set-up on a fresh Debian machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
OUT    ?= build/demo
LOCKS  := requirements/build.txt requirements/runtime.txt requirements/dev.txt

.PHONY: demo demo-retrofit test lint venv mosquitto browser fuse clean bench fuzz faults

venv: $(STAMP)

# The venv installs exactly the pinned, hash-checked versions of requirements/ (make lock).
$(STAMP): pyproject.toml $(LOCKS)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements/build.txt
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# A private broker is started by the tests and the demo; the binary comes from Debian.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || { \
	  echo "mosquitto not found: installing it from Debian (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients); }

# The status page's browser test drives Debian's chromium (Playwright via executable_path);
# Chinese text needs a CJK font. Installed from Debian where absent, like mosquitto.
browser:
	@{ test -x /usr/bin/chromium && fc-list 2>/dev/null | grep -qi 'Noto Sans CJK'; } || { \
	  echo "chromium or fonts-noto-cjk not found: installing them from Debian (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk); }

# The power-cut tests mount hil/lazyfs.py (FUSE, through mfusepy) over the agent's state
# directory: libfuse3 and fusermount3 come from Debian's fuse3, installed where absent.
fuse:
	@command -v fusermount3 >/dev/null 2>&1 || { \
	  echo "fusermount3 not found: installing fuse3 from Debian (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3); }

demo: venv mosquitto
	$(VENV)/bin/evse-hil run hil/scenarios/demo.yaml --out $(OUT)

# The retrofit kit on the bench: a Heidelberg wallbox over RS-485 that the aggregator curtails.
demo-retrofit: venv mosquitto
	$(VENV)/bin/evse-hil run hil/scenarios/retrofit-heidelberg.yaml --out build/demo-retrofit

lint: venv
	$(PY) -m ruff check agent drivers hil tests deploy
	$(PY) -m mypy agent drivers deploy/wheelhouse.py

# Unit and driver tests on every core (pytest-xdist; --dist loadfile keeps a module's fixtures in
# one worker); then the HIL tests in two workers (--dist load: no HIL fixture outlives a test).
# The HIL tests mostly wait on real time (measured: ~0.8 of one core on average over the phase),
# so two of them share the 2 cores with room for their reaction-time checks; one at a time took
# 581-651 s of the 10 minutes, two at a time 369-385 s (README, "The two commands").
test: venv mosquitto browser fuse lint
	$(PY) -m pytest -q -n auto --dist loadfile tests/unit tests/drivers
	$(PY) -m pytest -q -n 2 --dist load tests/hil

bench: venv mosquitto
	$(VENV)/bin/evse-hil bench

# The dedicated fuzz run: 10,000 malformed MQTT command payloads and 10,000 malformed Modbus
# answers on the virtual wire (make test runs a smaller budget of the same tests).
fuzz: venv
	EVSE_FUZZ_EXAMPLES=10000 $(PY) -m pytest -q tests/unit/test_api_fuzz.py
	$(PY) -m hil.fuzz --modbus --cases 10000 --seed 1

faults: venv mosquitto fuse
	$(VENV)/bin/evse-hil faults

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .hypothesis

# ---- Pinned dependencies and the offline wheelhouse (README "Installing: online, offline, and
# the pinned versions"). pyproject.toml says what we depend on; requirements/*.txt are generated
# from it by uv, with hashes, for every platform and CPython 3.11 (Raspberry Pi OS bookworm).
#   make lock                    re-resolve after a pyproject change, keeping every other pin
#   make lock UPGRADE=aiomqtt    also move these packages (space separated) to their newest
#   make lock UPGRADE=all        move everything to the newest versions pyproject allows
.PHONY: lock wheelhouse wheelhouses
UPGRADE ?=
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --generate-hashes \
	--python-version 3.11 --custom-compile-command 'make lock' \
	$(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p)))

lock: $(STAMP)
	$(UV_COMPILE) requirements/build.in -o requirements/build.txt
	$(UV_COMPILE) pyproject.toml -o requirements/runtime.txt
	$(UV_COMPILE) pyproject.toml --extra dev --extra hil -c requirements/runtime.txt \
	  -o requirements/dev.txt

# An offline install for a charger (Raspberry Pi OS bookworm, CPython 3.11): the pinned wheels for
# PLATFORM (aarch64 or armv7), the agent's wheel, SHA256SUMS and manifest.json (what has no wheel
# and what the device needs to build it). Copy the checkout with it to the charger, then
#   sudo deploy/install.sh --offline build/wheelhouse/armv7
PLATFORM   ?= aarch64
WHEELHOUSE ?= build/wheelhouse

wheelhouse: $(STAMP)
	$(PY) deploy/wheelhouse.py --platform $(PLATFORM) --out $(WHEELHOUSE)/$(PLATFORM)

wheelhouses:
	$(MAKE) wheelhouse PLATFORM=aarch64
	$(MAKE) wheelhouse PLATFORM=armv7
