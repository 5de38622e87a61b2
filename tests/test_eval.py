"Evaluation: run folders, resume after a kill, metrics and plots from the recorded fixture, the CLI's errors."
from __future__ import annotations
import json, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from aimo2_nb.config import RunConfig, PromptConfig, PromptSpec, SpeedConfig, Tier, save_config, load_config
from aimo2_nb.engines.replay import TimedEngine, ScriptedExecutor, say
from aimo2_nb import eval as E
from aimo2_nb.cli_runs import cli_eval, cli_report
from aimo2_nb.trace import read_events

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / 'tests' / 'fixtures' / 'eval_run'

def no_code(code): return None

def config(samples=2):
    cfg = RunConfig()
    cfg.prompts = PromptConfig([PromptSpec('cot', 'sys', '', '', samples)])
    cfg.speed = SpeedConfig([Tier(3, samples, 30.0, samples, [])], adaptive=False)
    cfg.budget.total_s, cfg.budget.reserve_s = 3600, 10
    return cfg

def write_csv(path: Path, n: int) -> Path:
    path.write_text('id,question,answer\n' + ''.join(f'q{i},What is {i}+{i}?,{2 * i}\n' for i in range(n)))
    return path

def answering(r):
    "Each sample boxes twice the number in the question."
    n = int(r.messages[-1]['content'].split('What is ')[1].split('+')[0])
    return say(f"so \\boxed{{{2 * n}}}. and then some.", tok_s=20)

def trace_starts(run: Path) -> list[str]:
    return [e.qid for e in read_events(run / 'traces.jsonl', complete_only=False) if e.kind == 'question_start']

# ---------------------------------------------------------------- resume
class Dies(TimedEngine):
    "Raises `exc` while question number `on` is running."
    def __init__(self, scripts, exc, on=3):
        super().__init__(scripts); self.exc, self.on, self.n = exc, on, 0
    def start(self, requests): self.n += 1; super().start(requests)
    def poll(self, timeout):
        if self.n == self.on and self.clock.now() > 0: raise self.exc
        return super().poll(timeout)

@pytest.mark.parametrize('exc', [KeyboardInterrupt(), SystemExit(1)], ids=['KeyboardInterrupt', 'SystemExit'])
def test_resume_after_interrupt(tmp_path, exc):
    csv, run = write_csv(tmp_path / 'q.csv', 5), tmp_path / 'run'
    eng = Dies(answering, exc)
    with pytest.raises(type(exc)):
        E.run_questions(csv, config(), eng, run, executor=ScriptedExecutor(no_code, eng.clock), progress=False)
    assert list(E.read_results(run)) == ['q0', 'q1']
    eng = TimedEngine(answering)
    m = E.evaluate(csv, config(), eng, run, executor=ScriptedExecutor(no_code, eng.clock), progress=False)
    assert list(E.read_results(run)) == [f'q{i}' for i in range(5)]
    assert trace_starts(run) == [f'q{i}' for i in range(5)]  # the interrupted question's partial events are gone
    assert m['questions'] == 5 and m['correct'] == 5
    assert load_config(run / 'config.yaml').budget.n_questions == 5

KILL_SCRIPT = textwrap.dedent('''
    import sys
    from aimo2_nb.config import load_config
    from aimo2_nb.core import RealClock
    from aimo2_nb.engines.replay import TimedEngine, ScriptedExecutor, say
    from aimo2_nb import eval as E
    def script(r):
        n = int(r.messages[-1]['content'].split('What is ')[1].split('+')[0])
        return say(f"so \\\\boxed{{{2 * n}}}. and then some more words.", tok_s=25)
    eng = TimedEngine(script, clock=RealClock())
    E.run_questions(sys.argv[1], load_config(sys.argv[2]), eng, sys.argv[3], progress=True,
                    executor=ScriptedExecutor(lambda c: None, eng.clock))
''')

