"Evaluation over Ray actors: a local cluster of 2 CPU workers on the scripted and replay engines; merged folder = one process; killed workers and drivers."
from __future__ import annotations
import json, os, signal, subprocess, sys, textwrap, threading, time
from dataclasses import replace
from pathlib import Path
import pytest
from aimo2_nb.config import RunConfig, PromptConfig, PromptSpec, SpeedConfig, Tier, load_config
from aimo2_nb.core import VirtualClock, RealClock
from aimo2_nb.engines.replay import ReplayEngine
from aimo2_nb.engines.replay import ScriptedEngine
from aimo2_nb.rerun import decisions
from aimo2_nb import eval as E, eval_ray as R, trace as T

ray = __import__('ray') if os.environ.get('CI') else pytest.importorskip('ray')  # CI installs the ray extra: never skip there
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / 'tests' / 'fixtures' / 'eval_run'

@pytest.fixture(scope='module')
def cluster():
    "One small local cluster for the module: 2 CPUs (2 workers), no dashboard, a small object store."
    for attempt in range(3):  # Ray gives its raylet 30 s to register: a busy machine can miss that, once
        try:
            ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, namespace='aimo2',
                     log_to_driver=False, configure_logging=False)
            break
        except Exception as e:
            ray.shutdown()
            if attempt == 2 or 'timed out during startup' not in str(e): raise
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers get this module's engines by value
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()

def config(samples=2, n=6) -> RunConfig:
    cfg = RunConfig()
    cfg.prompts = PromptConfig([PromptSpec('cot', 'sys', '', '', samples)])
    cfg.speed = SpeedConfig([Tier(3, samples, 30.0, samples, [])], adaptive=False)
    cfg.budget.total_s, cfg.budget.reserve_s, cfg.budget.n_questions = 600, 10, n
    return cfg

def write_csv(path: Path, n: int, crash: int | None = None) -> Path:
    q = lambda i: f"What is {i}+{i}?" + (' CRASH' if i == crash else '')
    path.write_text('id,question,answer\n' + ''.join(f'q{i},{q(i)},{2 * i}\n' for i in range(n)))
    return path

def scripted():
    "The model-free engine on a virtual clock: each sample boxes a hash of the question."
    return ScriptedEngine(clock=VirtualClock())

class Crashy(ScriptedEngine):
    "Kills its worker process (os._exit) at a question marked CRASH: once (a marker file remembers), or always."
    def __init__(self, marker: str | None): super().__init__(clock=VirtualClock()); self.marker = marker
    def start(self, requests):
        if requests and 'CRASH' in requests[0].messages[-1]['content']:
            if self.marker is None or not os.path.exists(self.marker):
                if self.marker: Path(self.marker).touch()
                os._exit(3)
        return super().start(requests)

def rounded(x, nd=6):
    if isinstance(x, float): return round(x, nd)
    if isinstance(x, list): return [rounded(v, nd) for v in x]
    if isinstance(x, dict): return {k: rounded(v, nd) for k, v in x.items()}
    return x

def folder(d: Path) -> dict:
    "What must be equal between two evaluations of the same units: results, trace (less wall clock), units, metrics."
    tr = [{k: v for k, v in json.loads(l).items() if k != 'wall_time'} for l in (d / 'traces.jsonl').read_text().splitlines()]
    units = [{k: v for k, v in r.items() if k not in ('worker', 'wall_s')} for r in E.read_jsonl(d / 'units.jsonl')]
    m = json.loads((d / 'summary.json').read_text()); m.pop('run')
    return dict(results=rounded(E.read_jsonl(d / 'results.jsonl')), trace=rounded(tr), units=units, summary=m,
                meta={k: v for k, v in json.loads((d / 'meta.json').read_text()).items() if k not in ('started', 'engine')},
                config=(d / 'config.yaml').read_text())

def run(csv, out, engine, plan, ray_address=None, cfg=None, **kw) -> dict:
    return R.evaluate_units(csv, cfg or config(), engine, out, plan, ray_address=ray_address, progress=False, plots=False, **kw)

