#!/usr/bin/env bash
# The job of a short GPU lease, in one command of about eight minutes: the GPU cases of the tests, then the
# quick matrix on the given devices under a time budget, then the GPU/CPU table, everything written under OUT.
#
#   scripts/lease.sh OUT [SECONDS] [DEVICES]        e.g.  scripts/lease.sh "$OUT" 480 cuda:0,cpu
#
# SECONDS (default 480) is the whole job's budget: a fifth for the tests (stopped as Ctrl-C would at their
# share, their output kept), the rest for the quick matrix (--time-budget: headline cases first, what
# finished saved, the rest listed). OUT receives tests.log, quick.log, ratio.md, summary.txt, the JSON
# results under results/ and the fast probe's choices under cache/.
#
# A bare machine has neither the data nor the articles' code, and a checkout does not carry them: copy
# MNIST's and Fashion-MNIST's .gz files into ./data/MNIST/raw and ./data/FashionMNIST/raw (git-ignored, the
# default data root; extracted on first use) and the articles' texts into ./data/seeds (for the parity
# tests), and carry ./data. $PYTHON names the interpreter (default python3); $LEASE_TEST_ARGS and
# $LEASE_QUICK_ARGS add arguments to the two pytest runs (the test suite runs this script at smoke size).
# It exits 1 when the quick matrix failed or the tests failed (stopped at their share, 124, is not a failure).
set -uo pipefail
out=${1:?usage: scripts/lease.sh OUT [SECONDS] [DEVICES]}
budget=${2:-480}
devices=${3:-cuda:0,cpu}
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 MNISTBENCH_CACHE="$out/cache"
if [ -d data/seeds ] && [ -z "${MNISTBENCH_SEEDS:-}" ]; then
    export MNISTBENCH_SEEDS="$PWD/data/seeds"
fi
start=$SECONDS

# 1. The test command's GPU cases: every case on an accelerator and every test marked gpu, each named in the
# log as it finishes (the summary of a run stopped at its share may not be printed), the slowest listed.
# shellcheck disable=SC2086  # the extra arguments are words
timeout -s INT "$((budget / 5))" "$python" -m pytest -v --durations=20 -p no:cacheprovider -m gpu --devices "$devices" \
    ${LEASE_TEST_ARGS:-} 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}

# 2. The quick matrix in the time left.
left=$((budget - (SECONDS - start)))
# shellcheck disable=SC2086
"$python" -m pytest benchmarks -p no:cacheprovider --benchmark-only --matrix quick --devices "$devices" --seeds 5 \
    --time-budget "$left" --benchmark-storage "$out/results" ${LEASE_QUICK_ARGS:-} 2>&1 | tee "$out/quick.log"
quick=${PIPESTATUS[0]}

# 3. The GPU/CPU table of what was saved (or why there is none).
"$python" -m mnistbench ratio "$out/results" > "$out/ratio.md" 2>&1

echo "lease: tests exit $tests, quick matrix exit $quick, $((SECONDS - start)) s of $budget" | tee "$out/summary.txt"
[ "$quick" -eq 0 ] && { [ "$tests" -eq 0 ] || [ "$tests" -eq 124 ]; }  # 124: timeout stopped the tests at their share
