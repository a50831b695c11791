#!/bin/sh
# Issue 31: the data-side-only core-set setting (prior_factor 1, data_factor 8) on the same grids
# and seeds, into the same resumable folder as run_mixture.sh (seed 0 first).
cd "$(dirname "$0")/../../.." || exit 1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
S="random 64,core-set 64,core-set 64 stratified,core-set 64 data only"
for seeds in 0 0,1,2; do
  nice -n 5 anomaly benchmark mixture --sides 5,7,10 --seeds "$seeds" --settings "$S" \
    --device cpu --out docs/results/modes --resume -q || exit 1
done
