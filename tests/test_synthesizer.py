"""spectgan.models.synthesizer: the model contract that serving knows, the FastGAN family behind it, the bundles
found in a models folder, and bundles that record their condition vocabulary."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gan_toy_cohort import single_thread, toy_bundle, toy_cohort, toy_run  # noqa: F401 (fixtures)

from spectgan.conditions import Condition, Level, Pattern, Side, valid_conditions, vocabulary
from spectgan.errors import InvalidRequestError, SpectganError, UnavailableError
from spectgan.models.fastgan import sample
from spectgan.models.fastgan.bundle import METADATA_FILE, VOCABULARY_KEY
from spectgan.models.synthesizer import find_bundles, load_synthesizer
from spectgan.serving.service import GenerationService

CONDITIONS = [Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT), Condition(Level.COR, Pattern.NORMAL)]


def _copy(bundle: Path, folder: Path, name: str) -> Path:
    return Path(shutil.copytree(bundle, folder / name))


def _edit_metadata(bundle: Path, change) -> None:
    path = bundle / METADATA_FILE
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def test_the_fastgan_family_behind_the_contract(toy_bundle):  # noqa: F811
    synthesizer = load_synthesizer(toy_bundle)
    assert synthesizer is load_synthesizer(toy_bundle), "loaded once while the files are unchanged"
    assert synthesizer.describe()["family"] == "conditional_fastgan"
    assert synthesizer.conditions() == valid_conditions(synthesizer.levels)
    assert [option.name for option in synthesizer.options()] == ["psi"]
    counts = synthesizer.sample(CONDITIONS, seed=3, options={"psi": 0.7})
    size = synthesizer.describe()["image_size"]
    assert counts.shape == (2, size, size) and counts.dtype == np.float32 and counts.min() >= 0
    np.testing.assert_array_equal(counts, synthesizer.sample(CONDITIONS, seed=3, options={"psi": 0.7}))
    one, _ = sample(toy_bundle, "BG", "unilateral", "left", seed=3, n=1, psi=0.7)  # the FastGAN's own sampling
    np.testing.assert_array_equal(synthesizer.sample(CONDITIONS[:1], seed=3, options={"psi": 0.7}), one)


def test_an_option_is_checked_against_its_declared_range(toy_bundle):  # noqa: F811
    (psi,) = load_synthesizer(toy_bundle).options()
    assert psi.parse(None) == 1.0 and psi.parse("0.25") == 0.25
    for bad in (1.5, -0.1, "high", True, float("nan")):
        with pytest.raises(InvalidRequestError, match=r"psi must be a number in \[0, 1\]"):
            psi.parse(bad)


def test_the_models_are_the_bundles_found_in_the_folder(toy_bundle, tmp_path):  # noqa: F811
    for name in ("spect_fastgan_A", "another_model"):
        _copy(toy_bundle, tmp_path, name)
    (tmp_path / "runs" / "spect_fastgan_A").mkdir(parents=True)  # a training run: no bundle
    _copy(toy_bundle, tmp_path, ".spect_fastgan_A.staging.x")  # a bundle being published
    assert find_bundles(tmp_path) == ("another_model", "spect_fastgan_A")
    assert GenerationService(tmp_path).model_names == ("another_model", "spect_fastgan_A")


def test_a_bundle_records_its_vocabulary_and_another_one_is_a_clear_error(toy_bundle, tmp_path):  # noqa: F811
    assert json.loads((toy_bundle / METADATA_FILE).read_text())[VOCABULARY_KEY] == vocabulary()
    other = _copy(toy_bundle, tmp_path, "four_levels")
    _edit_metadata(other, lambda metadata: metadata[VOCABULARY_KEY]["levels"].append("PONS"))
    with pytest.raises(SpectganError, match="levels: trained with CER, BG, COR, PONS, this spectgan has CER, BG, "
                                            "COR.*retrain the model"):
        load_synthesizer(other)
    with pytest.raises(UnavailableError, match="another condition vocabulary") as raised:
        GenerationService(tmp_path, ["four_levels"]).synthesizer("four_levels")
    assert str(tmp_path) not in str(raised.value)
    old = _copy(toy_bundle, tmp_path, "made_before_vocabularies")
    _edit_metadata(old, lambda metadata: metadata.pop(VOCABULARY_KEY))
    assert load_synthesizer(old).sample(CONDITIONS[:1], seed=1, options={}).shape[0] == 1
