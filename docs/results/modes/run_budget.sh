#!/bin/sh
# Issue 31, item 3: the mixture benchmark's MEG trained 6,000 steps, every learning rate decaying
# linearly over the second half (the same schedule for every batch setting), measured every
# 1,000 steps (docs/results/modes/budget/decay6k.jsonl), and the search for the budget at which
# random 512 reaches 80% high-quality samples on 25 modes (decay12k.jsonl). One thread each,
# resumable: rerun a line to continue it (finished cells are skipped, a cut-off cell continues
# from its last checkpoint under results/mode-budget/). Part is an argument: grid5 | grids |
# others | budget.
cd "$(dirname "$0")/../../.." || exit 1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$PWD"
run() { nice -n 5 python benchmarks/bench_mode_budget.py --config generator_ema=0.999 \
  --config lr_decay_start=0.5 "$@"; }
case "$1" in
  grid5) run --tag decay6k --n-iter 6000 --eval-every 1000 --seeds 0,1,2 \
           --settings "random 64,core-set 64,core-set 64 data only" &&
         run --tag decay6k --n-iter 6000 --eval-every 1000 --seeds 0 --settings "random 512" ;;
  grids) run --tag decay6k --n-iter 6000 --eval-every 1000 --seeds 0,1,2 \
           --mixtures grid7,grid10 --settings "random 64,core-set 64" ;;
  others) run --tag decay6k --n-iter 6000 --eval-every 1000 --seeds 0,1,2 \
            --mixtures ring8,grid5-unequal --settings "random 64,core-set 64" ;;
  budget) run --tag decay12k --n-iter 12000 --eval-every 2000 --seeds 0 --settings "random 512" ;;
  *) echo "usage: $0 grid5|grids|others|budget" >&2; exit 2 ;;
esac
