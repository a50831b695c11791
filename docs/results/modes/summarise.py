"""Summarise issue 31's mixture rerun (results.csv next to this file's mixture/ folder): mean and
standard deviation over seeds per grid and setting, seeds done, and the must-meet target for each
core-set setting against random 64 (modes recovered and high-quality share, on every grid)."""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
r = pd.read_csv(HERE / "mixture" / "results.csv")
order = ["random 64", "core-set 64", "core-set 64 stratified", "core-set 64 data only",
         "core-set 64 latents only"]  # fmt: skip
r["setting"] = pd.Categorical(r["setting"], [s for s in order if s in set(r["setting"])])
lines = ["| modes | setting | seeds | modes recovered (per seed) | mean ± sd | high quality % | "
         "KL to uniform | ms/step |", "|---:|:---|:---|:---|---:|---:|---:|---:|"]  # fmt: skip
for (n, setting), g in r.sort_values("seed").groupby(["n_modes", "setting"], observed=True):
    m, hq = g["modes_recovered"], 100 * g["high_quality_fraction"]
    lines.append(
        f"| {n} | {setting} | {','.join(map(str, g['seed']))} | "
        f"{' / '.join(str(int(v)) for v in m)} | {m.mean():.1f} ± {m.std(ddof=0):.1f} | "
        f"{hq.mean():.1f} ± {hq.std(ddof=0):.1f} | {g['kl_uniform'].mean():.3f} | "
        f"{1000 * g['seconds_per_step'].mean():.0f} |"
    )
lines.append("")
for setting in order[1:]:
    if setting not in set(r["setting"]):
        continue
    for n, g in r.groupby("n_modes"):
        a = g[g["setting"] == "random 64"].set_index("seed")
        b = g[g["setting"] == setting].set_index("seed")
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            continue
        ma, mb = a.loc[seeds, "modes_recovered"].mean(), b.loc[seeds, "modes_recovered"].mean()
        ha = a.loc[seeds, "high_quality_fraction"].mean()
        hb = b.loc[seeds, "high_quality_fraction"].mean()
        met = mb >= ma and hb >= ha
        lines.append(
            f"- {n} modes, {setting} vs random 64 (seeds {','.join(map(str, seeds))}): "
            f"{'MET' if met else 'NOT MET'} (modes {mb:.1f} vs {ma:.1f}, high quality "
            f"{100 * hb:.1f}% vs {100 * ha:.1f}%)"
        )
text = "\n".join(lines) + "\n"
(HERE / "summary.md").write_text(text)
print(text)
