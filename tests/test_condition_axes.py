"""A new condition axis needs no front-end change: a stand-in model (``stand_in_family``) whose bundle declares two
axes beyond level, pattern and side (a tracer to choose, an age to type) is served by a real server; ``/info/`` lists
them as structured data, the server checks and passes their values, the spectgan page (real headless Chromium) and
the 3D Slicer module's Logic (over the ``slicer`` stand-in) offer them as controls, and both send them."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests
from slicer_fixtures import slicer_module  # noqa: F401 (a fixture)
from stand_in_family import MODULE, NAME, write_bundle
from test_reader_study import text_of
from test_workstation_page import artifacts, browser  # noqa: F401 (fixtures)
from test_workstation_page import choose, generate, open_page, record_sent_params, sent_params

from spectgan.conditions import AxisKind, ConditionAxis
from spectgan.models.synthesizer import FAMILIES_ENV
from spectgan.serving.settings import SAMPLE_STUDIES_DIR
from spectgan.tools.server import ServerProcess

MODEL = "with_more_axes"
STUDY = "study_normal_axial"
TRACER = ConditionAxis("tracer", AxisKind.CATEGORICAL, ("IMP", "ECD", "HMPAO"), default="IMP",
                       description="perfusion tracer")
AGE = ConditionAxis("age", AxisKind.CONTINUOUS, minimum=20.0, maximum=90.0, unit="years", required=False,
                    applies_when={"pattern": ("unilateral", "bilateral")}, description="patient age")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app serving one stand-in bundle that declares the tracer and age axes."""
    folder = tmp_path_factory.mktemp("axes")
    studies = Path(shutil.copytree(SAMPLE_STUDIES_DIR, folder / "studies"))
    write_bundle(folder / "models", MODEL, axes=(TRACER, AGE))
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    with ServerProcess(studies, folder / "models", folder / "server.log", conf={"generation_workers": "1"},
                       environment={FAMILIES_ENV: f"{NAME}={MODULE}", "PYTHONPATH": path}) as process:
        yield process


def infer(server, params: dict) -> requests.Response:
    return requests.post(f"{server.url}/infer/{MODEL}", params={"image": STUDY, "output": "json"},
                         data={"params": json.dumps(params)}, timeout=300)


def test_info_lists_the_declared_axes_and_the_server_checks_and_passes_their_values(server):
    model = requests.get(f"{server.url}/info/", timeout=30).json()["models"][MODEL]
    assert [axis["name"] for axis in model["axes"]] == ["level", "pattern", "side", "tracer", "age"]
    assert model["axes"][3] == TRACER.to_dict() and model["axes"][4] == AGE.to_dict()
    assert model["params"]["tracer"]["allowed"] == ["IMP", "ECD", "HMPAO"]

    refused = infer(server, {"level": "BG", "pattern": "normal", "tracer": "FDG"})
    assert refused.status_code == 422 and "allowed: IMP, ECD, HMPAO" in refused.json()["detail"]
    refused = infer(server, {"level": "BG", "pattern": "normal", "age": 70})  # age applies to defects only
    assert refused.status_code == 422 and "age does not apply here" in refused.json()["detail"]
    refused = infer(server, {"level": "BG", "pattern": "unilateral", "side": "left", "age": 9})
    assert refused.status_code == 422 and "[20, 90] (years)" in refused.json()["detail"]
    given = infer(server, {"level": "BG", "pattern": "unilateral", "side": "left", "tracer": "ECD", "age": "70"})
    assert given.status_code == 200 and given.json()["options"] == {"tracer": "ECD", "age": 70.0}
    assert infer(server, {"level": "BG", "pattern": "normal"}).json()["options"] == {"tracer": "IMP"}  # default


def test_the_page_builds_a_control_for_each_declared_axis(server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    choose(browser, "study", STUDY)
    choose(browser, "model", MODEL)
    assert [option.get_attribute("value") for option in browser.find_elements(By.CSS_SELECTOR, "#tracer option")] \
        == ["IMP", "ECD", "HMPAO"]
    choose(browser, "level", "BG")
    choose(browser, "pattern", "normal")
    assert not browser.find_element(By.ID, "age-box").is_displayed()  # it applies to defects only
    choose(browser, "pattern", "unilateral")
    age = browser.find_element(By.ID, "age")
    assert age.is_displayed() and (age.get_attribute("min"), age.get_attribute("max")) == ("20", "90")
    choose(browser, "side", "right")
    choose(browser, "tracer", "ECD")
    age.send_keys("70")
    record_sent_params(browser)
    generate(browser, "4", expected=1)
    assert sent_params(browser) == [{"level": "BG", "pattern": "unilateral", "side": "right", "tracer": "ECD",
                                     "age": "70", "seed": 4, "base": "model"}]
    assert text_of(browser, "error") == ""


def test_the_slicer_logic_specifies_a_control_for_each_declared_axis_and_sends_its_value(server, slicer_module):  # noqa: F811,E501
    logic = slicer_module.SpectGANLogic()
    parameters = logic.getParameterNode()
    assert logic.connect(server.url) == [MODEL]
    controls = {control.name: control for control in logic.axisControls(MODEL, parameters)}
    assert list(controls) == ["level", "pattern", "side", "tracer", "age"]
    assert controls["tracer"].items == ["IMP", "ECD", "HMPAO"] and controls["tracer"].kind == "categorical"
    assert controls["age"].kind == "continuous" and controls["age"].placeholder == "drawn: 20 to 90"
    for name, value in (("model", MODEL), ("imageId", STUDY), ("level", "COR"), ("pattern", "all"),
                        ("side", "right"), ("tracer", "HMPAO"), ("age", "55"), ("seed", "2")):
        parameters.SetParameter(name, value)
    _, nodes = logic.generateFromParameters(parameters)
    assert [node.GetName() for node in nodes] == ["COR-normal_seed2", "COR-unilateral-right_seed2",
                                                  "COR-bilateral_seed2"]
    assert [result.options for result in logic.results] == [
        {"tracer": "HMPAO"}, {"tracer": "HMPAO", "age": 55.0}, {"tracer": "HMPAO", "age": 55.0}]
