# The two commands of the README, with the build prerequisites checked first.
# `make run` runs the demo (nothing else needed); `make run CONFIG=path.yaml` runs posthook
# with that file.
CONFIG ?=

.PHONY: deps run test

# Pingora builds zlib-ng with cmake and needs a C compiler; install them with apt if missing.
deps:
	@if ! command -v cmake >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then \
		echo "installing cmake and build-essential (needed to build Pingora)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake build-essential; \
	fi

run: deps
ifeq ($(strip $(CONFIG)),)
	cargo run --release -- demo
else
	cargo run --release -- -c $(CONFIG)
endif

# What the tests run beside posthook (the official Standard Webhooks verifiers, from PyPI and
# npm) is installed here by scripts/test-deps.sh; the tests find it through POSTHOOK_TEST_ENV.
TESTENV ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/testenv

test: deps
	scripts/test-deps.sh "$(TESTENV)"
	POSTHOOK_TEST_ENV="$(TESTENV)" cargo test
