import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from gan_toy_cohort import TINY_NETWORK, single_thread, toy_cohort, toy_lesion_cohort  # noqa: F401 (fixtures)
from kill_part_way import kill_when

from spectgan.cli import main
from spectgan.errors import SpectganError
from spectgan.models.fastgan.checkpoint import load_checkpoint
from spectgan.models.fastgan.networks import minibatch_group
from spectgan.models.fastgan.train import diversity_shortfall, draw_batch, train

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--image-size", "32", "--batch", "4", "--generator-width", "4", "--discriminator-width", "4",
              "--sample-every", "1000", "--no-progress"]
STATE = ("generator", "discriminator", "ema", "optimizer_generator", "optimizer_discriminator", "rng")


def spectgan_command(*arguments) -> list[str]:
    return [sys.executable, "-m", "spectgan.cli", *arguments]


def run_spectgan(*arguments, timeout=240):
    result = subprocess.run(spectgan_command(*arguments), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_same_state(first: dict, second: dict) -> None:
    def compare(a, b, where):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), where
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                compare(a[key], b[key], f"{where}/{key}")
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), where
            for index, (x, y) in enumerate(zip(a, b)):
                compare(x, y, f"{where}[{index}]")
        else:
            assert a == b, where

    assert first["step"] == second["step"]
    for name in STATE:
        compare(first[name], second[name], name)


def test_tiny_training_run_writes_checkpoint_logs_and_grids(toy_cohort, tmp_path):
    run = tmp_path / "run"
    train(run, progress=False, cohort=str(toy_cohort), levels="BG,COR", iterations=6, batch_size=4, image_size=32,
          sample_every=3, checkpoint_every=4, log_every=2, **TINY_NETWORK)
    checkpoint = load_checkpoint(run)
    assert checkpoint["step"] == 6 and checkpoint["settings"]["levels"] == ("BG", "COR")
    assert [entry["step"] for entry in checkpoint["history"]] == [2, 4, 6]
    assert all(torch.isfinite(torch.tensor(value)) for entry in checkpoint["history"] for value in entry.values())
    assert set(checkpoint["history"][0]) == {"step", "d_real", "d_fake", "reconstruction", "d_classes", "g", "g_classes",
                                               "diversity"}
    assert 0.0 < checkpoint["data"]["pair_spread"] < 2.0
    assert checkpoint["data"]["image_size"] == 32 and checkpoint["data"]["pixel_spacing_mm"] == 7.0
    assert set(checkpoint["data"]["slices_per_condition"]) == {
        "BG-normal", "BG-unilateral-left", "BG-unilateral-right", "BG-bilateral",
        "COR-normal", "COR-unilateral-left", "COR-unilateral-right", "COR-bilateral"}
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    generator_moved = any(not torch.equal(a, b) for a, b in zip(checkpoint["generator"].values(),
                                                                 checkpoint["ema"].values()))
    assert generator_moved  # the EMA lags the generator