def test_resume_after_sigkill(tmp_path):
    "A real process killed mid-run (SIGKILL: no cleanup at all) resumes, losing at most the question in flight."
    csv, run, cfgp = write_csv(tmp_path / 'q.csv', 8), tmp_path / 'run', tmp_path / 'c.yaml'
    save_config(config(), cfgp)
    (tmp_path / 'child.py').write_text(KILL_SCRIPT)
    p = subprocess.Popen([sys.executable, str(tmp_path / 'child.py'), str(csv), str(cfgp), str(run)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while len(E.read_results(run)) < 3 and time.monotonic() - t0 < 60 and p.poll() is None: time.sleep(0.05)
        time.sleep(0.2)  # somewhere inside the next question
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGKILL); p.wait(10)
    finally:
        if p.poll() is None: p.kill()
    done = list(E.read_results(run))
    assert 3 <= len(done) < 8
    eng = TimedEngine(answering)
    E.evaluate(csv, load_config(cfgp), eng, run, executor=ScriptedExecutor(no_code, eng.clock), progress=False)
    ids = [f'q{i}' for i in range(8)]
    assert list(E.read_results(run)) == ids and trace_starts(run) == ids
    lines = (run / 'results.jsonl').read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(l)['correct'] for l in lines)

def test_resume_refuses_another_config_or_question_list(tmp_path):
    csv, run = write_csv(tmp_path / 'q.csv', 3), tmp_path / 'run'
    eng = TimedEngine(answering)
    E.run_questions(csv, config(), eng, run, executor=ScriptedExecutor(no_code, eng.clock), progress=False, limit=2)
    with pytest.raises(E.EvalError, match='holds a run of config'):
        E.run_questions(csv, config(samples=3), eng, run, progress=False, limit=2)
    with pytest.raises(E.EvalError, match='holds a run of config'):  # another --limit changes budget.n_questions
        E.run_questions(csv, config(), eng, run, progress=False, limit=3)

def test_budget_n_questions():
    assert E.eval_config(RunConfig(), 7).budget.n_questions == 7
    cfg = RunConfig(); cfg.budget.n_questions = 12
    assert E.eval_config(cfg, 7).budget.n_questions == 12  # the config set its own

