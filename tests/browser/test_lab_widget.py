"""The trace viewer widget where users open it: a real JupyterLab server on loopback, a notebook that shows
`TraceViewer`, headless Debian chromium driven by Playwright. The widget renders a question (inside its sandboxed
frame), switches questions and expands a sample, with nothing loaded from the network; a trace's script payload does
not run even when escaping is broken on purpose (a second cell).

Skipped only when chromium, Playwright or JupyterLab is missing outside CI; with CI=true a missing one fails the test."""
from __future__ import annotations
import dataclasses, json, os, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from aimo2_nb import trace as T

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get('AIMO2_CHROMIUM', '/usr/bin/chromium')
FIXTURE = ROOT / 'tests' / 'fixtures' / 'eval_run'
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']
TOKEN = 'aimo2-lab-test'
HOSTILE = ('<script>window.pwned=1;document.body.dataset.pwned="script"</script>'
           '<img src=x onerror="window.pwned=2;document.body.dataset.pwned=\'img\'">')
UNESCAPED = '''import aimo2_nb.viewer as V
class Unescaped(V.TraceViewer):
    "The viewer with an escaping bug, on purpose: only its frame (sandbox, CSP) stands between a payload and the page."
    def render(self, evs):
        real, V.esc = V.esc, lambda x: '' if x is None else str(x)
        try: return super().render(evs)
        finally: V.esc = real
Unescaped('hostile_runs')'''
WAIT_MS = 60_000  # generous: a kernel starts slowly on a loaded 2-core machine (a wait, not a speed claim)

def _need(what: str, ok: bool, hint: str):
    if ok: return
    if IN_CI: pytest.fail(f"{what}: CI must run the JupyterLab browser test ({hint})")
    pytest.skip(f"{what} ({hint})")

def _importable(mod: str) -> bool:
    try: __import__(mod); return True
    except ImportError: return False

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def viewer_notebook(runs: str) -> dict:
    "A notebook that opens the viewer on the run folders in `runs`, then the unescaping one on `hostile_runs`."
    src = f"from aimo2_nb.viewer import TraceViewer\nTraceViewer({runs!r})"
    cell = lambda id, src: {'cell_type': 'code', 'execution_count': None, 'id': id, 'metadata': {}, 'outputs': [], 'source': src}
    return {'cells': [cell('viewer', src), cell('hostile', UNESCAPED)],
            'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
            'nbformat': 4, 'nbformat_minor': 5}

def write_hostile_run(d: Path):
    "A run folder of one question (the fixture's first, as 'hostile') with the payload in its question and texts."
    evs = next(iter(fixture_questions().values()))
    w = T.TraceWriter(d / 'traces.jsonl')
    for e in evs:
        e = dataclasses.replace(e, qid='hostile')
        if e.kind == 'question_start': e = dataclasses.replace(e, question=HOSTILE)
        if e.kind == 'sample_end': e = dataclasses.replace(e, text=HOSTILE + e.text)
        w.add(e)

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 serving a folder with the fixture run and the viewer notebook; its base URL."
    _need(f"chromium not found at {CHROMIUM}", os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK), 'apt-get install chromium')
    _need("the playwright package is not installed", _importable('playwright.sync_api'), 'pip install playwright')
    _need("jupyterlab or ipywidgets is not installed", _importable('jupyterlab') and _importable('ipywidgets'),
          'pip install -e ".[dev]"')
    d = tmp_path_factory.mktemp('lab')
    work, home = d / 'work', d / 'home'
    shutil.copytree(FIXTURE, work / 'runs' / 'fixture')
    write_hostile_run(work / 'hostile_runs' / 'hostile')
    (work / 'viewer.ipynb').write_text(json.dumps(viewer_notebook('runs')))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
           'JUPYTER_CONFIG_DIR': str(home / 'config'), 'JUPYTER_DATA_DIR': str(home / 'data'),
           'JUPYTER_RUNTIME_DIR': str(home / 'runtime'), 'IPYTHONDIR': str(home / 'ipython'), 'HOME': str(home)}
    settings = home / 'settings' / '@jupyterlab'  # as a user who ticked "Always start the preferred kernel" and "no news"
    (settings / 'notebook-extension').mkdir(parents=True); (settings / 'apputils-extension').mkdir(parents=True)
    (settings / 'notebook-extension' / 'tracker.jupyterlab-settings').write_text(json.dumps({'autoStartDefaultKernel': True}))
    (settings / 'apputils-extension' / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false'}))
    port = _free_port()
    log = open(d / 'lab.log', 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
         '--ServerApp.port_retries=0', f'--IdentityProvider.token={TOKEN}', f'--ServerApp.root_dir={work}',
         '--ServerApp.allow_root=True', '--LabApp.news_url=None', '--LabApp.extension_manager=readonly',
         '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
         f'--LabApp.workspaces_dir={home / "workspaces"}', f'--LabApp.user_settings_dir={home / "settings"}'],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            if proc.poll() is not None: break
            try:
                with urllib.request.urlopen(f'{base}/api/status?token={TOKEN}', timeout=2) as r:
                    if r.status == 200: break
            except OSError: time.sleep(0.5)
        else: pytest.fail('JupyterLab did not answer within 2 minutes:\n' + (d / 'lab.log').read_text()[-3000:])
        if proc.poll() is not None: pytest.fail('JupyterLab exited:\n' + (d / 'lab.log').read_text()[-3000:])
        yield base, d / 'lab.log'
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
            try: proc.wait(30)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        log.close()

@pytest.fixture(scope='module')
def widget(lab, tmp_path_factory):
    "The viewer notebook opened in JupyterLab and run: the page, the widget's output area and the page's requests."
    from playwright.sync_api import sync_playwright
    base, log = lab
    profile = tmp_path_factory.mktemp('chromium-profile')
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={'width': 1400, 'height': 1000})
        try:
            pg = ctx.new_page()
            pg.set_default_timeout(WAIT_MS)
            requests = []
            pg.on('request', lambda r: requests.append(r.url))
            pg.goto(f'{base}/lab/tree/viewer.ipynb?token={TOKEN}')
            pg.locator('.jp-Notebook .jp-Cell').first.wait_for()
            pg.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()  # the kernel is up
            run_all(pg)
            out = pg.locator('.jp-Notebook .jp-OutputArea-output').first
            frame(out).locator('.aimo2-trace.question').wait_for()
            yield pg, out, requests
        except Exception:
            shot = Path(os.environ.get('AIMO2_SCREENSHOT_DIR', log.parent)) / 'lab_widget_failure.png'
            shot.parent.mkdir(parents=True, exist_ok=True); pg.screenshot(path=str(shot))
            print(f"screenshot: {shot}\n" + log.read_text()[-3000:]); raise
        finally:
            ctx.close()