def test_batches_are_groups_of_one_condition_in_the_cohort_frequencies():
    condition_ids = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    torch.manual_seed(0)
    batches = torch.stack([condition_ids[draw_batch(condition_ids, 16)] for _ in range(500)])
    groups = batches.reshape(500, 16 // minibatch_group(16), minibatch_group(16))
    assert (groups == groups[:, :, :1]).all()  # every group one condition
    frequencies = torch.bincount(groups[:, :, 0].flatten(), minlength=3) / groups[:, :, 0].numel()
    assert torch.allclose(frequencies, torch.tensor([0.6, 0.3, 0.1]), atol=0.04)
    assert minibatch_group(6) == 3 and minibatch_group(2) == 2 and minibatch_group(7) == 1


def test_diversity_shortfall_is_zero_at_the_real_spread_and_one_for_alike_pairs():
    torch.manual_seed(0)
    alike = (torch.rand(1, 1, 8, 8).repeat(8, 1, 1, 1) + 1e-4 * torch.randn(8, 1, 8, 8)).requires_grad_(True)
    shortfall = diversity_shortfall(alike, pair_spread=0.1)
    assert shortfall.item() == pytest.approx(1.0, abs=0.01)
    shortfall.backward()  # pushes the images of a pair apart
    assert (alike.grad[0::2] * (alike[0::2] - alike[1::2]).detach() < 0).all()
    spread = torch.zeros(8, 1, 8, 8)
    spread[1::2] = 0.3
    assert diversity_shortfall(spread, pair_spread=0.1).item() == 0.0
    assert diversity_shortfall(spread[:6], pair_spread=0.0).item() == 0.0


def test_existing_run_needs_resume_and_keeps_its_settings(toy_cohort, tmp_path):
    run = tmp_path / "run"
    common = dict(progress=False, cohort=str(toy_cohort), image_size=32, batch_size=4, **TINY_NETWORK)
    train(run, iterations=2, **common)
    with pytest.raises(SpectganError, match="--resume"):
        train(run, iterations=3, **common)
    with pytest.raises(SpectganError, match="batch_size 8"):
        train(run, resume=True, iterations=3, **{**common, "batch_size": 8})
    train(run, resume=True, iterations=3, **common)
    assert load_checkpoint(run)["step"] == 3


def test_joint_discriminator_batch_shares_the_batch_statistics_and_is_kept_on_resume(toy_cohort, tmp_path):
    common = dict(progress=False, cohort=str(toy_cohort), image_size=32, batch_size=4, log_every=1, **TINY_NETWORK)
    train(tmp_path / "separate", iterations=1, **common)
    train(tmp_path / "joint", iterations=1, joint_discriminator_batch=True, **common)
    separate, joint = load_checkpoint(tmp_path / "separate"), load_checkpoint(tmp_path / "joint")
    assert joint["settings"]["joint_discriminator_batch"] is True
    assert all(torch.isfinite(torch.tensor(value)) for value in joint["history"][0].values())
    # the same seed, images and weights: only the batch statistics the discriminator normalises with differ
    assert joint["history"][0]["d_real"] != separate["history"][0]["d_real"]
    train(tmp_path / "joint", resume=True, iterations=2, progress=False)
    assert load_checkpoint(tmp_path / "joint")["settings"]["joint_discriminator_batch"] is True
    # a batch of 6 (groups of 3 per half, where the whole batch of 12 would take groups of 4 across the halves)
    train(tmp_path / "six", iterations=1, joint_discriminator_batch=True, **{**common, "batch_size": 6})
    six = load_checkpoint(tmp_path / "six")["history"][0]
    assert all(torch.isfinite(torch.tensor(value)) for value in six.values())


def test_noise_stage_is_estimated_once_from_the_train_split_and_kept_on_resume(toy_cohort, tmp_path):
    from spectgan.models.fastgan.bundle import export_bundle, load_bundle

    run = tmp_path / "run"
    common = dict(progress=False, cohort=str(toy_cohort), image_size=32, batch_size=4, **TINY_NETWORK)
    train(run, iterations=2, output_noise=True, **common)
    noise = load_checkpoint(run)["settings"]["output_noise"]
    assert set(noise) == {"gain", "exponent", "sigma_px"} and noise["gain"] > 0 and noise["sigma_px"] > 0
    assert load_checkpoint(run)["network"]["generator"]["output_noise"] == noise
    train(run, resume=True, iterations=3, **common)
    assert load_checkpoint(run)["settings"]["output_noise"] == noise  # not estimated again
    export_bundle(run, tmp_path / "bundle")
    generator = load_bundle(tmp_path / "bundle").generator
    assert generator.noise_stage is not None and generator.noise_stage.gain == noise["gain"]
    assert "noise stage estimated from the training cohort" in (tmp_path / "bundle/docs/README.md").read_text()


def test_run_with_defect_axes_fine_tunes_a_run_without_them(toy_lesion_cohort, tmp_path):
    from spectgan.models.fastgan.bundle import export_bundle
    from spectgan.models.fastgan.train import DEFECT_MODULES
    from spectgan.models.synthesizer import load_synthesizer

    common = dict(progress=False, cohort=str(toy_lesion_cohort), levels="BG,COR", image_size=32, batch_size=4,
                  **TINY_NETWORK)
    train(tmp_path / "plain", iterations=1, **common)
    plain = load_checkpoint(tmp_path / "plain")
    train(tmp_path / "axes", iterations=1, defect_axes=True, generator_classification_weight=0.0,
          generator_defect_weight=0.0,
          calibrated_severity=True, colour_augment_probability=0.0, defect_locality_weight=1.0,
          defect_profile_weight=1.0, normal_asymmetry_weight=1.0, count_level_weight=1.0,
          init_from=str(tmp_path / "plain"), log_every=1,
          **common)
    axes = load_checkpoint(tmp_path / "axes")
    assert axes["settings"]["calibrated_severity"] is True and axes["settings"]["colour_augment_probability"] == 0
    assert axes["settings"]["defect_locality_weight"] == 1.0 and "locality" in axes["history"][-1]
    assert axes["settings"]["defect_profile_weight"] == 1.0 and "profile" in axes["history"][-1]
    assert axes["settings"]["normal_asymmetry_weight"] == 1.0 and "asymmetry" in axes["history"][-1]
    assert axes["settings"]["count_level_weight"] == 1.0 and "count_level" in axes["history"][-1]
    assert axes["severity_calibration"]["sums"][:, 0].sum() > 0  # the real batch's hemispheres are counted
    train(tmp_path / "axes", resume=True, iterations=2, **{key: common[key] for key in ("progress",)})
    resumed = load_checkpoint(tmp_path / "axes")
    assert resumed["severity_calibration"]["sums"][:, 0].sum() > axes["severity_calibration"]["sums"][:, 0].sum()
    axes = resumed
    territories = axes["data"]["territories"]
    assert territories and territories == sorted(territories)
    for network in ("generator", "discriminator"):
        assert axes["network"][network]["territories"] == territories
    assert axes["settings"]["generator_classification_weight"] == axes["settings"]["generator_defect_weight"] == 0.0
    added = [key for key in axes["generator"] if key.startswith(DEFECT_MODULES)]
    assert added and set(axes["generator"]) - set(added) == set(plain["generator"])
    assert any(torch.count_nonzero(axes["generator"][key]) for key in added)  # the zero start learned in one step
    export_bundle(tmp_path / "axes", tmp_path / "bundle")
    model = load_synthesizer(tmp_path / "bundle")
    assert model.defect_axes().territories == {"BG": ("ACA", "MCA", "PCA"), "COR": ("ACA", "MCA")}
    assert "## Defect axes" in (tmp_path / "bundle/docs/README.md").read_text()
    (tmp_path / "bundle/docs/evaluation").mkdir()
    (tmp_path / "bundle/docs/evaluation/report.md").write_text("the shipped version's evaluation")
    export_bundle(tmp_path / "axes", tmp_path / "bundle", version="9.9.9")  # a new version over the shipped one
    assert (tmp_path / "bundle/docs/evaluation/report.md").read_text() == "the shipped version's evaluation"
    assert json.loads((tmp_path / "bundle/configs/metadata.json").read_text())["version"] == "9.9.9"
    with pytest.raises(SpectganError, match="does not fit"):  # another architecture is not a start
        train(tmp_path / "wide", iterations=1, init_from=str(tmp_path / "axes"), **{**common, "condition_dim": 4})


def test_cli_errors_are_messages(toy_cohort, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "--cohort is required" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "run"), "--cohort", str(tmp_path)]) == 2
    assert "not a spectgan cohort" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "other"), "--cohort", str(toy_cohort), "--batch", "1"]) == 2
    assert "at least 2 images per process" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "local"), "--cohort", str(toy_cohort),
                 "--defect-locality-weight", "1"]) == 2
    assert "--defect-locality-weight needs --defect-axes" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "profile"), "--cohort", str(toy_cohort),
                 "--defect-profile-weight", "1"]) == 2
    assert "--defect-profile-weight needs --defect-axes" in capsys.readouterr().err