# ---------------------------------------------------------------- merged folder = one process
def test_scripted_merged_equals_single_process(cluster, tmp_path):
    csv, plan = write_csv(tmp_path / 'q.csv', 6), R.EvalPlan(repeats=2, orders=['csv', 'shuffle'])
    t0 = time.monotonic()
    m = run(csv, tmp_path / 'ray', scripted, plan, 'auto', workers=2)
    wall = time.monotonic() - t0
    run(csv, tmp_path / 'one', scripted, plan)
    assert folder(tmp_path / 'ray') == folder(tmp_path / 'one')
    assert m['questions'] == 24 and m['units']['ok'] == 4 and not m['units']['failed']
    workers = {r['worker'] for r in E.read_jsonl(tmp_path / 'ray' / 'units.jsonl')}
    assert len(workers) == 2, workers  # both workers served units
    print(f"4 units on 2 Ray workers: {wall:.1f}s")

def test_scripted_per_question_units(cluster, tmp_path):
    csv, plan = write_csv(tmp_path / 'q.csv', 5), R.EvalPlan(per_question=True)
    m = run(csv, tmp_path / 'ray', scripted, plan, 'auto')
    run(csv, tmp_path / 'one', scripted, plan)
    assert folder(tmp_path / 'ray') == folder(tmp_path / 'one')
    assert m['units']['planned'] == 5 and list(E.read_results(tmp_path / 'ray')) == [f'q{i}' for i in range(5)]

class RunReplay:
    "Replays every question of a recorded run folder on one virtual clock; a question is found by its text."
    def __init__(self, run_dir: str):
        self.clock, self.cur, self.executor = VirtualClock(), None, self
        qs = T.by_question(T.read_events(Path(run_dir) / 'traces.jsonl'))
        self.rec = {next(e for e in evs if e.kind == 'question_start').question: evs for evs in qs.values()}
    def start(self, requests):
        text = requests[0].messages[-1]['content'] if requests else ''
        q = max((q for q in self.rec if q in text), key=len)
        self.cur = ReplayEngine(self.rec[q], clock=self.clock); self.cur.start(requests)
    def poll(self, timeout): return self.cur.poll(timeout)
    def abort(self, i): self.cur.abort(i)
    def abort_all(self): self.cur.abort_all()
    def submit(self, code, timeout=None): return self.cur.executor.submit(code, timeout)

def question_decisions(d: Path) -> dict:
    "Per question id (its run tag dropped): the decision events (the question stop's time, which the recording took a little later, dropped)."
    out = {}
    for qid, evs in E.run_events(d).items():
        ds = [replace(e, qid='', **(dict(t=None, detail='') if e.kind == 'question_stop' else {})) for e in decisions(evs)]
        out.setdefault(qid.split('@')[0], []).append(ds)
    return out

def test_replay_merged_equals_single_process_and_recording(cluster, tmp_path):
    "Two runs of a real recorded evaluation (embedded CPU model, 10 questions) replayed on 2 workers."
    meta = json.loads((FIXTURE / 'meta.json').read_text())
    rows = [(r['id'], e.question, r['gold']) for r in E.read_jsonl(FIXTURE / 'results.jsonl')
            for e in E.run_events(FIXTURE)[r['id']] if e.kind == 'question_start']
    assert [r[0] for r in rows] == meta['ids']
    csv = tmp_path / 'ref.csv'
    import csv as _csv
    with open(csv, 'w', newline='') as f:
        w = _csv.writer(f); w.writerow(['id', 'question', 'answer']); w.writerows(rows)
    cfg, plan = load_config(FIXTURE / 'config.yaml'), R.EvalPlan(repeats=2)
    eng = lambda: RunReplay(str(FIXTURE))
    run(csv, tmp_path / 'ray', eng, plan, 'auto', cfg=cfg)
    run(csv, tmp_path / 'one', eng, plan, cfg=cfg)
    assert folder(tmp_path / 'ray') == folder(tmp_path / 'one')
    rec, got = question_decisions(FIXTURE), question_decisions(tmp_path / 'ray')
    assert set(got) == set(rec) and all(len(v) == 2 for v in got.values())
    for q in rec: assert got[q] == rec[q] * 2, q  # each run makes the recorded decisions
    res = E.read_results(tmp_path / 'ray')
    for r in E.read_jsonl(FIXTURE / 'results.jsonl'):
        assert res[r['id'] + '@csv.0']['answer'] == res[r['id'] + '@csv.1']['answer'] == r['answer']

