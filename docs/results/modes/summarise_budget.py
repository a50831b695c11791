"""Summarise the longer runs of issue 31 (budget/<tag>.jsonl, written by
benchmarks/bench_mode_budget.py): per mixture and setting, the measurements at one step
(modes recovered per seed, high-quality share, reverse KL, at 4 std and at 3 std), and the
must-meet target of every core-set setting against random 64 at that step.

    python docs/results/modes/summarise_budget.py TAG STEP [--generator live|ema] [--plot]

``--trajectory`` prints instead, per mixture and setting, the modes recovered at every measured
step up to STEP (seeds separated by /, those that reached STEP) and the modes missed, summed
over the seeds and the steps of the first two thirds; ``--plot`` also draws budget/<tag>.png:
modes recovered and high-quality share against the step, one line per setting and seed, a
column per mixture.
"""

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ORDER = ["random 64", "core-set 64", "core-set 64 data only", "core-set 64 stratified",
         "core-set 64 latents only", "random 512"]  # fmt: skip


def table(r: pd.DataFrame) -> list[str]:
    lines = [
        "| mixture | setting | seeds | modes (per seed) | mean | high quality % | reverse KL | "
        "modes, 3 std | high quality %, 3 std | ms/step |",
        "|:---|:---|:---|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for (mix, setting), g in r.groupby(["mixture", "setting"], observed=True, sort=False):
        g = g.sort_values("seed")
        lines.append(
            f"| {mix} | {setting} | {','.join(map(str, g['seed']))} | "
            f"{' / '.join(map(str, g['modes']))} | {g['modes'].mean():.1f} | "
            f"{100 * g['hq'].mean():.1f} | {g['kl_weights'].mean():.3f} | "
            f"{g['modes_3std'].mean():.1f} | {100 * g['hq_3std'].mean():.1f} | "
            f"{1000 * g['seconds_per_step'].mean():.0f} |"
        )
    return lines


def targets(r: pd.DataFrame) -> list[str]:
    lines = []
    for mix, g in r.groupby("mixture", sort=False):
        a = g[g["setting"] == "random 64"].set_index("seed")
        for setting in [s for s in ORDER[1:-1] if s in set(g["setting"])]:
            b = g[g["setting"] == setting].set_index("seed")
            seeds = sorted(set(a.index) & set(b.index))
            if not seeds:
                continue
            ma, mb = a.loc[seeds, "modes"].mean(), b.loc[seeds, "modes"].mean()
            ha, hb = a.loc[seeds, "hq"].mean(), b.loc[seeds, "hq"].mean()
            met = "MET" if mb >= ma and hb >= ha else "NOT MET"
            lines.append(
                f"- {mix}, {setting} vs random 64 (seeds {','.join(map(str, seeds))}): {met} "
                f"(modes {mb:.1f} vs {ma:.1f}, high quality {100 * hb:.1f}% vs {100 * ha:.1f}%)"
            )
    return lines


def trajectory(r: pd.DataFrame, last: int) -> list[str]:
    r = r[r["step"] <= last]
    done = r[r["step"] == last][["mixture", "setting", "seed"]].drop_duplicates()
    r = r.merge(done, on=["mixture", "setting", "seed"])  # the series that reached STEP
    steps = sorted(r["step"].unique())
    early = [s for s in steps if s <= 2 * last // 3]
    lines = [
        "| mixture | setting | " + " | ".join(f"{s:,}" for s in steps)
        + f" | modes missed, steps {early[0]:,}-{early[-1]:,} |",
        "|:---|:---|" + "---|" * len(steps) + "---:|",
    ]  # fmt: skip
    for (mix, setting), g in r.groupby(["mixture", "setting"], observed=True, sort=False):
        table = g.pivot_table(index="seed", columns="step", values="modes").reindex(columns=steps)
        n_modes = MIXTURE_MODES.get(mix, table.max().max())
        cells = ["/".join("–" if pd.isna(v) else str(int(v)) for v in table[s]) for s in steps]
        missed = int((n_modes - table[early]).sum().sum())
        lines.append(f"| {mix} | {setting} | " + " | ".join(cells) + f" | {missed} |")
    return lines


MIXTURE_MODES = {"grid5": 25, "grid7": 49, "grid10": 100, "ring8": 8, "grid5-unequal": 25}


def plot(r: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixtures = list(dict.fromkeys(r["mixture"]))
    fig, axes = plt.subplots(2, len(mixtures), figsize=(4.5 * len(mixtures), 6.5), squeeze=False)
    for j, mix in enumerate(mixtures):
        for k, setting in enumerate(s for s in ORDER if s in set(r["setting"])):
            for seed, g in r[(r["mixture"] == mix) & (r["setting"] == setting)].groupby("seed"):
                g = g.sort_values("step")
                style = dict(color=f"C{k}", alpha=0.8, lw=1, ls=["-", "--", ":"][seed % 3])
                label = f"{setting}, seed {seed}"
                axes[0, j].plot(g["step"], g["modes"], label=label, **style)
                axes[1, j].plot(g["step"], 100 * g["hq"], label=label, **style)
        axes[0, j].set(title=mix, ylabel="modes recovered")
        axes[1, j].set(xlabel="generator steps", ylabel="high-quality samples %", ylim=(0, 100))
        axes[1, j].axhline(80, color="grey", lw=0.5)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("tag")
    ap.add_argument("step", type=int)
    ap.add_argument("--generator", default="live")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--trajectory", action="store_true")
    a = ap.parse_args(argv)
    r = pd.read_json(HERE / "budget" / f"{a.tag}.jsonl", lines=True)
    if a.plot:
        plot(r[r["generator"] == a.generator], HERE / "budget" / f"{a.tag}.png")
    if a.trajectory:
        rows = r[r["generator"] == a.generator].copy()
        rows["setting"] = pd.Categorical(rows["setting"], ORDER)
        text = "\n".join(trajectory(rows.sort_values(["mixture", "setting", "seed"]), a.step))
        print(text)
        return text
    r = r[(r["step"] == a.step) & (r["generator"] == a.generator)]
    r = r.drop_duplicates(["mixture", "setting", "seed"], keep="last")
    r["setting"] = pd.Categorical(r["setting"], [s for s in ORDER if s in set(r["setting"])])
    r = r.sort_values(["mixture", "setting", "seed"])
    text = "\n".join(table(r) + [""] + targets(r)) + "\n"
    print(text)
    return text


if __name__ == "__main__":
    main()