def replaced(path: Path) -> Callable[[], bool]:
    """A test that turns true once ``path`` has been replaced after it was first seen (checkpoints are written
    atomically, each as a new file): the run is past its first checkpoint, in the middle of its work."""
    first: list[tuple[int, int]] = []

    def ready() -> bool:
        try:
            status = path.stat()
        except FileNotFoundError:
            return False
        stamp = (status.st_ino, status.st_mtime_ns)
        first[:] = first or [stamp]
        return stamp != first[0]
    return ready


def test_run_killed_with_sigkill_resumes_to_identical_state(toy_cohort, tmp_path):
    flags = ["--cohort", str(toy_cohort), *TINY_FLAGS, "--checkpoint-every", "2"]
    killed = tmp_path / "killed"
    kill_when(["train", "--out", str(killed), "--iters", "100000", *flags], replaced(killed / "checkpoint.pt"), 180)
    total = load_checkpoint(killed)["step"] + 3
    run_spectgan("train", "--out", str(killed), "--resume", "--iters", str(total), *flags)
    uninterrupted = tmp_path / "uninterrupted"  # in this process, through the same command line
    assert main(["train", "--out", str(uninterrupted), "--iters", str(total), *flags]) == 0
    assert_same_state(load_checkpoint(killed), load_checkpoint(uninterrupted))


@pytest.mark.slow
def test_torchrun_ddp_on_two_cpu_processes(toy_cohort, tmp_path):
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "spectgan.cli", "train", "--out", str(run),
                             "--cohort", str(toy_cohort), "--iters", "3", "--checkpoint-every", "2", *TINY_FLAGS],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_checkpoint(run)
    assert checkpoint["step"] == 3 and len(checkpoint["rng"]) == 2
    assert not torch.equal(checkpoint["rng"][0]["cpu"], checkpoint["rng"][1]["cpu"])  # own streams per process
    assert checkpoint["hardware"].startswith("2 x cpu")
    assert checkpoint["commands"][0].startswith("torchrun --nproc_per_node 2 -m spectgan.cli train")