# ---------------------------------------------------------------- dead workers
def test_worker_dies_once_unit_retried(cluster, tmp_path):
    csv, plan = write_csv(tmp_path / 'q.csv', 4, crash=2), R.EvalPlan(repeats=3)
    marker = str(tmp_path / 'crashed')
    m = run(csv, tmp_path / 'ray', lambda: Crashy(marker), plan, 'auto')
    assert os.path.exists(marker)
    recs = E.read_jsonl(tmp_path / 'ray' / 'units.jsonl')
    assert [r['status'] for r in recs] == ['ok'] * 3 and sorted(r['attempts'] for r in recs) == [1, 1, 2]
    run(csv, tmp_path / 'one', scripted, plan)
    a, b = folder(tmp_path / 'ray'), folder(tmp_path / 'one')
    a.pop('units'); b.pop('units')
    assert a == b  # the retried unit's result is the one a clean run gives
    assert m['units']['ok'] == 3

def test_worker_always_dies_unit_failed_with_reason(cluster, tmp_path):
    csv, plan = write_csv(tmp_path / 'q.csv', 3, crash=1), R.EvalPlan(orders=['csv', 'reverse'], per_question=True)
    m = run(csv, tmp_path / 'ray', lambda: Crashy(None), plan, 'auto')
    recs = {r['unit']: r for r in E.read_jsonl(tmp_path / 'ray' / 'units.jsonl')}
    failed = {n for n, r in recs.items() if r['status'] == 'failed'}
    assert failed == {'q1@csv.0', 'q1@reverse.0'}
    for n in failed: assert recs[n]['attempts'] == 2 and 'died' in recs[n]['reason']
    assert sorted(f['unit'] for f in m['units']['failed']) == sorted(failed)
    assert m['questions'] == 4 and 'q1@csv.0' not in E.read_results(tmp_path / 'ray')
    from aimo2_nb.cli import main
    assert main(['report', str(tmp_path / 'ray')]) == 0  # report reads the folder as it is

class Marking(ScriptedEngine):
    "A slow scripted engine (real clock) that writes the name of its actor to `marker` when a question starts."
    def __init__(self, marker: str): super().__init__(delay_s=0.3, tok_s=200, clock=RealClock()); self.marker = marker
    def start(self, requests):
        if not os.path.exists(self.marker):
            Path(self.marker + '.tmp').write_text(ray.get_runtime_context().get_actor_name() or ''); os.replace(self.marker + '.tmp', self.marker)
        return super().start(requests)

def test_ray_kill_worker_mid_run(cluster, tmp_path):
    "ray.kill of a worker while it holds a unit: a new worker takes the unit again, nothing is lost or doubled."
    csv, plan, marker = write_csv(tmp_path / 'q.csv', 3), R.EvalPlan(repeats=4), str(tmp_path / 'started')
    killed = []
    def killer():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and not os.path.exists(marker): time.sleep(0.05)
        name = Path(marker).read_text()
        ray.kill(ray.get_actor(name, namespace='aimo2')); killed.append(name)
    th = threading.Thread(target=killer, daemon=True); th.start()
    m = run(csv, tmp_path / 'ray', lambda: Marking(marker), plan, 'auto', workers=2)
    th.join(5)
    assert killed and killed[0].startswith(f'aimo2-eval-{os.getpid()}-w')
    recs = E.read_jsonl(tmp_path / 'ray' / 'units.jsonl')
    assert len(recs) == 4 and all(r['status'] == 'ok' for r in recs)
    assert sum(r['attempts'] for r in recs) == 5  # one unit ran twice: the killed one
    assert m['questions'] == 12 and len((tmp_path / 'ray' / 'results.jsonl').read_text().splitlines()) == 12

# ---------------------------------------------------------------- a killed driver
DRIVER = textwrap.dedent('''
    import sys, ray
    from aimo2_nb.core import RealClock
    from aimo2_nb.engines.replay import ScriptedEngine
    from aimo2_nb import eval_ray as R
    sys.path.insert(0, sys.argv[4]); from test_eval_ray import config
    ray.init(address=sys.argv[1], namespace='aimo2', log_to_driver=False)
    slow = lambda: ScriptedEngine(delay_s=0.3, tok_s=200, clock=RealClock())
    R.evaluate_units(sys.argv[2], config(), slow, sys.argv[3], R.EvalPlan(repeats=6), ray_address='auto', plots=False)
''')

