"""``spectgan demo``: the main job on the embedded defaults, printing where every result is."""
from __future__ import annotations

from pathlib import Path

from spectgan.cohort import build_cohort, draw_preview
from spectgan.cohort_format import read_cohort_info
from spectgan.roi import hemisphere_stats, read_image

REPOSITORY = Path(__file__).resolve().parent.parent
STUDIES = REPOSITORY / "sample_data" / "studies"


def add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the demo on the embedded sample data")
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_demo)


def run_demo(args) -> int:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print("1. reference studies (the datastore):")
    for study in sorted(STUDIES.glob("*.nii.gz")):
        stats = hemisphere_stats(read_image(study))
        print(f"   {study.name:40s} MC {stats.mc:7.1f}  LR {stats.lr:.3f}  AI {stats.ai:+6.1f} %")
    print("2. a test-size simulated cohort (64 x 64, 0.1 x the paper's counts):")
    cohort = build_cohort(out / "cohort_64", seed=args.seed, matrix=64, scale=0.1)
    info = read_cohort_info(cohort)
    preview = draw_preview(cohort, out / "cohort_preview.png")
    print(f"   {info['counts']['train']} train + {info['counts']['test']} test slices in {cohort}")
    print(f"\nresults: {out}\npreview picture: {preview}")
    return 0
