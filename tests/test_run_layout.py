"""One run-folder layout: every command that writes a run (`aimo2 solve`, `aimo2 eval`, the Kaggle submission) is read by
every command that reads one (`aimo2 report`, `aimo2 simulate`, `aimo2 view`), through the real `aimo2` entry point."""
from __future__ import annotations
import contextlib, io, json
from pathlib import Path
import pytest

from aimo2_nb.cli import main, solve_rows
from aimo2_nb.config import RunConfig, PromptConfig, PromptSpec, SpeedConfig, Tier
from aimo2_nb.engines.replay import TimedEngine, ScriptedExecutor, say
from aimo2_nb import eval as E
from aimo2_nb import trace as T

QUESTIONS = [('q1', 'What is 17*23?', 391), ('q2', 'What is 2+3?', 5)]


def config() -> RunConfig:
    cfg = RunConfig()
    cfg.prompts = PromptConfig([PromptSpec('cot', 'sys', '', '', 2)])
    cfg.speed = SpeedConfig([Tier(3, 2, 30.0, 2, [])], adaptive=False)
    cfg.budget.total_s, cfg.budget.reserve_s, cfg.budget.n_questions = 600, 10, len(QUESTIONS)
    return cfg


def answering(r):
    "Samples box the answer of the question they were given."
    q = r.messages[-1]['content']
    return say(f"so \\boxed{{{next(a for _, t, a in QUESTIONS if t in q)}}}.", tok_s=50)


def write_solve(d: Path) -> Path:
    "`aimo2 solve --csv`: runs/solve-<time>/traces.jsonl (solve_rows is what cli_solve calls, here with a scripted engine)."
    run = d / 'solve-20260101-000000'
    rows = [dict(id=i, question=q, answer=a) for i, q, a in QUESTIONS]
    with contextlib.redirect_stdout(io.StringIO()):
        assert solve_rows(rows, config(), run / 'traces.jsonl', quiet=True, engine=TimedEngine(answering), err=io.StringIO()) == 0
    return run


def write_eval(d: Path) -> Path:
    "`aimo2 eval`: a run folder with traces.jsonl, results.jsonl, config.yaml, meta.json, summary.json."
    csv = d / 'q.csv'
    csv.write_text('id,question,answer\n' + ''.join(f'{i},{q},{a}\n' for i, q, a in QUESTIONS))
    eng = TimedEngine(answering)
    E.evaluate(csv, config(), eng, d / 'eval-run', executor=ScriptedExecutor(lambda c: None, eng.clock), progress=False)
    return d / 'eval-run'


def write_submission(d: Path) -> Path:
    "The Kaggle submission's server: trace.jsonl in its working folder, no gold answers."
    pl = pytest.importorskip('polars')  # the dev extra installs it; CI always has it
    from aimo2_nb.kaggle import Server, ServeConfig, SubmissionConfig
    work = d / 'kaggle-working'
    run = config(); run.engine = {'kind': 'scripted', 'answer': 42}
    srv = Server(SubmissionConfig(serve=ServeConfig(trace_path=str(work / 'trace.jsonl'), prewarm_executor=False), run=run))
    for i, q, _ in QUESTIONS: srv.predict(pl.Series('id', [i]), pl.Series('problem', [q]))
    return work


WRITERS = {'solve': write_solve, 'eval': write_eval, 'submission': write_submission}
TRACE = {'solve': 'traces.jsonl', 'eval': 'traces.jsonl', 'submission': 'trace.jsonl'}


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp('runs')
    return {k: w(d) for k, w in WRITERS.items()}


@pytest.mark.parametrize('writer', WRITERS)
def test_writer_layout(runs, writer):
    assert T.find_trace(runs[writer]).name == TRACE[writer]
    assert list(E.run_results(runs[writer])) == ['q1', 'q2']


@pytest.mark.parametrize('writer', WRITERS)
def test_report_reads(runs, writer):
    rc, out, err = run_cli('report', str(runs[writer]))
    assert rc == 0, err
    row = out.strip().splitlines()[-1].split(' | ')
    assert row[0] == f'| {runs[writer].name}' and row[2] == '2/2'  # both questions, from results.jsonl or the trace
    m = E.run_metrics(runs[writer])
    if writer == 'submission': assert (m['correct'], m['agg_acc']) == (0, None)  # no gold: nothing graded
    else: assert (m['correct'], m['agg_acc']) == (2, 1.0)


@pytest.mark.parametrize('writer', WRITERS)
def test_report_reads_trace_file(runs, writer):
    rc, out, err = run_cli('report', str(runs[writer] / TRACE[writer]))
    assert rc == 0, err
    assert out.strip().splitlines()[-1].startswith(f'| {runs[writer].name} |')


@pytest.mark.parametrize('writer', WRITERS)
def test_simulate_reads(runs, writer):
    rc, out, err = run_cli('simulate', str(runs[writer]), '--json')
    assert rc == 0, err
    rep = json.loads(out)
    assert rep['n_questions'] == 2


@pytest.mark.parametrize('writer', WRITERS)
def test_view_reads(runs, writer, tmp_path):
    page = tmp_path / 'page.html'
    rc, out, err = run_cli('view', str(runs[writer]), '--out', str(page))
    assert rc == 0, err
    html = page.read_text()
    assert html.count('class="aimo2-trace question"') == 2
    if writer == 'submission': assert ': 2 questions without a gold answer</h1>' in html
    else: assert ': 2/2 correct</h1>' in html


def test_readers_reject_a_folder_without_a_trace(tmp_path):
    for argv in (['report', str(tmp_path)], ['view', str(tmp_path)], ['simulate', str(tmp_path)]):
        rc, out, err = run_cli(*argv)
        assert rc == 2 and 'no traces.jsonl or trace.jsonl' in err and 'Traceback' not in err, (argv, err)
