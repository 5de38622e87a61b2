"The policy simulator: both input formats, paired policies, determinism, the JSON report, input errors."
import json
from pathlib import Path
import pytest
from aimo2_nb.config import RunConfig
from aimo2_nb.simulate import (SimConfig, SimInputError, compare, from_csv, from_trace, load_input, no_early_stop,
                               simulate, simulate_main)

FX = Path(__file__).parent / 'fixtures'
HEADER = 'question_id,sample_id,kind,answer,n_tokens,first_answer_token,gold\n'
SIM = SimConfig(bootstrap=20, seed=3)


@pytest.fixture(scope='module')
def trace_qs(): return from_trace(FX / 'sim_trace.jsonl')


def test_trace_loads(trace_qs):
    assert len(trace_qs) == 12 and all(len(q.samples) == 16 for q in trace_qs)
    assert all(q.gold is not None for q in trace_qs)
    whats = {m.what for q in trace_qs for s in q.samples for m in s.marks}
    assert whats == {'boxed', 'code', 'fence'}
    assert not any(s.censored for q in trace_qs for s in q.samples)


def test_csv_loads():
    qs = load_input(FX / 'answers.csv')
    assert len(qs) == 4 and all(len(q.samples) == 8 for q in qs)
    kinds = {s.kind for q in qs for s in q.samples}
    assert kinds == {'cot', 'code'}
    # an empty first_answer_token puts the answer at the sample's end
    s = qs[0].samples[3]
    assert s.marks and s.marks[0].tokens == s.n_tokens


def test_no_early_stop_uses_more_tokens(trace_qs):
    seed, none = compare(trace_qs, {'seed': RunConfig(), 'none': no_early_stop(RunConfig())}, SIM)
    assert none.tokens_total >= seed.tokens_total
    assert none.tokens_saved_frac == 0.0 and 0 < seed.tokens_saved_frac < 1
    assert seed.tokens_no_stop == none.tokens_total  # the reference of "saved" is the no-stop run on the same draws


def test_deterministic(trace_qs):
    a = simulate(trace_qs, RunConfig(), SIM).to_json()
    b = simulate(trace_qs, RunConfig(), SimConfig(bootstrap=20, seed=3)).to_json()
    assert a == b
    c = simulate(trace_qs, RunConfig(), SimConfig(bootstrap=20, seed=4)).to_json()
    assert c != a


@pytest.mark.parametrize('src', ['sim_trace.jsonl', 'answers.csv'])
def test_json_report(src, tmp_path):
    cfg = tmp_path / 'run.yaml'
    cfg.write_text('stop:\n  use_min_answers: false\nsimulate:\n  bootstrap: 10\n  seed: 1\n')
    out = json.loads(simulate_main(FX / src, cfg, as_json=True))
    for k in ('expected_score', 'score_ci', 'tokens_total', 'tokens_saved_frac', 'p_over_deadline'):
        assert k in out
    assert 0 <= out['expected_score'] <= 1 and len(out['score_ci']) == 2
    assert out['score_ci'][0] <= out['score_ci'][1]
    assert out['bootstrap'] == 10 and out['policy'] == 'run'
    assert isinstance(simulate_main(FX / src), str)


def test_tight_budget_goes_over_deadline(trace_qs):
    cfg = RunConfig(); cfg.budget.total_s = 180 + 50 * 10.0  # 10 s a question: less than min_question_s
    rep = simulate(trace_qs, no_early_stop(cfg), SimConfig(bootstrap=5))
    assert rep.p_over_deadline > 0
    assert any(q['reason'] == 'no_time' for q in rep.questions)


@pytest.mark.parametrize('body,needle', [
    ('question_id,sample_id,kind,answer,n_tokens,gold\nq,0,cot,1,10,1\n', "missing column 'first_answer_token'"),
    (HEADER + 'q,0,cot,1,10,,1\nq,1,tool,1,10,,1\n', "row 3: column 'kind'"),
    (HEADER + 'q,0,cot,x,10,,1\n', "row 2: column 'answer'"),
    (HEADER + 'q,0,cot,1,-3,,1\n', "row 2: column 'n_tokens'"),
    (HEADER + 'q,0,cot,1,10,11,1\n', "row 2: column 'first_answer_token'"),
    (HEADER + 'q,0,cot,1,10,,1\nq,1,cot,1,10,,2\n', "row 3: column 'gold'"),
    (HEADER + 'q,0,cot,1,10,,1\nq,0,cot,1,10,,1\n', "row 3: column 'sample_id'"),
])
def test_bad_csv(tmp_path, body, needle):
    p = tmp_path / 'bad.csv'
    p.write_text(body)
    with pytest.raises(SimInputError, match=needle.replace('(', r'\(')):
        from_csv(p)


