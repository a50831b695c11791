#!/bin/sh
# The mode-coverage rerun of the mixture benchmark (one thread, resumable): seed 0 on every grid
# first, then seeds 1 and 2. Rerun this script to continue an interrupted run; finished cells
# are kept (the first sitting ran without "core-set 64 data only", which a rerun adds).
cd "$(dirname "$0")/../../.." || exit 1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
S="random 64,core-set 64,core-set 64 stratified,core-set 64 data only"
for seeds in 0 0,1,2; do
  nice -n 5 anomaly benchmark mixture --sides 5,7,10 --seeds "$seeds" --settings "$S" \
    --device cpu --out docs/results/modes --resume -q || exit 1
done
