"""The used-by journeys in a real browser (Debian's chromium, driven by Selenium) against
`followrec ui`: sign into Airflow, trigger followrec_features from its Trigger form with
Params changed there, watch it and the Asset-triggered followrec_training go green; find the
champion in the MLflow registry with its metrics and training plot; find a feature view in
the Feast UI. Screenshots of every page land in RUN/screenshots."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from feast import FeatureStore
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from followrec.registry.aliases import CHAMPION, alias_version
from followrec.registry.tracking import MODEL_NAME, registry_client
from tests.serving.conftest import free_port, wait_for

GREEN_BADGE = "//span[@data-testid='state-badge'][normalize-space()='Success']"
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture()
def browser():
    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(flag)
    options.page_load_strategy = "eager"  # the single-page apps keep connections open
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def ui(own_run):
    """`followrec ui` on the run: its URLs and the printed login; SIGTERM afterwards."""
    ports = {name: free_port() for name in ("airflow", "mlflow", "feast")}
    argv = [sys.executable, "-m", "followrec", "ui", "--run", str(own_run)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    # Into a file: the processes' request logs would fill a pipe nobody reads and block them.
    log = own_run / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        login = wait_for(lambda: re.search(r"login admin / (\S+)\)", log.read_text()),
                         120, "the login line")  # fmt: skip
        password = login.group(1)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name in ("mlflow", "feast"):
            wait_for(lambda n=name: httpx.get(urls[n]).status_code == 200, 180, name)
        yield urls, password
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


class Pages:
    """The browser with a screenshot after each step (RUN/screenshots/NN-name.png)."""

    def __init__(self, driver: webdriver.Chrome, folder: Path) -> None:
        self.driver = driver
        # The single-page apps re-render under the test: an element found a moment ago may
        # be gone (stale); the wait then looks again.
        self.wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        count = len(list(self.folder.glob("*.png")))
        self.driver.save_screenshot(str(self.folder / f"{count:02d}-{name}.png"))

    def find(self, xpath: str):  # noqa: ANN201 - a WebElement
        """The first displayed element matching (a page may hold hidden copies first)."""

        def shown(driver: webdriver.Chrome):  # noqa: ANN202
            return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()),
                        False)  # fmt: skip

        try:
            return self.wait.until(shown)
        except TimeoutException:
            self.shot("not-found")
            raise AssertionError(f"not on {self.driver.current_url}: {xpath}") from None

    def click(self, xpath: str) -> None:
        self.wait.until(ready.element_to_be_clickable((By.XPATH, xpath))).click()

    def replace_text(self, element_id: str, text: str) -> None:
        """Type into a form field; the form re-renders as it validates and may drop a
        keystroke on a loaded machine, so what the field holds is checked and retyped."""
        field = self.wait.until(ready.presence_of_element_located((By.ID, element_id)))
        for _ in range(3):
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
            for char in text:  # one key at a time, as a person types
                field.send_keys(char)
                time.sleep(0.05)
            time.sleep(0.5)
            if field.get_attribute("value") == text:
                return
        raise AssertionError(f"{element_id} holds {field.get_attribute('value')!r}, not {text!r}")

    def body(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text


def finished(api: httpx.Client, dag: str, run_id: str, seconds: float) -> str:
    """Wait for a DAG run to finish (the same API the UI polls); its state."""

    def state() -> str | None:
        found = api.get(f"/dags/{dag}/dagRuns/{run_id}").json()["state"]
        return found if found in ("success", "failed") else None

    return wait_for(state, seconds, f"{dag} run {run_id}")


def test_airflow_mlflow_and_feast_journeys_in_chromium(ui, own_run, browser, twitch_dir):
    urls, password = ui
    pages = Pages(browser, own_run / "screenshots")
    airflow = urls["airflow"]

    # Sign in through the login form.
    wait_for(lambda: httpx.get(f"{airflow}/api/v2/monitor/health").status_code == 200,
             180, "airflow")  # fmt: skip
    browser.get(airflow)
    pages.find("//input[@name='username']").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(password)
    pages.shot("airflow-login")
    pages.click("//button[@type='submit']")
    pages.find("//*[normalize-space()='Dags']")

    # Trigger followrec_features from its form, with Params changed there.
    browser.get(f"{airflow}/dags/followrec_features")
    pages.click("//button[normalize-space()='Trigger']")
    pages.replace_text("element_twitch_languages", "PTBR")
    pages.replace_text("element_run_dir", str(own_run))
    pages.replace_text("element_extra_settings",
                       f"train.epochs=2\ndata.twitch_dir={twitch_dir}")  # fmt: skip
    pages.shot("airflow-trigger-form")
    pages.click("//button[@data-testid='trigger-dag-submit']")
    pages.wait.until(lambda d: "/runs/" in d.current_url)
    features_url = browser.current_url
    run_id = features_url.rsplit("/runs/", 1)[1]

    # What the form sent is what the run got.
    login = {"username": "admin", "password": password}
    token = httpx.post(f"{airflow}/auth/token", json=login).json()["access_token"]
    api = httpx.Client(base_url=f"{airflow}/api/v2", headers={"Authorization": f"Bearer {token}"},
                       timeout=30)  # fmt: skip
    conf = api.get(f"/dags/followrec_features/dagRuns/{run_id}").json()["conf"]
    assert conf["twitch_languages"] == ["PTBR"] and conf["run_dir"] == str(own_run)
    assert conf["extra_settings"] == ["train.epochs=2", f"data.twitch_dir={twitch_dir}"]

    # The run page turns green.
    assert finished(api, "followrec_features", run_id, 300) == "success"
    browser.get(features_url)
    pages.find(GREEN_BADGE)
    pages.shot("airflow-features-green")

    # followrec_training runs from the features Asset event and goes green too.
    def training_run():
        runs = api.get("/dags/followrec_training/dagRuns").json()["dag_runs"]
        return [r for r in runs if r["run_type"] == "asset_triggered"]

    training = wait_for(training_run, 120, "an Asset-triggered training run")[-1]
    assert finished(api, "followrec_training", training["dag_run_id"], 420) == "success"
    browser.get(f"{airflow}/dags/followrec_training/runs/{training['dag_run_id']}")
    pages.find(GREEN_BADGE)
    pages.shot("airflow-training-green")
    browser.get(f"{airflow}/dags/followrec_training/runs")
    pages.find("//*[normalize-space()='Asset Triggered']")
    pages.shot("airflow-training-runs")

    # The registry page: the champion's row, its version page, its run's metrics and plot.
    client = registry_client(f"sqlite:///{own_run / 'mlflow.db'}")
    champion = alias_version(client, CHAMPION)
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 3  # + this training
    browser.get(f"{urls['mlflow']}/#/models/{MODEL_NAME}")
    pages.find("//*[text()='champion']")
    pages.shot("mlflow-registry")
    pages.click(f"//a[normalize-space()='Version {champion.version}']")
    pages.wait.until(lambda d: d.current_url.endswith(f"/versions/{champion.version}"))
    pages.find("//*[text()='champion']")
    assert f"Version {champion.version}" in pages.body()
    assert champion.tags["index.version"] in pages.body()
    pages.shot("mlflow-champion-version")
    pages.click("//a[contains(@href, '/runs/')]")
    pages.find("//*[normalize-space()='test_recall_at_100']")
    pages.shot("mlflow-champion-metrics")
    pages.click("//*[normalize-space()='Artifacts']")
    pages.click("//*[normalize-space()='training_two_tower.png']")
    pages.find("//img[starts-with(@src, 'blob:')]")  # the plot, previewed
    pages.shot("mlflow-training-plot")

    # The Feast UI: the project's feature views, one opened with its features.
    store = FeatureStore(repo_path=str(own_run / "feast"))
    view = store.list_feature_views()[0]
    browser.get(f"{urls['feast']}/p/{store.project}/feature-view")
    pages.click(f"//a[normalize-space()='{view.name}']")
    pages.find(f"//*[normalize-space()='{view.features[0].name}']")
    pages.shot("feast-feature-view")
    assert len(list(pages.folder.glob("*.png"))) == 10