def test_bad_input_kind(tmp_path):
    p = tmp_path / 'x.txt'; p.write_text('')
    with pytest.raises(SimInputError, match='expected a .jsonl'):
        load_input(p)


def test_short_row(tmp_path):
    p = tmp_path / 'short.csv'
    p.write_text(HEADER + 'q,0,cot\n')
    with pytest.raises(SimInputError, match="row 2: column 'n_tokens'"):
        from_csv(p)


# TIR: a sample's answers are its boxed answers; its python blocks are tool calls (it waits), never answer marks.
K0, O0 = 'Let me compute.\n```python\nprint(6*7)\n```', '\n```output\n42\n```\n'
K1, O1 = '```python\nprint(1)\n```', '\n```output\n1\n```\n'

def tir_trace(chunks: bool = True) -> list:
    "One question of TIR samples, as the solver writes it: 0 and 1 call a tool and box 42 (1 boxes 1 in text the"
    " pause discarded), 2 is CoT, 3's block never came back before the question stopped."
    from aimo2_nb import trace as T
    q = 'tq'
    tick1 = [[0, K0 + '\n```output\n4', 30, None, None], [1, K1 + '\nThus \\boxed{1}', 20, None, None],
             [2, 'I think \\boxed{41}.', 10, 'stop', None], [3, '```python\nwhile 1: pass\n```\n', 15, None, None]]
    tick2 = [[0, 'It printed 42, so \\boxed{42}.', 45, 'stop', None], [1, 'So \\boxed{42}.', 28, 'stop', None]]
    return [T.QuestionStart(q, 0.0, question='6*7?', speed=3, samples=4, limit_s=60, avg_s_left=300, gold=42,
                            kinds=['tir', 'tir', 'cot', 'tir']),
            T.Answer(q, 1.0, 2, 'boxed', 41, '41', 10),
            T.CodeStart(q, 1.0, 1, 0, 'print(1)', 20),  # if the solver also records a TIR run as code: still no answer mark
            T.Tick(q, 1.0, 1, tick1 if chunks else []),
            T.CodeDone(q, 1.2, sample=1, block=0, status='ok', value=1, stdout='1\n', stderr=''),
            T.ToolCall(q, 1.2, 1, 0, 'print(1)', O1, 0.2, 'ok', 1, 20, len(K1)),
            T.ToolCall(q, 1.5, 0, 0, 'print(6*7)', O0, 0.5, 'ok', 42, 30, len(K0)),
            T.Tick(q, 1.5, 2, [], [[1, 0]]),
            T.Answer(q, 2.0, 1, 'boxed', 42, '42', 28), T.Answer(q, 2.0, 0, 'boxed', 42, '42', 45),
            T.Tick(q, 2.0, 3, tick2 if chunks else []),
            T.QuestionStop(q, 2.0, 'all_finished'),
            T.SampleEnd(q, 2.1, 0, 'stop', 45, text=K0 + O0 + 'It printed 42, so \\boxed{42}.'),
            T.SampleEnd(q, 2.1, 1, 'stop', 28, text=K1 + O1 + 'So \\boxed{42}.'),
            T.SampleEnd(q, 2.1, 2, 'stop', 10, text='I think \\boxed{41}.'),
            T.SampleEnd(q, 2.1, 3, 'abort', 15, text='```python\nwhile 1: pass\n```\n'),
            T.Vote(q, 2.1, 42, [[42, 2.0], [41, 1.0]]), T.QuestionEnd(q, 2.2, 42, 'all_finished', 98)]

@pytest.mark.parametrize('chunks', [True, False])
def test_tir_trace_replays(tmp_path, chunks):
    from aimo2_nb import trace as T
    from aimo2_nb.simulate import Mark
    w = T.TraceWriter(tmp_path / 'traces.jsonl')
    for e in tir_trace(chunks): w.add(e)
    (q,) = load_input(tmp_path)
    s0, s1, s2, s3 = q.samples
    assert [s.kind for s in q.samples] == ['tir', 'tir', 'cot', 'tir']
    assert s0.marks == (Mark(30, 'tool', 42, 0.5), Mark(45, 'boxed', 42))
    assert s1.marks == (Mark(20, 'tool', 1, 0.2), Mark(28, 'boxed', 42))  # not the discarded boxed 1, no code mark
    assert s2.marks == (Mark(10, 'boxed', 41),)
    assert (s0.n_tokens, s0.censored, s1.censored) == (45, False, False)
    assert s3.censored and s3.marks == ()
    rep = simulate([q], no_early_stop(RunConfig()), SimConfig(bootstrap=0))
    assert rep.questions[0]['answer'] == 42 and rep.questions[0]['correct']
    assert 'expected score' in simulate_main(tmp_path)

