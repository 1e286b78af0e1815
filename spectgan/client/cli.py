"""``spectgan generate``: every combination of levels x patterns x sides x seeds from a spectgan server, over one
reference study, into a folder (a NIfTI per scan, stats.csv, stats.json, overview.png) and, with ``--pacs``, as
DICOM into the PACS."""
from __future__ import annotations

import argparse
from pathlib import Path

from spectgan.client.batch import GenerationJob, expand_conditions, parse_seeds, removal_lesions
from spectgan.client.http import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, SpectGANClient
from spectgan.client.overview import OVERVIEW_PNG
from spectgan.client.result_files import DICOM_DIR, STATS_CSV, STATS_JSON
from spectgan.export.scans import export_results, require_new_dicom_folder
from spectgan.counterfactual import DEFAULT_METHOD, METHODS
from spectgan.lesions import apply_lesions
from spectgan.serving.settings import API_TOKEN_ENV


def add_generate_command(subparsers) -> None:
    """``spectgan generate --server URL --image ID --model M --level L --pattern P [--side S] [--territory T]
    [--severity S] --seeds 0-9 --out DIR [--pacs URL]``."""
    parser = subparsers.add_parser(
        "generate", help="generate synthetic scans on a spectgan server, registered over a reference study",
        description="Request every combination of levels x patterns x sides x seeds from the server, write one NIfTI "
                    f"per scan, {STATS_CSV}, {STATS_JSON} and {OVERVIEW_PNG}; with --pacs also DICOM (NM, hemisphere "
                    f"SEG, SR) into DIR/{DICOM_DIR}, sent to the PACS. Lists are comma-separated; 'all' means every "
                    "value the model offers (GET /info/); combinations without training data are left out.")
    parser.add_argument("--server", required=True, metavar="URL", help="server URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--image", required=True, metavar="ID",
                        help="reference study: a datastore image id, or a local image file (uploaded first)")
    parser.add_argument("--model", required=True, help="model name, e.g. spect_fastgan_A")
    parser.add_argument("--level", default="all", help="CER, BG, COR, a list or all (default: all)")
    parser.add_argument("--pattern", default="all", help="normal, unilateral, bilateral, a list or all (default: all)")
    parser.add_argument("--side", help="for unilateral: left, right, a list or all (default: all)")
    parser.add_argument("--territory", help="defect territory for a model with defect axes, e.g. MCA, or per side "
                        "for bilateral: left=MCA;right=ACA (default: drawn from the model's training cohort; "
                        "applies to the unilateral and bilateral conditions)")
    parser.add_argument("--severity", help="defect severity (fractional CBF reduction, e.g. 0.3), or per side for "
                        "bilateral: left=0.2;right=0.4 (default: drawn from the model's training cohort)")
    parser.add_argument("--base", choices=("model", "reference"), default="model",
                        help="model: new brains made by the model (default); reference: the reference patient's own "
                             "slice with the defect (--side, --territory, --severity, all required) added, or with "
                             "--pattern normal the defect that --remove, --territory and --severity name removed")
    parser.add_argument("--method", choices=METHODS,
                        help="with --base reference: how the patient's slice is changed; physics (the simulation's "
                             "territory model) or learned (the model inverted on the patient's slice; a model with "
                             f"defect axes) (default: the server's, {DEFAULT_METHOD})")
    parser.add_argument("--remove", choices=("left", "right", "both"),
                        help="with --base reference and --pattern normal: the side of the defect to remove")
    parser.add_argument("--file-with", choices=("synthetic", "source"), default="synthetic",
                        help="where the DICOM export (--pacs) files the scans: synthetic (default) under a synthetic "
                             "patient and study; source, with --base reference over a DICOM reference (a PACS "
                             "series), in the reference's own study under its patient, as new series still marked "
                             "synthetic")
    parser.add_argument("--seeds", help="seeds such as 0-9 or 1,5,7 (default: --count seeds drawn by the server)")
    parser.add_argument("--count", type=int, default=1, help="scans per condition without --seeds (default 1)")
    parser.add_argument("--psi", type=float, help="truncation in [0, 1] (default: the model's, 1: none)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--pacs", metavar="URL",
                        help="also export DICOM to this PACS: dicom://AET@host:port or http(s)://host/dicom-web")
    parser.add_argument("--run", metavar="ID",
                        help="with --pacs: export into the synthetic studies of this run (an id an earlier export "
                             "printed), so that the scans of several models over one reference land in one study "
                             "(default: a new run)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S[1], help="seconds per request "
                        "(default %(default)g)")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="retries of a failed connection "
                        "or server error (default %(default)s)")
    parser.add_argument("--token-file", type=Path, metavar="FILE",
                        help=f"file holding the server's API token (default: ${API_TOKEN_ENV}; a token on the command "
                             "line would be visible to other users of this machine)")
    parser.add_argument("--ca-cert", metavar="FILE", help="certificate to trust for an https server with a "
                                                          "self-signed certificate")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_generate)


def token_from_file(path: Path | None) -> str | None:
    """The API token in ``path`` (surrounding white space dropped); None without a file (the client then reads
    $SPECTGAN_API_TOKEN)."""
    return path.read_text().strip() if path else None


def run_generate(args: argparse.Namespace) -> int:
    """The ``generate`` command; prints where everything went."""
    if args.seeds is None and args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [None] * args.count
    out = args.out.resolve()
    if args.pacs:
        from spectgan.export.dicom import SyntheticRun

        require_new_dicom_folder(out / DICOM_DIR)
        run = SyntheticRun(args.run) if args.run else SyntheticRun()
    with SpectGANClient(args.server, timeout=(DEFAULT_TIMEOUT_S[0], args.timeout), retries=args.retries,
                        token=token_from_file(args.token_file), verify=args.ca_cert or True) as client:
        defect = (None, None) if args.remove else (args.territory, args.severity)  # --remove: what to take away
        conditions = apply_lesions(expand_conditions(client.conditions(args.model), args.level, args.pattern,
                                                     args.side), *defect)
        image = client.upload(args.image) if Path(args.image).is_file() else args.image
        job = GenerationJob(client, image, args.model, conditions, seeds, psi=args.psi, base=args.base,
                            removed=() if args.remove is None else removal_lesions(
                                None if args.remove == "both" else args.remove, args.territory, args.severity),
                            file_with=args.file_with, method=args.method)
        print(job.run_to_folder(out, progress=not args.no_progress))
    if args.pacs:
        print(export_results(job.results, out / DICOM_DIR, args.pacs, run))
        print(f"synthetic run {run.run_id}: export another model's scans over the same reference into the same "
              f"study with --run {run.run_id}")
    return 0
