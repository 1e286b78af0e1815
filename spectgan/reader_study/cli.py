"""``spectgan reader-study create | serve | analyze``."""
from __future__ import annotations

from pathlib import Path


def add_reader_study_command(subparsers) -> None:
    parser = subparsers.add_parser("reader-study", help="a blinded reader study of real against synthetic slices")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="pick, blind and render the cases; write one secret link per reader")
    create.add_argument("--cohort", required=True, type=Path, help="cohort folder (real slices: its test split)")
    create.add_argument("--bundle", required=True, type=Path, help="model bundle (e.g. models/spect_fastgan_A)")
    create.add_argument("--n", type=int, default=60, help="study cases, half real and half synthetic (even)")
    create.add_argument("--readers", type=int, default=3, help="number of readers (one link each)")
    create.add_argument("--practice", type=int, default=4, help="practice cases with feedback (even; 0: none)")
    create.add_argument("--seed", type=int, default=0, help="seed of the case selection, the model and the orders")
    create.add_argument("--out", required=True, type=Path, help="study folder to create (must not exist)")
    create.set_defaults(func=_run_create)
    serve = actions.add_parser("serve", help="serve the reading page (offline; links in STUDY/readers.csv)")
    serve.add_argument("study", type=Path, help="study folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free one; the URL is printed)")
    serve.set_defaults(func=_run_serve)
    analyze = actions.add_parser("analyze", help="accuracy, sensitivity, specificity, ROC, kappa: report.md")
    analyze.add_argument("study", type=Path, help="study folder")
    analyze.add_argument("--out", type=Path, default=None, help="output folder (default: STUDY/analysis)")
    analyze.add_argument("--note", default="", help="a line shown at the top of the report")
    analyze.set_defaults(func=_run_analyze)


def _run_create(args) -> int:
    from spectgan.reader_study.create import create_study

    create_study(args.cohort, args.bundle, args.out, args.n, args.readers, args.seed, args.practice)
    print(f"reader links: {args.out / 'readers.csv'} (relative URLs; serve with `spectgan reader-study serve "
          f"{args.out}`)")
    return 0


def _run_serve(args) -> int:
    from spectgan.reader_study.app import serve

    serve(args.study, args.host, args.port)
    return 0


def _run_analyze(args) -> int:
    from spectgan.reader_study.analysis import analyze_study

    out = analyze_study(args.study, args.out, args.note)
    print(f"reader study analysis: {out / 'report.md'}")
    return 0
