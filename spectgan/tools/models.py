"""``spectgan models list|rollback``: a server's model versions (with their quality gate verdicts) and rolling one
back, through ``spectgan.client``."""
from __future__ import annotations

import argparse
from pathlib import Path

from spectgan.client.cli import token_from_file
from spectgan.client.http import DEFAULT_RETRIES, SpectGANClient
from spectgan.models.versions import VersionEntry


def describe_version(version: VersionEntry) -> str:
    """One line per version: version, state, sha256 (shortened), cohort, iterations and its evaluation (the quality
    gate's verdict, else the summary of its fidelity report), as the spectgan page's Models panel shows them."""
    evaluation = version.evaluation
    shown = f"{evaluation.source}: {evaluation.summary}" if evaluation else "not evaluated"
    return (f"{version.version:>8}  {version.state:<9}  {version.sha256[:12]}  cohort {version.cohort or '?'}, "
            f"{version.iterations if version.iterations is not None else '?'} iterations  {shown}")


def add_models_command(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list a model's versions on a server, or roll back to one")
    parser.add_argument("action", choices=("list", "rollback"))
    parser.add_argument("--server", required=True, metavar="URL", help="the spectgan server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, help="model name, e.g. spect_fastgan_A")
    parser.add_argument("--version", help="rollback: the published version to serve again")
    parser.add_argument("--token-file", type=Path, metavar="FILE",
                        help="file with the server's API token (else $SPECTGAN_API_TOKEN)")
    parser.add_argument("--ca-cert", metavar="FILE", help="certificate of an https server to trust")
    parser.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    if args.action == "rollback" and not args.version:
        raise ValueError("rollback needs --version (spectgan models list shows the published versions)")
    with SpectGANClient(args.server, retries=DEFAULT_RETRIES, token=token_from_file(args.token_file),
                        verify=args.ca_cert or True) as client:
        if args.action == "list":
            for version in client.model_versions(args.model):
                print(describe_version(version))
        else:
            served = client.rollback(args.model, args.version)
            print(f"{args.model}: now serving version {served.version} (sha256 {served.sha256})")
    return 0
