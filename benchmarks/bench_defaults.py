"""The test protocols with today's defaults, beside kNN and a Gaussian on the same inputs.

The default view of grey images is both views (pixels and features side by side) scored by
:class:`~coreset_meg.gan.networks.ViewsEnergy`; colour images get the features view. This reruns a
test protocol (``anomaly benchmark heldout`` or ``one-class``) with only the detectors that matter
for those defaults: the detector in each of its views, and kNN and the Gaussian on each view's
own vectors (the protocol's runner, its splits, files and report; the other baselines are left
out to keep a run within an hour or two on two cores; on MNIST held-out only the both view and
its baselines, the single views having run on the same splits for the core-set energy page)::

    python benchmarks/bench_defaults.py heldout --dataset mnist --seeds 0 \\
        --data-root DATA --out docs/results/defaults --resume
    python benchmarks/bench_defaults.py one-class --dataset mnist --seeds 0 \\
        --data-root DATA --out docs/results/defaults --resume

Features come from the benchmarks' embedding cache (``results/embeddings``): every image of
the data set is embedded once.
"""

from __future__ import annotations

import argparse

from coreset_meg.anomaly.benchmarks import BENCHMARKS

GREY = (
    "MEG core-set energy (both views)",
    "kNN distance (both views)",
    "Gaussian (both views)",
    "MEG core-set energy (pixels)",
    "kNN distance",
    "MEG core-set energy (features)",
    "kNN distance, unit length (features)",
    "Gaussian (features)",
)
#: Held-out (50,000 training images per split): the default and its baselines on the same
#: vectors only; the single views ran on the same splits in docs/results/coreset-energy.
GREY_HELDOUT = GREY[:3]
COLOUR = (
    "MEG core-set energy (features)",
    "kNN distance, unit length (features)",
    "Gaussian (features)",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", choices=("heldout", "one-class"))
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "cifar10"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--features", default="efficientnet-lite0", help="the features view's extractor"
    )
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    report = BENCHMARKS[args.protocol](
        args.dataset,
        classes=[int(c) for c in args.classes.split(",")],
        seeds=[int(s) for s in args.seeds.split(",")],
        device="cpu",
        data_root=args.data_root,
        out_dir=f"{args.out}/{args.protocol}-{args.dataset}",
        jobs=args.jobs,
        resume=args.resume,
        features=args.features,
        methods=(
            COLOUR
            if args.dataset == "cifar10"
            else GREY_HELDOUT
            if args.protocol == "heldout"
            else GREY
        ),
    )
    print(report)


if __name__ == "__main__":
    main()
