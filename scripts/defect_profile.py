"""How deep and where a model's defects are, against the simulation's own defect: per level, territory, side and
requested severity, each synthetic defect slice is divided by its normal twin (the same latent and noise, the normal
condition of its level; counts) and compared with the factor by which the simulation scales a subject's slice for
that lesion (``spectgan.counterfactual.physics.defect_factor``).

    python scripts/defect_profile.py [--bundle models/spect_fastgan_A] [--latents 16] \
        [--cohort sample_data/cohorts/default] [--out models/spect_fastgan_A/docs/history/defect_profile.png]

Depth is the mean fractional reduction over the defect's core (where the simulation's reduction is at least half its
maximum), of the mean twin ratio over the latents. In the simulated cohort a defect is exactly that factor times the
subject's own slice, so a model whose depth follows the severity more flatly than the simulation draws mild defects
too deep or strong ones too shallow, whatever its |AI| means say.

With ``--cohort``, the same depth is read without twins on the cohort's real unilateral train slices, on real
normal slices times the factor (what the reading gives for a defect that is exactly the factor) and on the model's
slices of the same conditions and lesions: each slice against the level's mean normal slice, scaled to it outside
the defect, as a multiple of the simulation's core depth (k; least squares through 0). It says whether the factor is
the real defects' depth, and where the model lies.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.counterfactual.physics import defect_factor
from spectgan.evaluation.data import read_split
from spectgan.figures import pyplot, save_figure
from spectgan.models.fastgan.inference import generate
from spectgan.models.synthesizer import load_synthesizer

SEVERITIES = (0.15, 0.25, 0.35, 0.5)
SEED = 7
CORE = 0.5  # the core: where the simulation's reduction is at least this share of its maximum


def measure(model, latents: int) -> list[dict]:
    """One row per level, territory, side and severity of a FastGAN synthesizer with defect axes: the simulation's
    and the model's depth in the core, the mean absolute ratio error inside the defect, and the profile correlation
    over the head."""
    generator, axes = model.bundle.generator, model.defect_axes()
    if axes is None:
        raise SystemExit(f"{model.name} has no territory and severity axes: nothing to compare")
    rows = []
    for level in model.levels:
        twin = generate(generator, [Condition(level, Pattern.NORMAL)] * latents, SEED)[:, 0].numpy() + 1.0
        mean_twin = twin.mean(0)
        head = mean_twin > 0.2 * mean_twin.max()
        for territory in axes.territories.get(level.value, ()):
            for side in Side:
                for severity in SEVERITIES:
                    lesion = Lesion(side, territory, severity)
                    condition = Condition(level, Pattern.UNILATERAL, side, (lesion,))
                    defect = generate(generator, [condition] * latents, SEED)[:, 0].numpy() + 1.0
                    ratio = np.where(head, defect.mean(0) / np.maximum(mean_twin, 1e-3), 1.0)
                    reduction = 1.0 - defect_factor([lesion], level, mean_twin.shape[-1])
                    core = reduction >= CORE * reduction.max()
                    inside = reduction >= 0.1 * reduction.max()
                    rows.append({"level": level.value, "territory": territory, "side": side.value,
                                 "severity": severity, "simulation_depth": float(reduction[core].mean()),
                                 "model_depth": float(1.0 - ratio[core].mean()),
                                 "ratio_mae": float(np.abs(1.0 - reduction - ratio)[inside].mean()),
                                 "profile_correlation": float(np.corrcoef(reduction[head], 1.0 - ratio[head])[0, 1])})
    return rows


def _depth(counts: np.ndarray, lesions: tuple[Lesion, ...], level: Level, normal: np.ndarray
           ) -> tuple[float, float]:
    """(depth read in the core, the simulation's core depth) of one slice [H, W] against the mean normal [H, W]."""
    reduction = 1.0 - defect_factor(lesions, level, counts.shape[-1])
    head = normal > 0.2 * normal.max()
    core, outside = reduction >= CORE * reduction.max(), head & (reduction < 0.01 * reduction.max())
    scaled = normal * counts[outside].sum() / normal[outside].sum()
    return float(1.0 - (counts / np.maximum(scaled, 1e-3))[core].mean()), float(reduction[core].mean())


def cohort_depths(model, cohort: Path, seed: int = SEED) -> dict[str, float]:
    """k (read depth over the simulation's core depth) for the cohort's real unilateral train slices of the model's
    levels, for real normals times the factor, and for the model's slices of the same conditions and lesions."""
    real = read_split(cohort, "train", model.levels)
    normals = {level: np.flatnonzero([c.level is level and c.pattern is Pattern.NORMAL for c in real.conditions])
               for level in model.levels}
    mean_normal = {level: real.counts[picks].mean(0) for level, picks in normals.items()}
    cases = [i for i, (c, lesions) in enumerate(zip(real.conditions, real.lesions))
             if c.pattern is Pattern.UNILATERAL and lesions and all(l.territory and l.severity for l in lesions)]
    synthetic = model.sample([Condition(real.conditions[i].level, Pattern.UNILATERAL, real.conditions[i].side,
                                        real.lesions[i]) for i in cases], seed, {})
    rng = np.random.default_rng(seed)
    readings: dict[str, list] = {"real defects": [], "real normals x factor": [], "model": []}
    for i, generated in zip(cases, synthetic):
        level, lesions = real.conditions[i].level, real.lesions[i]
        normal = real.counts[rng.choice(normals[level])] * defect_factor(lesions, level, generated.shape[-1])
        for name, counts in (("real defects", real.counts[i]), ("real normals x factor", normal),
                             ("model", generated)):
            readings[name].append(_depth(counts, lesions, level, mean_normal[level]))
    ks = {}
    for name, pairs in readings.items():
        read, simulated = np.array(pairs).T
        ks[name] = float((read * simulated).sum() / (simulated ** 2).sum())
    return ks


def draw(rows: list[dict], title: str, png: Path) -> None:
    """Depth against requested severity, one panel per level and territory: the simulation's line, the model's
    points per side."""
    panels = list(dict.fromkeys((row["level"], row["territory"]) for row in rows))  # in measured order
    figure, axes = pyplot().subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6), sharey=True, squeeze=False)
    for axis, (level, territory) in zip(axes[0], panels):
        cells = [row for row in rows if (row["level"], row["territory"]) == (level, territory)]
        left = [row for row in cells if row["side"] == Side.LEFT.value]
        axis.plot([row["severity"] for row in left], [row["simulation_depth"] for row in left], "k-", label="simulation")
        for side, marker in ((Side.LEFT, "o"), (Side.RIGHT, "s")):
            mine = [row for row in cells if row["side"] == side.value]
            axis.plot([row["severity"] for row in mine], [row["model_depth"] for row in mine], marker,
                      fillstyle="none", label=f"model, {side.value}")
        axis.set_title(f"{level} {territory}", fontsize=8)
        axis.set_xlabel("requested severity", fontsize=7)
        axis.tick_params(labelsize=7)
    axes[0][0].set_ylabel("core depth (fraction)", fontsize=7)
    axes[0][0].legend(fontsize=6)
    figure.suptitle(title, fontsize=9)
    figure.subplots_adjust(top=0.8, wspace=0.15)
    save_figure(figure, png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/spect_fastgan_A"))
    parser.add_argument("--latents", type=int, default=16, help="latents (twin pairs) per cell")
    parser.add_argument("--cohort", type=Path, help="also read the depth on this cohort's real slices")
    parser.add_argument("--out", type=Path, help="a PNG of depth against severity")
    args = parser.parse_args()
    model = load_synthesizer(args.bundle)
    rows = measure(model, args.latents)
    print("level territory side severity | simulation model depth | ratio MAE | profile r")
    for row in rows:
        print(f"{row['level']:3} {row['territory']:4} {row['side']:5} {row['severity']:.2f} | "
              f"{row['simulation_depth']:.3f} {row['model_depth']:.3f} | {row['ratio_mae']:.3f} | "
              f"{row['profile_correlation']:.2f}")
    simulation = np.array([row["simulation_depth"] for row in rows])
    depths = np.array([row["model_depth"] for row in rows])
    slope = np.polyfit(simulation, depths, 1)
    print(f"model depth = {slope[0]:.2f} x simulation depth {slope[1]:+.3f}; mean |error| "
          f"{np.abs(depths - simulation).mean():.3f}; mean ratio MAE {np.mean([row['ratio_mae'] for row in rows]):.3f}")
    if args.cohort:
        ks = cohort_depths(model, args.cohort)
        print(f"{args.cohort.name} train split, read depth / simulation depth: "
              + ", ".join(f"{name} {k:.2f}" for name, k in ks.items()))
    if args.out:
        described = model.describe()
        draw(rows, f"{described['name']} {described['version']}: defect depth against the simulation's "
                   f"(slope {slope[0]:.2f})", args.out)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