def run_all(pg, tries: int = 5):
    "Run > Run All Cells, as a user would; again if the kernel was not ready to take it (the prompt stays `[ ]`)."
    prompt = pg.locator('.jp-Notebook .jp-Cell .jp-InputPrompt').first
    for _ in range(tries):
        pg.locator('.jp-Notebook .jp-Cell').first.click()
        pg.get_by_role('menuitem', name='Run', exact=True).click()
        pg.get_by_role('menuitem', name='Run All Cells', exact=True).click()
        for _ in range(40):
            if prompt.inner_text().strip() != '[ ]:': return
            pg.wait_for_timeout(500)
    raise AssertionError('the cell never started: ' + prompt.inner_text())

def fixture_questions() -> dict[str, list]:
    return T.by_question(T.read_events(FIXTURE / 'traces.jsonl'))

def frame(out):
    "The widget's sandboxed frame, where the question's page is."
    return out.frame_locator('iframe.aimo2-frame')

def question_select(out):
    return out.locator('.widget-dropdown', has=out.page.locator('label', has_text='question')).locator('select')

def test_renders_a_question(widget):
    pg, out, _ = widget
    qs = fixture_questions()
    sel = question_select(out)
    assert sel.locator('option').evaluate_all('os => os.map(o => o.textContent)') == list(qs)
    qid = sel.input_value()
    assert out.locator('iframe.aimo2-frame').get_attribute('sandbox') == ''  # scripts off, an origin of its own
    sec = frame(out).locator('.aimo2-trace.question')
    assert sec.count() == 1 and sec.get_attribute('data-qid') == qid == list(qs)[0]
    start = next(e for e in qs[qid] if e.kind == 'question_start')
    assert sec.locator('.lane').count() == len(start.kinds)
    assert sec.locator('.qtext').inner_text().strip()
    end = next(e for e in qs[qid] if e.kind == 'question_end')
    assert sec.locator('.verdict .final-answer').inner_text().strip() == str(end.answer)

def test_switches_questions(widget):
    pg, out, _ = widget
    qs = fixture_questions()
    qid = list(qs)[-1]
    question_select(out).select_option(label=qid)
    frame(out).locator(f'.aimo2-trace.question[data-qid="{qid}"]').wait_for()
    sec = frame(out).locator('.aimo2-trace.question')
    assert sec.count() == 1
    start = next(e for e in qs[qid] if e.kind == 'question_start')
    assert sec.locator('.lane').count() == len(start.kinds)

def test_expands_a_sample(widget):
    pg, out, _ = widget
    qs = fixture_questions()
    qid = list(qs)[1]
    question_select(out).select_option(label=qid)
    sec = frame(out).locator(f'.aimo2-trace.question[data-qid="{qid}"]')
    sec.wait_for()
    end = next(e for e in qs[qid] if e.kind == 'sample_end' and e.text.strip())
    lane = sec.locator(f'.lane[data-sample="{end.sample}"]')
    text = lane.locator('details.sample-text pre.text')
    assert not text.is_visible()
    lane.locator('details.sample-text > summary').click()
    text.wait_for(state='visible')
    assert text.inner_text().strip()[:200] == end.text.strip()[:200]

def test_payload_in_a_trace_does_not_run(widget):
    "Escaping broken on purpose (the second cell): the payload is live markup in the frame, and still nothing runs."
    pg, _, _ = widget
    out = pg.locator('.jp-Notebook .jp-Cell').nth(1).locator('.jp-OutputArea-output').first
    frame(out).locator('.aimo2-trace.question[data-qid="hostile"]').wait_for(state='attached')
    assert frame(out).locator('img[onerror]').count() >= 2 and frame(out).locator('script').count() >= 2  # the bug is real
    doc = out.locator('iframe.aimo2-frame').element_handle().content_frame()
    doc.wait_for_function('() => [...document.images].every(i => i.complete)')  # every image's error event has fired
    assert doc.evaluate('() => [window.pwned, document.body.dataset.pwned]') == [None, None]
    assert pg.evaluate('() => [window.pwned, document.body.dataset.pwned]') == [None, None]

def test_nothing_from_the_network(widget):
    _, _, requests = widget
    outside = [u for u in requests if not u.startswith(('http://127.0.0.1:', 'ws://127.0.0.1:', 'data:', 'blob:'))]
    assert requests and not outside, outside

def test_screenshot(widget, tmp_path):
    pg, out, _ = widget
    d = Path(os.environ.get('AIMO2_SCREENSHOT_DIR', tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    p = d / 'lab_widget.png'
    pg.screenshot(path=str(p))
    assert p.read_bytes()[:4] == b'\x89PNG' and p.stat().st_size > 20_000
