"""``spectgan demo``: the main job on the embedded defaults, printing where every result is.

1. hemisphere statistics of the reference studies (the server's datastore);
2. a test-size simulated cohort and its preview;
3. the whole chain: a local Orthanc and the spectgan server (127.0.0.1, free ports), one sample study uploaded as
   the reference, every valid condition of each model generated over it, the overview pictures, DICOM exported to
   Orthanc (model A by STOW-RS, model B by C-STORE); both servers are stopped at the end.

The trained bundles (models/spect_fastgan_A and _B) are checked first. Where a bundle is not shipped yet but its
training run is committed (models/training/<name>, resumable), the demo exports that run's current checkpoint into
its own output folder and says so; with neither, it stops with the commands that make the bundle.
"""
from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

from spectgan.cohorts.simulated import build_cohort, draw_preview
from spectgan.cohorts.format import read_cohort_info
from spectgan.conditions import ALL_LEVELS, Level
from spectgan.errors import SpectganError
from spectgan.geometry.roi import hemisphere_stats, read_image

REPOSITORY = Path(__file__).resolve().parent.parent
STUDIES = REPOSITORY / "sample_data" / "studies"
DEMO_STUDY = "study_unilateral_left_oblique"
TRAINING_COHORT = "sample_data/cohorts/default"
TRAINING_RUNS = REPOSITORY / "models" / "training"
# The models the demo shows and the levels each is trained on (the server serves whatever bundles it finds).
SHIPPED_MODELS: dict[str, tuple[Level, ...]] = {"spect_fastgan_A": ALL_LEVELS, "spect_fastgan_B": (Level.COR,)}


def add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the demo on the embedded sample data")
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--study", default=DEMO_STUDY, help="sample study the scans are generated over "
                                                              "(default %(default)s)")
    parser.add_argument("--models-dir", type=Path, help="folder of the model bundles (default: models/, or "
                                                        "$SPECTGAN_MODELS_DIR)")
    parser.set_defaults(func=run_demo)


def require_bundles(models_dir: Path) -> None:
    """SpectganError naming each served model without a trained bundle in ``models_dir`` and how to make it."""
    from spectgan.models.synthesizer import is_bundle

    missing = [name for name in SHIPPED_MODELS if not is_bundle(models_dir / name)]
    if missing:
        steps = [f"spectgan cohort --out {TRAINING_COHORT} --seed 0"] + [
            f"spectgan train --cohort {TRAINING_COHORT} --levels "
            f"{','.join(level.value for level in SHIPPED_MODELS[name])} --out runs/{name} --export-bundle "
            f"{models_dir / name}" for name in missing]
        folders = ", ".join(str(models_dir / name) for name in missing)
        raise SpectganError(f"missing trained model bundle(s): {folders} (each needs configs/metadata.json and "
                            "models/model.pt). Make them, from the repository root, with:\n  " + "\n  ".join(steps))


def bundles_for_demo(models_dir: Path, out: Path) -> Path:
    """``models_dir`` when it holds every served bundle; else snapshots of the committed training runs exported to
    ``out/models`` (not the shipped weights: the run's current step); else SpectganError (see require_bundles)."""
    from spectgan.models.fastgan import export_bundle
    from spectgan.models.fastgan.checkpoint import checkpoint_path
    from spectgan.models.synthesizer import is_bundle

    if all(is_bundle(models_dir / name) for name in SHIPPED_MODELS):
        return models_dir
    runs = {name: TRAINING_RUNS / name for name in SHIPPED_MODELS}
    if not all(checkpoint_path(run).is_file() for run in runs.values()):
        require_bundles(models_dir)
    snapshots = out / "models"
    for name, run in runs.items():
        print(f"0. {name}: no shipped bundle in {models_dir} yet; exporting the committed training run {run} "
              "at its current step (training is still in progress)")
        export_bundle(run, snapshots / name, name=name)
    return snapshots