def test_progress_text(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tqdm', None); monkeypatch.setitem(sys.modules, 'tqdm.auto', None)
    p = E.Progress(2, enabled=True)
    p.update(dict(id='a', answer=3, gold=3, correct=True, reason='consistency', elapsed=1.25))
    err = capsys.readouterr().err
    assert '[1/2] a: 3 (gold 3) ok, consistency, 1.2s | acc 1/1' in err

# ---------------------------------------------------------------- metrics from the recorded run
def test_fixture_is_a_real_small_run():
    assert sum(f.stat().st_size for f in FIXTURE.iterdir()) < 1_000_000
    meta = json.loads((FIXTURE / 'meta.json').read_text())
    assert len(meta['ids']) == 10
    cfg = load_config(FIXTURE / 'config.yaml')
    assert cfg.engine.get('kind') == 'llamacpp'

def test_metrics_from_fixture():
    m = E.run_metrics(FIXTURE)
    res = E.read_results(FIXTURE)
    recs = E.sample_records(FIXTURE)
    assert m['questions'] == 10 and m['correct'] == sum(bool(r['correct']) for r in res.values())
    assert m['samples'] == sum(r['n_samples'] for r in res.values()) == len(recs)
    assert m['time_total'] == pytest.approx(sum(r['elapsed'] for r in res.values()), abs=0.1)
    assert m['tokens'] == sum(r['tokens'] for r in res.values())
    # per-sample votes read from the trace agree with what the solver reported
    by = {(r['qid'], r['sample']): r for r in recs}
    for q, r in res.items():
        for s in r['samples']:
            assert by[(q, s['i'])]['vote'] == s['vote'] and by[(q, s['i'])]['tokens'] == s['tokens']
    # the code breakdown covers every code-prompt sample
    assert sum(m['code'].values()) * m['questions'] == pytest.approx(m['code_samples'], abs=0.05)
    # tokens after stop decisions: the same total as the solver's question_end events
    assert m['after_stop'] == sum(r['tokens_after_stop'] for r in res.values())
    st = m['stops']
    for level in ('sample', 'question'):
        assert 0 <= st[level]['est_tokens_saved'] <= st[level]['upper_tokens_saved']
        assert sum(st[level]['basis'].values()) == st[level]['samples']
    assert json.loads((FIXTURE / 'summary.json').read_text()) == m  # the committed summary is current

def test_report_table_compares_runs(capsys, tmp_path):
    other = tmp_path / 'other'
    shutil.copytree(FIXTURE, other)
    assert cli_report([str(FIXTURE), str(other)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and out[2].startswith('| eval_run |') and out[3].startswith('| other |')
    assert all(l.count(' | ') == len(E.REPORT_COLUMNS) - 1 for l in out)

def test_plots_from_fixture(tmp_path):
    run = tmp_path / 'run'; shutil.copytree(FIXTURE, run)
    for p in run.glob('*.png'): p.unlink()
    paths = E.save_plots(run)
    assert [p.name for p in paths] == ['tokens.png', 'first_last.png', 'time.png']
    for p in paths:
        b = p.read_bytes()
        assert b[:8] == b'\x89PNG\r\n\x1a\n' and len(b) > 10_000

# ---------------------------------------------------------------- the command line
def test_cli_eval_bad_input_exits_2(tmp_path, capsys):
    csv = write_csv(tmp_path / 'q.csv', 2)
    good = tmp_path / 'c.yaml'; save_config(config(), good)
    bad = tmp_path / 'bad.yaml'; bad.write_text('sampling: {top_p: 7}\n')
    eng = tmp_path / 'eng.yaml'; eng.write_text('engine: {kind: vllm}\n')
    (tmp_path / 'nocol.csv').write_text('id,text\n1,x\n')
    cases = [([str(tmp_path / 'none.csv'), '--config', str(good), '--out', str(tmp_path / 'o')], 'question CSV: file not found'),
             ([str(tmp_path / 'nocol.csv'), '--config', str(good), '--out', str(tmp_path / 'o')], "missing column 'question'"),
             ([str(csv), '--config', str(bad), '--out', str(tmp_path / 'o')], 'sampling.top_p'),
             ([str(csv), '--config', str(eng), '--out', str(tmp_path / 'o')], "engine.kind: expected one of"),
             ([str(csv), '--config', str(good), '--out', str(tmp_path / 'o'), '--limit', '0'], '--limit'),
             ([str(csv), '--config', str(good), '--out', str(tmp_path / 'o'), '--limit', 'x'], "invalid int value"),
             ([str(csv), '--out', str(tmp_path / 'o')], 'the following arguments are required: --config')]
    for argv, msg in cases:
        assert cli_eval(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and 'Traceback' not in err, (argv, err)

class ScriptedKind:
    "An engine kind for the CLI test, loaded through the engine loader."
    @classmethod
    def from_settings(cls, settings, clock=None): return TimedEngine(answering)

def test_cli_eval_runs_and_resumes(tmp_path, capsys, monkeypatch):
    from aimo2_nb.engines import base
    monkeypatch.setitem(base.ENGINE_KINDS, 'scripted', f'{__name__}:ScriptedKind')
    monkeypatch.setattr(E, '_own_executor', lambda cfg, engine: ScriptedExecutor(no_code, engine.clock))
    csv, cfgp, out = write_csv(tmp_path / 'q.csv', 4), tmp_path / 'c.yaml', tmp_path / 'run'
    save_config(config(), cfgp)
    assert cli_eval([str(csv), '--config', str(cfgp), '--out', str(out), '--limit', '3', '--engine-kind', 'scripted']) == 0
    cap = capsys.readouterr()
    assert '| run |' in cap.out and '| 3/3 |' in cap.out and 'q2: 4 (gold 4) ok' in cap.err
    assert cli_eval([str(csv), '--config', str(cfgp), '--out', str(out), '--limit', '3', '--engine-kind', 'scripted', '--quiet']) == 0
    assert len((out / 'results.jsonl').read_text().splitlines()) == 3
    assert (out / 'summary.json').exists() and (out / 'tokens.png').exists()


def test_missing_matplotlib_is_said_not_silent(tmp_path, monkeypatch, caplog):
    "Without matplotlib the summary is still written and a warning names what was skipped and the install that brings it."
    run = tmp_path / 'run'; shutil.copytree(FIXTURE, run)
    for p in run.glob('*.png'): p.unlink()
    def no_matplotlib(d): raise ImportError("No module named 'matplotlib'")
    monkeypatch.setattr(E, 'save_plots', no_matplotlib)
    with caplog.at_level('WARNING', logger='aimo2_nb'): m = E.finish_run(run)
    assert m['questions'] == 10 and (run / 'summary.json').is_file() and not list(run.glob('*.png'))
    assert E.PLOTS_MISSING in caplog.text and 'pip install matplotlib' in E.PLOTS_MISSING
