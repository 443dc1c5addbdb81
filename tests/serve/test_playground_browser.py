"""The playground and the bench page in a real headless Chromium (Debian's `chromium`, driven by
Playwright): a stream renders, the colours match the stats the server reported, the side-by-side
view works, diffusion canvases replay, the bench page shows the table and plots. Slow: not in
`make test`. Set DECODELAB_SCREENSHOTS=DIR to keep the screenshots."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import decodelab
from serve.serve_helpers import start

pytestmark = pytest.mark.slow
CODE = "import os\n\n\ndef main():\n    "
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("these tests need Debian's chromium: apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    out = Path(os.environ.get("DECODELAB_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _pane(page, pane: str) -> dict:
    """What pane a/b shows: token kinds, per-step token counts, its stats, its text."""
    return page.evaluate("""(id) => {
        const el = document.querySelector('#pane-' + id);
        const n = (sel) => el.querySelectorAll(sel).length;
        return {accepted: n('.tok.accepted'), bonus: n('.tok.bonus'), plain: n('.tok.plain'),
                rejected: n('.tok.rejected'),
                steps: [...el.querySelectorAll('.output .step')].map(s => s.querySelectorAll(
                    '.tok.accepted, .tok.bonus, .tok.plain').length),
                stepAccepted: [...el.querySelectorAll('.output .step')].map(s => s.querySelectorAll(
                    '.tok.accepted').length),
                text: [...el.querySelectorAll('.tok.accepted, .tok.bonus, .tok.plain')].map(t => t.textContent).join(''),
                stats: JSON.parse(el.dataset.stats || 'null'), tau: el.querySelector('.s-tau').textContent,
                fwd: el.querySelector('.s-fwd').textContent, tps: el.querySelector('.s-tps').textContent,
                cells: n('.canvas .cell'), stepped: n('.canvas .cell[data-step]'),
                replay: !el.querySelector('.replay').hidden};
    }""", pane)


def test_side_by_side_stream_colours_match_the_servers_stats(browser, zoo_models, shots):
    target, draft = zoo_models
    bg = start(target, draft, max_tokens=128)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(bg.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.fill("#prompt", CODE)
        page.fill("#max_tokens", "48")
        page.select_option("#pane-a .method", "greedy")
        page.select_option("#pane-b .method", "sps")
        page.fill("#pane-b .options input[name=gamma]", "4")
        page.click("#run")
        page.wait_for_selector("#pane-a[data-state='done']", timeout=60_000)
        page.wait_for_selector("#pane-b[data-state='done']", timeout=60_000)
        page.screenshot(path=str(shots / "playground-side-by-side.png"), full_page=True)
        a, b = _pane(page, "a"), _pane(page, "b")
        ref = decodelab.generate(target, CODE, max_new_tokens=48)
        ref_text = target.tokenizer.decode(ref.tokens)
        # greedy: every token from the target alone, one per forward
        assert a["plain"] == a["stats"]["new_tokens"] == 48 and a["accepted"] == a["bonus"] == 0
        assert a["tau"] == "1.00" and a["text"] == ref_text
        # sps: each step's tokens = what the server says that forward committed; accepted drafts
        # and bonus tokens add up to the output; lossless, so the same text as greedy
        st = b["stats"]
        assert b["steps"] == st["committed"] and b["accepted"] + b["bonus"] + b["plain"] == st["new_tokens"] == 48
        assert b["accepted"] > 0 and b["rejected"] > 0 and b["bonus"] > 0
        assert all(n - acc <= 1 for n, acc in zip(b["steps"], b["stepAccepted"]))  # at most one bonus per step
        assert b["tau"] == f"{st['tau']:.2f}" and b["fwd"] == str(st["target_forwards"]) and float(b["tps"]) > 0
        assert b["text"] == ref_text
        # one pane only
        page.uncheck("#compare")
        assert page.is_hidden("#pane-b")
    finally:
        bg.stop()


def test_errors_show_in_the_pane(browser, zoo_models):
    bg = start(*zoo_models, max_tokens=32)
    try:
        page = browser.new_page()
        page.goto(bg.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.uncheck("#compare")
        page.fill("#max_tokens", "500")
        page.click("#run")
        page.wait_for_selector("#pane-a[data-state='error']")
        assert "exceeds this server's limit of 32" in page.text_content("#pane-a .s-status")
    finally:
        bg.stop()


def _diffusion():
    names = [n for n, m in decodelab.methods().items() if m["family"] == "diffusion"]
    return names, "zoo:tasks-mdlm"


def test_diffusion_canvas_and_replay(browser, shots):
    names, model = _diffusion()
    if not names:
        pytest.skip("the diffusion family is not in this checkout")
    lm = decodelab.load(model)
    bg = start(lm, name=model, max_tokens=64)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(bg.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.fill("#prompt", "reverse: Ann, Bob, Cid, Dan, Eve =>")
        page.fill("#max_tokens", "16")
        page.select_option("#pane-a .method", "llada" if "llada" in names else names[0])
        page.fill("#pane-a .options input[name=steps]", "8")
        page.uncheck("#compare")
        page.click("#run")
        page.wait_for_selector("#pane-a:is([data-state='done'], [data-state='error'])", timeout=60_000)
        assert page.get_attribute("#pane-a", "data-state") == "done", page.text_content("#pane-a .s-status")
        a = _pane(page, "a")
        assert a["text"].startswith(" Eve, Dan, Cid, Bob, Ann")
        assert a["cells"] == 16 and a["stepped"] >= a["stats"]["new_tokens"] and a["replay"]
        assert a["fwd"] == str(a["stats"]["target_forwards"])
        steps = page.eval_on_selector_all("#pane-a .canvas .cell[data-step]", "cs => cs.map(c => +c.dataset.step)")
        assert max(steps) + 1 == len(a["stats"]["unmasked"]) or max(steps) + 1 <= a["stats"]["nfe"]
        page.screenshot(path=str(shots / "playground-diffusion.png"), full_page=True)
        page.click("#pane-a .replay")
        page.wait_for_timeout(400)
        page.screenshot(path=str(shots / "playground-diffusion-replay.png"), full_page=True)
    finally:
        bg.stop()


def test_bench_page_shows_the_table_and_plots(browser, tiny_dirs, zoo_models, tmp_path, shots):
    from decodelab.bench import report
    from decodelab.cli import main

    t, d = tiny_dirs["gpt2"]
    assert main(["bench", "--model", t, "--draft", d, "--workload", "synthetic", "--method", "greedy", "--method",
                 "sps:gamma=2", "--limit", "1", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "4",
                 "--threads", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    results = report.load(tmp_path / "results.json")
    engine_models = zoo_models
    from decodelab.serve import Engine
    from decodelab.serve.server import Background

    with Background(Engine(engine_models[0], name="zoo:code-target"), bench=results) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "/bench")
        page.wait_for_selector("body[data-ready='1']")
        rows = page.eval_on_selector_all("#report table tbody tr", "rs => rs.map(r => r.cells[0].textContent)")
        assert "greedy" in rows and "sps:gamma=2" in rows
        assert page.eval_on_selector_all("#plots img", "is => is.filter(i => i.naturalWidth > 0).length") >= 1
        page.screenshot(path=str(shots / "bench-page.png"), full_page=True)
        # a file chosen on the page is rendered the same way
        page.set_input_files("#file", str(tmp_path / "results.json"))
        page.wait_for_selector("body[data-ready='1']")
        assert "results.json" in page.text_content("#source")
    json.dumps(results)
