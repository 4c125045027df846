"""tinypretrain play: two runs side by side, through Gradio's API (gradio_client) and through a real headless browser
(Selenium with Debian's Chromium), and the refusals that come before any server starts."""

import shutil
import socket

import pytest

from tinypretrain.cli import main
from tinypretrain.model.generate import SAMPLING, continue_prompts
from tinypretrain.runs.play import load_runs, serve

TINY = ["--builtin_stories", "300", "--max_length", "48", "--vocab_size", "300", "--max_eval_samples", "4",
        "--eval_size", "4", "--num_samples", "0", "--story_samples", "0", "--per_device_train_batch_size", "4",
        "--model_overrides", '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, '
        '"num_key_value_heads": 1}']
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "no Chromium: apt-get install -y chromium chromium-driver (Debian), then pip install selenium"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A base and its sft run: the page shows both, and the prompt builder for the sft one."""
    folder = tmp_path_factory.mktemp("play")
    assert main(["train", *TINY, "--max_steps", "40", "--output_dir", str(folder / "base")]) == 0
    assert main(["sft", str(folder / "base"), "--builtin_stories", "100", "--heldout_prompts", "4",
                 "--max_eval_samples", "4", "--num_samples", "0", "--story_max_new_tokens", "8", "--max_steps", "2",
                 "--output_dir", str(folder / "sft")]) == 0
    return [str(folder / "base"), str(folder / "sft")]


@pytest.fixture
def page(two_runs, monkeypatch):
    pytest.importorskip("gradio", reason='pip install "tinypretrain[play]"')
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serve(two_runs, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def _expected(run_dirs, prompt, max_new_tokens, temperature, top_p, seed):
    return [continue_prompts(run.model, run.tokenizer, [prompt], max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, seed=seed)[0].text for run in load_runs(run_dirs)]


@pytest.mark.slow
def test_the_generate_endpoint_gives_one_text_per_run_and_a_seed_fixes_them(two_runs, page):
    from gradio_client import Client

    client = Client(page, verbose=False)
    first = client.predict("Once upon a time", 24, 0.8, 0.95, 7, api_name="/generate")
    assert client.predict("Once upon a time", 24, 0.8, 0.95, 7, api_name="/generate") == first
    assert list(first) == _expected(two_runs, "Once upon a time", 24, 0.8, 0.95, 7)
    assert all(first) and first != client.predict("Once upon a time", 24, 0.8, 0.95, 8, api_name="/generate")
    built = client.predict("dog, ball", "", True, api_name="/build_prompt")
    assert built == "Features: Dialogue\nWords: dog, ball\nStory:"


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_BROWSER)
def test_a_browser_types_a_prompt_presses_generate_and_reads_every_run(two_runs, page):
    webdriver = pytest.importorskip("selenium.webdriver", reason=NO_BROWSER)
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(page)
        wait = WebDriverWait(driver, 120)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea"))
        wait.until(lambda d: box.get_attribute("value") == "Once upon a time")  # the page is live
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("Tom and his dog")
        wait.until(lambda d: box.get_attribute("value") == "Tom and his dog")
        expected = _expected(two_runs, "Tom and his dog", SAMPLING.max_new_tokens, SAMPLING.temperature,
                             SAMPLING.top_p, 0)
        driver.find_element(By.CSS_SELECTOR, "#generate").click()

        def columns(d):
            return [_shown(d.find_element(By.CSS_SELECTOR, f"#run-{i} textarea").get_attribute("value"))
                    for i in range(2)]

        wait.until(lambda d: columns(d) == [_shown(text) for text in expected])
        headers = driver.find_element(By.TAG_NAME, "body").text
        assert "base: " in headers and "sft: " in headers and "bits/byte" in headers
    finally:
        driver.quit()


def _shown(text: str) -> str:
    """What a browser's text box shows of ``text``: printable characters (a tiny model writes stray bytes too)."""
    return "".join(c for c in text if c.isprintable() or c == "\n").strip()


def test_play_refuses_a_folder_that_is_no_run_before_serving(two_runs, tmp_path, capsys):
    assert main(["play", two_runs[0], str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no run.json" in err and "Traceback" not in err
    broken = shutil.copytree(two_runs[0], tmp_path / "broken")
    (broken / "tokenizer.json").unlink()
    (broken / "tokenizer_config.json").unlink()
    assert main(["play", str(broken)]) == 2
    assert "holds no tokenizer" in capsys.readouterr().err


def test_without_gradio_play_names_the_extra(two_runs, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert main(["play", *two_runs]) == 2
    assert 'pip install "tinypretrain[play]"' in capsys.readouterr().err
