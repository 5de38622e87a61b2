"""The run page in a real browser: headless Debian chromium driven by Playwright (never a downloaded browser).

Skipped only when chromium or Playwright is missing outside CI; with CI=true a missing browser fails the test."""
from __future__ import annotations
import dataclasses, os, shutil, time
from pathlib import Path
import pytest
from aimo2_nb import trace as T
from aimo2_nb.viewer import export_html

CHROMIUM = os.environ.get('AIMO2_CHROMIUM', '/usr/bin/chromium')
FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'eval_run'
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'

def _need_browser():
    why = None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)): why = f"chromium not found at {CHROMIUM}"
    else:
        try: import playwright.sync_api  # noqa: F401
        except ImportError: why = "the playwright package is not installed"
    if why and IN_CI: pytest.fail(f"{why}: CI must run the browser test (.ci/extra-install installs it)")
    if why: pytest.skip(f"{why} (apt-get install chromium; pip install playwright)")

@pytest.fixture(scope='module')
def page_file(tmp_path_factory):
    "The fixture run's static page, plus one poisoned copy of a question carrying hostile text."
    d = tmp_path_factory.mktemp('run')
    run = d / 'run'; shutil.copytree(FIXTURE, run)
    evs = T.read_events(run / 'traces.jsonl')
    first = evs[0].qid
    bad = []
    for e in (e for e in evs if e.qid == first):
        e = dataclasses.replace(e, qid='hostile')
        if e.kind == 'sample_end': e = dataclasses.replace(e, text=HOSTILE + e.text)
        if e.kind == 'question_start': e = dataclasses.replace(e, question=HOSTILE)
        bad.append(e)
    w = T.TraceWriter(run / 'traces.jsonl')
    for e in bad: w.add(e)
    return export_html(run, d / 'page.html'), T.by_question(T.read_events(run / 'traces.jsonl'))

@pytest.fixture(scope='module')
def browser_page(page_file, tmp_path_factory):
    _need_browser()
    from playwright.sync_api import sync_playwright
    profile = tmp_path_factory.mktemp('chromium-profile')
    t0 = time.monotonic()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={'width': 1200, 'height': 900})
        try:
            pg = ctx.new_page()
            requests = []
            pg.on('request', lambda r: requests.append(r.url))
            pg.goto(page_file[0].as_uri())
            pg.wait_for_load_state('load')
            yield pg, page_file[1], requests
        finally:
            ctx.close()
    print(f"browser session: {time.monotonic() - t0:.1f}s")

def test_questions_and_lanes(browser_page):
    pg, qs, _ = browser_page
    assert pg.locator('.aimo2-trace.question').count() == len(qs) == 11
    for qid, evs in qs.items():
        start = next(e for e in evs if e.kind == 'question_start')
        sec = pg.locator(f'.question[data-qid="{qid}"]')
        assert sec.locator('.lane').count() == len(start.kinds)
        for i, kind in enumerate(start.kinds):
            assert sec.locator(f'.lane[data-sample="{i}"]').get_attribute('data-kind') == kind
        answers = [e for e in evs if e.kind == 'answer']
        assert sec.locator('li.answer').count() == len(answers)
        assert sorted(sec.locator('li.answer').evaluate_all('els => els.map(e => e.dataset.value)')) == sorted(str(a.value) for a in answers)
        end = next(e for e in evs if e.kind == 'question_end')
        assert sec.locator('.verdict .final-answer').inner_text().strip() == str(end.answer)
        qstop = next(e for e in evs if e.kind == 'question_stop')
        assert sec.locator('.decision .stop-reason').inner_text() == qstop.reason
        for e in (e for e in evs if e.kind == 'sample_stop'):
            assert e.reason in sec.locator(f'.lane[data-sample="{e.sample}"] .lane-head .stop-reason').inner_text()

def test_expand_a_sample(browser_page):
    pg, qs, _ = browser_page
    qid, evs = next((q, evs) for q, evs in qs.items() if q != 'hostile')
    end = next(e for e in evs if e.kind == 'sample_end' and e.text.strip())
    lane = pg.locator(f'.question[data-qid="{qid}"] .lane[data-sample="{end.sample}"]')
    text = lane.locator('details.sample-text pre.text')
    assert not text.is_visible()
    lane.locator('details.sample-text > summary').click()
    assert text.is_visible()
    assert text.inner_text().strip()[:200] == end.text.strip()[:200]
    code = pg.locator('.code-run details').first
    if code.count():
        code.locator('summary').click()
        assert code.locator('pre.code').is_visible()

def test_hostile_text_is_inert_in_the_browser(browser_page):
    pg, _, requests = browser_page
    assert pg.evaluate('window.pwned') is None
    assert pg.evaluate('document.querySelectorAll("script, img, iframe").length') == 0
    sec = pg.locator('.question[data-qid="hostile"]')
    assert '<script>window.pwned=1</script>' in sec.locator('.qtext').inner_text()
    sec.locator('.lane[data-sample="0"] details.sample-text > summary').click()
    assert sec.locator('.lane[data-sample="0"] pre.text').inner_text().startswith(HOSTILE)
    assert all(u.startswith('file://') for u in requests), requests  # nothing from the network

def test_screenshot(browser_page, tmp_path):
    pg, _, _ = browser_page
    out = Path(os.environ.get('AIMO2_SCREENSHOT_DIR', tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    p = out / 'run_page.png'
    pg.locator('.question').nth(1).screenshot(path=str(p))
    assert p.read_bytes()[:4] == b'\x89PNG' and p.stat().st_size > 20_000