def test_tir_answers_table_rows(tmp_path):
    "Rows of the recorded gpt-oss-120b answers (data/traces: a copy of shared/data/traces, provenance in its README)."
    import csv
    src = Path(__file__).parents[1] / 'data' / 'traces' / 'gptoss120b-aimo3-answers.csv'
    with open(src, newline='') as f: rows = list(csv.DictReader(f))
    qids = list(dict.fromkeys(r['question_id'] for r in rows))[:2]
    few = [r for r in rows if r['question_id'] in qids]
    p = tmp_path / 'few.csv'
    with open(p, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(few)
    qs = load_input(p)
    assert [q.qid for q in qs] == qids and sum(len(q.samples) for q in qs) == len(few)
    for q, r in zip((s for q in qs for s in q.samples), few):
        assert q.kind == 'tir' and q.n_tokens == int(r['n_tokens']) and not q.censored
        assert [(m.what, m.tokens, m.value) for m in q.marks] == [('boxed', int(r['first_answer_token']), int(r['answer']))]
    rep = simulate(qs, RunConfig(), SimConfig(bootstrap=5, curve='h100-gptoss120b-est'))
    assert rep.n_questions == 2 and 0 <= rep.expected_score <= 1


def test_a_solver_tir_run_replays(tmp_path):
    "A TIR question run by the solver (scripted engine and sandbox, every early stop off) replays to the same answer."
    import re
    from types import SimpleNamespace
    from aimo2_nb.config import PromptConfig, PromptSpec, SpeedConfig, Tier
    from aimo2_nb.engines.replay import ScriptedExecutor, Step, TimedEngine, say
    from aimo2_nb.simulate import Mark
    from aimo2_nb.solver import Solver
    def run_print(code):
        v = re.search(r'print\((\d+)\)', code).group(1)
        return SimpleNamespace(status='ok', stdout=v + '\n', stderr='', truncated=False, duration=0.01, error=None)
    def script(req):  # sample i prints 100+i%2, is shown it (and invents 999 first), boxes what it was shown; 2 boxes nothing
        if not req.prefix:
            return [Step(0.5, f"Compute.\n```python\nprint({100 + req.index % 2})\n```\n", 10),
                    Step(0.5, '```output\n999\n```\n\\boxed{999}', 7), Step(1e9, 'never')]
        shown = req.prefix.split('```output')[-1].split()[0]
        return say('Nothing to add.' if req.index == 2 else f"It printed {shown}, so \\boxed{{{shown}}}.", 20, 8)
    cfg = no_early_stop(RunConfig())
    cfg.prompts = PromptConfig([PromptSpec('tir', 'sys', '', '', 3)])
    cfg.speed = SpeedConfig([Tier(3, 3, 100.0, 99, [])], adaptive=False)
    cfg.budget.total_s, cfg.budget.reserve_s, cfg.budget.n_questions = 10_000.0, 0.0, 1
    eng = TimedEngine(script)
    r = Solver(eng, cfg, executor=ScriptedExecutor(run_print, eng.clock, 0.5), trace_path=tmp_path / 'traces.jsonl').solve('q', 'q1', 100)
    (q,) = load_input(tmp_path)
    calls = {e.sample: e for e in r.trace if e.kind == 'tool_call'}
    assert [s.kind for s in q.samples] == ['tir'] * 3 and not any(s.censored for s in q.samples)
    for s in q.samples:  # one tool call (the invented 999 is gone), then its box
        assert [(m.what, m.value) for m in s.marks] == [('tool', 100 + s.index % 2)] + ([('boxed', 100 + s.index % 2)] if s.index != 2 else [])
        assert s.marks[0] == Mark(calls[s.index].tokens, 'tool', calls[s.index].value, calls[s.index].seconds)
    rep = simulate([q], cfg, SimConfig(bootstrap=0, throughput=[[1, 20.0], [64, 1280.0]]))
    assert rep.questions[0]['answer'] == r.answer == 100  # sample 2 has no box: its tool answer 100 votes, as in the solver
