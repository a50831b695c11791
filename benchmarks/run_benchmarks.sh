#!/usr/bin/env bash
# Produce the README's benchmark results.
#
#   benchmarks/run_benchmarks.sh                      # every benchmark
#   benchmarks/run_benchmarks.sh heldout mixture      # some of them
#
# Names: kcenter, batch-density, cost, mixture, heldout, one-class-mnist, one-class-cifar10.
# Settings from the environment (defaults in brackets):
#   ANOMALY_DATA_ROOT  data folder with mnist/ and cifar10-jpeg/ or cifar-10-batches-py/
#                      [../shared/data when it exists, else the library's default]
#   OUT                parent of the output folders [results]
#   DEVICE             torch device [auto: CUDA when available]
#   SEEDS              comma-separated seeds [0,1,2]
#   CLASSES            comma-separated classes [0,...,9]
#   QUICK              1 = smoke-test sizes (the numbers then mean nothing) [0]
#   JOBS               held-out / one-class splits measured at once [1]; reruns resume
# Each benchmark writes results.csv, table.md, PNG plots and meta.json into $OUT/<name>/ and
# prints its table. The image benchmarks train many conv GANs: on two CPU cores use few classes
# and one seed, or a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${ANOMALY_DATA_ROOT:-}" && -d ../shared/data ]]; then
    export ANOMALY_DATA_ROOT=../shared/data
fi
OUT="${OUT:-results}"
common=(--seeds "${SEEDS:-0,1,2}" --device "${DEVICE:-auto}" --out "$OUT")
[[ "${QUICK:-0}" == 1 ]] && common+=(--quick)
classes=(--classes "${CLASSES:-0,1,2,3,4,5,6,7,8,9}" --jobs "${JOBS:-1}" --resume)

run_one() {
    case "$1" in
        kcenter) python benchmarks/bench_kcenter.py ;;
        batch-density) python benchmarks/bench_batch_density.py --classes 0,1,2,3,4,5,6,7,8,9 \
            ${ANOMALY_DATA_ROOT:+--data-root "$ANOMALY_DATA_ROOT"} ;;
        cost) anomaly benchmark cost "${common[@]}" ;;
        mixture) anomaly benchmark mixture --sides 5,7,10 "${common[@]}" ;;
        heldout) anomaly benchmark heldout --dataset mnist "${classes[@]}" "${common[@]}" ;;
        one-class-mnist)
            anomaly benchmark one-class --dataset mnist "${classes[@]}" "${common[@]}" ;;
        one-class-cifar10)
            anomaly benchmark one-class --dataset cifar10 "${classes[@]}" "${common[@]}" ;;
        *) echo "unknown benchmark: $1" >&2; exit 2 ;;
    esac
}

if [[ $# -eq 0 ]]; then
    set -- kcenter batch-density cost mixture heldout one-class-mnist one-class-cifar10
fi
for name in "$@"; do
    run_one "$name"
done