def run_demo(args) -> int:
    from spectgan.serving.settings import models_dir_from

    out = args.out.resolve()
    models_dir = bundles_for_demo(args.models_dir.resolve() if args.models_dir else models_dir_from(), out)
    if not (STUDIES / f"{args.study}.nii.gz").is_file():
        raise SpectganError(f"no sample study {args.study!r} in {STUDIES}; available: "
                            f"{', '.join(sorted(path.name[:-7] for path in STUDIES.glob('*.nii.gz')))}")
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
    print(f"3. synthetic scans over {args.study} from the server, exported to a local Orthanc:")
    generated, orthanc_dir = run_chain(out, models_dir, args.study, args.seed)
    print(f"\nresults: {out}\npreview picture: {preview}\nsynthetic scans, statistics and overviews: {generated}\n"
          f"Orthanc storage: {orthanc_dir} (both servers are stopped; see the Orthanc line above to browse it again)")
    return 0


def run_chain(out: Path, models_dir: Path, study: str, seed: int) -> tuple[Path, Path]:
    """Orthanc + the server on free ports; ``study`` uploaded; every valid condition of each model over it;
    overview pictures; export (one run: the scans of every model over the study land in one synthetic study).
    Returns the folder of the scans and Orthanc's storage folder. Both servers stop
    before it returns."""
    from spectgan.client.batch import GenerationJob
    from spectgan.client.http import SpectGANClient
    from spectgan.client.result_files import DICOM_DIR
    from spectgan.export.scans import export_results
    from spectgan.export.dicom import SyntheticRun
    from spectgan.export.orthanc import ORTHANC_BINARY, LocalOrthanc
    from spectgan.tools.server import ServerProcess

    generated, orthanc_dir, datastore = out / "generated", out / "orthanc", out / "datastore"
    for folder in (generated, orthanc_dir, datastore):  # the chain's own outputs of an earlier run
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(STUDIES, datastore)  # MONAI Label writes its index beside the images: never into the repository
    with LocalOrthanc(storage_dir=orthanc_dir) as pacs, \
            ServerProcess(datastore, models_dir, out / "server.log") as server, \
            SpectGANClient(server.url) as client:
        print(f"   server {server.url} (log {out / 'server.log'}), Orthanc {pacs.rest_url}")
        os.environ.update(pacs.client_environment())  # spectgan.export.pacs reads the credentials from the environment
        reference = client.upload(STUDIES / f"{study}.nii.gz")  # as a workstation sends the scan it has open
        print(f"   uploaded {study} as the reference: image id {reference}")
        run = SyntheticRun()  # one synthetic study over the reference for the scans of every model
        for name, pacs_url in zip(SHIPPED_MODELS, itertools.cycle((pacs.dicomweb_url, pacs.dicom_url))):
            job = GenerationJob(client, reference, name, client.conditions(name), [seed])
            print("   " + job.run_to_folder(generated / name).replace("\n", "\n   "))
            print(f"   {export_results(job.results, generated / name / DICOM_DIR, pacs_url, run)}")
            print(f"   {name} in Orthanc: {orthanc_study_url(pacs, generated / name / DICOM_DIR)}")
        print(f"   Orthanc login: user {pacs.username}, password {pacs.password}; to browse it again after the demo: "
              f"{ORTHANC_BINARY} {pacs.work_dir / 'orthanc.json'}")
    return generated, orthanc_dir


def orthanc_study_url(pacs, dicom_folder: Path) -> str:
    """The Orthanc Explorer page of the study exported from ``dicom_folder``."""
    import pydicom

    study_uid = pydicom.dcmread(next(dicom_folder.rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    (identifier,) = [study["ID"] for study in pacs.get("/studies?expand")
                     if study["MainDicomTags"]["StudyInstanceUID"] == study_uid]
    return f"{pacs.rest_url}/app/explorer.html#study?uuid={identifier}"