def test_driver_killed_then_resumed(cluster, tmp_path):
    "SIGKILL of the driver: the resume keeps every committed unit, loses at most those in flight, duplicates none."
    csv, out = write_csv(tmp_path / 'q.csv', 3), tmp_path / 'ray'
    (tmp_path / 'driver.py').write_text(DRIVER)
    p = subprocess.Popen([sys.executable, str(tmp_path / 'driver.py'), cluster, str(csv), str(out), str(Path(__file__).parent)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while len(E.read_jsonl(out / 'units.jsonl')) < 2 and time.monotonic() - t0 < 120 and p.poll() is None: time.sleep(0.05)
        assert p.poll() is None, p.communicate()[0].decode()[-3000:]
        p.send_signal(signal.SIGKILL); p.wait(10)
    finally:
        if p.poll() is None: p.kill()
    before = {r['unit']: r for r in E.read_jsonl(out / 'units.jsonl')}
    assert 2 <= len(before) < 6
    slow = lambda: ScriptedEngine(delay_s=0.3, tok_s=200, clock=RealClock())
    m = run(csv, out, slow, R.EvalPlan(repeats=6), 'auto')
    after = {r['unit']: r for r in E.read_jsonl(out / 'units.jsonl')}
    assert list(after) == [f'csv.{k}' for k in range(6)] and all(r['status'] == 'ok' for r in after.values())
    for n, r in before.items(): assert after[n] == r  # committed units were not run again
    ids = [json.loads(l)['id'] for l in (out / 'results.jsonl').read_text().splitlines()]
    assert ids == R.unit_ids(R.make_units([f'q{i}' for i in range(3)], R.EvalPlan(repeats=6)))
    starts = [e.qid for e in T.read_events(out / 'traces.jsonl', complete_only=False) if e.kind == 'question_start']
    assert starts == ids and m['questions'] == 18

# ---------------------------------------------------------------- readers of the merged folder
def test_report_and_simulate_read_merged_folder(cluster, tmp_path, capsys):
    csv = write_csv(tmp_path / 'q.csv', 4)
    run(csv, tmp_path / 'ray', scripted, R.EvalPlan(repeats=2), 'auto')
    from aimo2_nb.cli import main
    assert main(['report', str(tmp_path / 'ray')]) == 0
    assert '| 8/8 |' in capsys.readouterr().out
    assert main(['simulate', str(tmp_path / 'ray'), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['n_questions'] == 8
    assert main(['view', str(tmp_path / 'ray')]) == 0 and (tmp_path / 'ray' / 'viewer.html').exists()

# ---------------------------------------------------------------- the command line
def test_cli_eval_ray(cluster, tmp_path, capsys):
    "`aimo2 eval ... --ray` (the cluster this process joined), then a resume that has nothing left to do."
    csv, cfgp, out = write_csv(tmp_path / 'q.csv', 3), tmp_path / 'c.yaml', tmp_path / 'run'
    cfgp.write_text('engine: {kind: scripted, delay_s: 0.01}\neval: {orders: [csv, reverse]}\n')
    from aimo2_nb.cli import main
    argv = ['eval', str(csv), '--config', str(cfgp), '--out', str(out), '--ray', '--repeats', '2', '--quiet']
    assert main(argv) == 0
    o = capsys.readouterr().out
    assert '| run |' in o and '| 12/12 |' in o and 'units: 4/4 ok' in o
    assert main(argv) == 0 and len(E.read_jsonl(out / 'units.jsonl')) == 4
    assert main(['eval', str(csv), '--config', str(cfgp), '--out', str(tmp_path / 'g'), '--ray', '--gpus-per-worker', '1']) == 2
    assert 'the Ray cluster has 0 GPUs' in capsys.readouterr().err

def test_cli_eval_ray_starts_a_local_cluster(tmp_path):
    "`--ray` with no address and no Ray in the process: a local cluster of --workers CPUs, started and stopped by the command."
    csv, cfgp, out = write_csv(tmp_path / 'q.csv', 2), tmp_path / 'c.yaml', tmp_path / 'run'
    cfgp.write_text('engine: {kind: scripted, delay_s: 0.01}\n')
    p = subprocess.run([sys.executable, '-m', 'aimo2_nb.cli', 'eval', str(csv), '--config', str(cfgp), '--out', str(out),
                        '--ray', '--workers', '2', '--repeats', '2', '--quiet'], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'units: 2/2 ok' in p.stdout
    assert len({r['worker'] for r in E.read_jsonl(out / 'units.jsonl')}) >= 1 and len(E.read_results(out)) == 4
