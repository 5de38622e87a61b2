"The solver's acceptance cases on CPU: stop rules, arrival order, timeouts, deadline and reserve, tiers, faults, replay."
from __future__ import annotations
import random
from types import SimpleNamespace
import pytest
from aimo2_nb.config import (RunConfig, PromptConfig, PromptSpec, Tier, EarlyTimeout, SpeedConfig, StopConfig,
                             ConsistencyRule, load_config)
from aimo2_nb.core import RealClock
from aimo2_nb.engines.replay import TimedEngine, Step, say, ScriptedExecutor
from aimo2_nb.solver import Solver
from aimo2_nb.rerun import replay, decisions

def ok_result(stdout):
    return SimpleNamespace(status='ok', stdout=stdout, stderr='', truncated=False, duration=0.01, error=None)

def run_print(code):
    "A scripted sandbox: the answer printed by `print(N)`."
    import re
    m = re.search(r'print\((\d+)\)', code)
    return ok_result(f"{m.group(1)}\n" if m else '') if m else SimpleNamespace(status='error', stdout='', stderr='NameError', truncated=False, duration=0.01, error='NameError')

def config(samples=4, kinds=('cot',), timeout=100.0, min_answers=99, early=(), rules=None, total=10_000.0,
           reserve=0.0, n_questions=1, **stop):
    "A one-tier config with `samples` samples of the given kinds (interleaved)."
    cfg = RunConfig()
    cfg.prompts = PromptConfig([PromptSpec(k, 'sys', '', '', samples) for k in kinds])
    cfg.speed = SpeedConfig([Tier(3, samples, timeout, min_answers, [EarlyTimeout(a, m) for a, m in early])], adaptive=False)
    cfg.stop = StopConfig(rules=list(rules) if rules is not None else StopConfig().rules, **stop)
    cfg.budget.total_s, cfg.budget.reserve_s, cfg.budget.n_questions = total, reserve, n_questions
    return cfg

def solver(scripts, cfg, exec_fn=run_print, **kw):
    eng = TimedEngine(scripts, **kw)
    return Solver(eng, cfg, executor=ScriptedExecutor(exec_fn, eng.clock, 0.5)), eng

def box(v, dt=1.0, tail=True):
    "A sample that boxes `v` after `dt` s and then keeps talking forever."
    return [Step(dt, f"so the answer is \\boxed{{{v}}}."), *([Step(1.0, ' more text')] * 200 if tail else [])]

NEVER = [Step(1e9, 'never')]

def valid(res, cfg):
    return isinstance(res.answer, int) and 0 <= res.answer < cfg.answers.modulus

# ---------------------------------------------------------------- sample-level stop rules
def test_cot_stops_at_first_boxed():
    cfg = config(samples=1, rules=[])
    s, eng = solver([box(42)], cfg)
    r = s.solve('q')
    assert r.samples[0]['stop'] == 'cot_boxed' and r.answer == 42
    assert eng.aborted[0] == 0
    assert r.reason == 'all_finished' and r.elapsed < 5

def test_cot_rule_off_runs_on():
    cfg = config(samples=1, rules=[], cot_at_boxed=False, timeout=30)
    s, _ = solver([box(42)], cfg)
    r = s.solve('q')
    assert r.samples[0]['stop'] is None and r.reason == 'timeout' and r.answer == 42

def test_code_stops_once_code_answers():
    text = "```python\nprint(123)\n```\nthinking more and more and more"
    cfg = config(samples=1, kinds=('code',), rules=[], output_fence='off')
    s, _ = solver([say(text, finish=None) + NEVER], cfg)
    r = s.solve('q')
    assert r.samples[0]['stop'] == 'code_answer' and r.answer == 123

def test_code_prompt_boxed_without_code_stops():  # seed defect 7
    cfg = config(samples=1, kinds=('code',), rules=[])
    s, _ = solver([box(77)], cfg)
    r = s.solve('q')
    assert r.samples[0]['stop'] == 'code_boxed_no_code' and r.answer == 77
    cfg = config(samples=1, kinds=('code',), rules=[], code_boxed_without_code=False, timeout=20)
    s, _ = solver([box(77)], cfg)
    assert s.solve('q').samples[0]['stop'] is None

def test_output_fence_stop_real_output_counts():
    text = "```python\nprint(391)\n```\n```output\n999\n```\nSo \\boxed{999}."
    cfg = config(samples=1, kinds=('code',), rules=[])
    s, _ = solver([say(text)], cfg)
    r = s.solve('q')
    assert r.samples[0]['stop'] == 'output_fence'
    assert r.answer == 391  # the code's real output, not the invented 999
    assert all(e.value != 999 for e in r.trace if e.kind == 'answer')

def test_failed_code_keeps_boxed_answer():  # seed defect 3
    text = "```python\nundefined_name\n```\nSo \\boxed{55}."
    cfg = config(samples=1, kinds=('code',), rules=[], output_fence='off')
    s, _ = solver([say(text, finish=None) + NEVER], cfg)
    r = s.solve('q')
    assert r.answer == 55 and r.samples[0]['stop'] == 'code_boxed_code_failed'
    assert [e.status for e in r.trace if e.kind == 'code_done'] == ['error']

def test_answer_zero_counts():  # seed defect 1
    cfg = config(samples=4, rules=None)
    s, _ = solver([box(0, dt=1 + i) for i in range(4)], cfg)
    r = s.solve('q')
    assert r.answer == 0 and r.reason == 'consistency' and not r.vote.fallback

# ---------------------------------------------------------------- question-level stop
def test_consistency_counts_arrival_order():
    # arrival: s4=7@1 s3=7@2 s2=7@3 s1=2@4 s0=3@5 s5=7@6 s6=7@7
    # by index at t=6 the seed would see [3,2,7,7,7,7] -> four 7s in its 'last five' and stop;
    # by arrival the last five are [7,7,2,3,7]: no stop until t=7 (five 7s among 7 answers)
    plan = {4: (7, 1), 3: (7, 2), 2: (7, 3), 1: (2, 4), 0: (3, 5), 5: (7, 6), 6: (7, 7)}
    cfg = config(samples=7)
    s, _ = solver(lambda r: box(plan[r.index][0], dt=plan[r.index][1]), cfg)
    r = s.solve('q')
    stop = next(e for e in r.trace if e.kind == 'question_stop')
    assert stop.reason == 'consistency' and '5 equal' in stop.detail
    assert 6.9 < stop.t < 7.5 and stop.n_answers == 7 and r.answer == 7

def test_min_answers_rule():
    cfg = config(samples=6, min_answers=3)
    s, _ = solver(lambda r: box(r.index + 100, dt=1 + r.index), cfg)
    r = s.solve('q')
    assert r.reason == 'min_answers' and len([x for x in r.samples if x['vote'] is not None]) == 3

def test_question_timeout_and_aborts():
    cfg = config(samples=3, timeout=30)
    s, eng = solver([NEVER], cfg)
    r = s.solve('q')
    assert r.reason == 'timeout' and r.elapsed <= 30 and r.vote.fallback and valid(r, cfg)
    assert sorted(i for i in eng.aborted) == [0, 1, 2]

def test_early_timeout():
    cfg = config(samples=4, timeout=100, early=[(10, 2)])
    s, _ = solver(lambda r: box(r.index + 1, dt=1 + r.index) if r.index < 2 else NEVER, cfg)
    r = s.solve('q')
    stop = next(e for e in r.trace if e.kind == 'question_stop')
    assert r.reason == 'early_timeout' and 10 <= stop.t < 10.2

def test_tokens_after_stop_recorded():
    cfg = config(samples=2, rules=[ConsistencyRule(1, 1)])
    s, _ = solver([box(5, dt=1), [Step(0.5, 'x' * 8)] * 100], cfg, abort_lag=3)
    r = s.solve('q')
    ends = {e.sample: e for e in r.trace if e.kind == 'sample_end'}
    assert ends[1].tokens_after_stop == 3 and ends[1].finish == 'abort'
    assert r.tokens_after_stop >= 3

# ---------------------------------------------------------------- deadline, reserve, tiers
def test_question_never_runs_past_its_share():
    cfg = config(samples=2, timeout=1000, total=300, reserve=10, n_questions=3)
    cfg.budget.min_question_s = 20
    s, eng = solver([NEVER], cfg)
    r1 = s.solve('q1')
    assert r1.plan.limit_s == 300 - 10 - 2 * 20 and r1.elapsed <= r1.plan.limit_s
    r2 = s.solve('q2'); r3 = s.solve('q3')
    assert all(valid(r, cfg) for r in (r1, r2, r3))
    assert eng.clock.now() <= 300 - 10  # the reserve is never spent

def test_late_question_answers_by_fallback_in_time():
    cfg = config(samples=2, total=300, reserve=50, n_questions=2)
    s, eng = solver([NEVER], cfg)
    eng.clock.advance_to(249.5)  # 0.5 s above the reserve, one question after this one
    r = s.solve('late')
    assert r.reason == 'no_time' and r.elapsed == 0 and r.answer == cfg.vote.fallback
    assert [e.kind for e in r.trace][-2:] == ['vote', 'question_end']

def test_tiers_adapt_and_bank_time():
    cfg = RunConfig()
    cfg.budget.total_s, cfg.budget.n_questions, cfg.budget.reserve_s = 50 * 365 + 180, 50, 180
    eng = TimedEngine(lambda r: box(7, dt=1.0))
    s = Solver(eng, cfg, executor=ScriptedExecutor(run_print, eng.clock, 0.1))
    speeds = []
    for i in range(3):
        r = s.solve(f'q{i}')
        speeds.append(next(e for e in r.trace if e.kind == 'question_start').speed)
    assert speeds[0] == 3  # 365 s per question: normal
    assert speeds[-1] == 4  # two fast questions banked time: (50*365 - 2)/48 = 380 s, a slower, more thorough tier
    # and a run that fell behind drops to the fastest tier
    eng.clock.advance_to(eng.clock.now() + 50 * 365 - 47 * 250)
    r = s.solve('late')
    assert next(e for e in r.trace if e.kind == 'question_start').speed == 1

# ---------------------------------------------------------------- faults: always a valid answer in time
FAULTS = {
    'start_raises': dict(scripts=[box(1)], fail_start='CUDA out of memory'),
    'poll_raises': dict(scripts=[box(1, dt=5)], fail_poll_after=3),
    'stall': dict(scripts=[NEVER]),
    'garbage': dict(scripts=[[Step(0.1, ''.join(random.Random(i).choice('\\{}$`\x00\ufffd\n 9ab') for _ in range(300)))
                              for i in range(50)]]),
    'error_mid_stream': dict(scripts=[[Step(1, 'thinking'), Step(1, '', 0, 'error', 'engine died')]]),
    'very_slow_tokens': dict(scripts=[[Step(25.0, 'a')] * 100]),
    'never_finish_no_answers': dict(scripts=[[Step(0.5, 'hmm ')] * 10000]),
    'finish_without_answer': dict(scripts=[say('I do not know.')]),
    'unknown_sample_chunks': dict(scripts=lambda r: [Step(1, 'x')]),
}

@pytest.mark.parametrize('name', list(FAULTS))
def test_faults_still_answer_in_time(name):
    f = FAULTS[name]
    cfg = config(samples=3, timeout=60)
    eng = TimedEngine(f['scripts'], fail_start=f.get('fail_start'), fail_poll_after=f.get('fail_poll_after'))
    if name == 'unknown_sample_chunks':
        orig = eng.poll
        eng.poll = lambda t: orig(t) + [SimpleNamespace(index=99, text='x', tokens=1, finish=None, error=None)]
    s = Solver(eng, cfg, executor=ScriptedExecutor(run_print, eng.clock, 0.1))
    r = s.solve('q')
    assert valid(r, cfg) and r.elapsed <= 60
    assert r.trace[-1].kind == 'question_end' and r.trace[-1].reason == r.reason
    if name in ('start_raises', 'poll_raises', 'error_mid_stream'):
        assert any(e.kind == 'error' for e in r.trace)

def test_executor_failures_do_not_reach_the_solver():
    text = "```python\nprint(5)\n```\nSo \\boxed{6}."
    def boom(code): raise RuntimeError('sandbox crashed')
    class Broken:
        def submit(self, code, timeout=None): raise OSError('cannot fork')
    for ex in (lambda clock: ScriptedExecutor(boom, clock, 0.1), lambda clock: Broken()):
        cfg = config(samples=2, kinds=('code',), rules=[], output_fence='off')
        eng = TimedEngine([say(text)])
        r = Solver(eng, cfg, executor=ex(eng.clock)).solve('q')
        assert r.answer == 6  # the boxed answer survives

def test_solver_bug_is_contained():
    cfg = config(samples=2, timeout=60)
    eng = TimedEngine([box(3)])
    eng.poll = lambda t: [object()]  # not a chunk at all
    r = Solver(eng, cfg, executor=ScriptedExecutor(run_print, eng.clock)).solve('q')
    assert valid(r, cfg) and r.reason == 'solver_error'

# ---------------------------------------------------------------- replay
def test_replay_identical_virtual():
    plan = {4: (7, 1), 3: (7, 2), 2: (7, 3), 1: (2, 4), 0: (3, 5), 5: (7, 6), 6: (7, 7)}
    cfg = config(samples=7, kinds=('code', 'cot'))
    code = lambda v, dt: [Step(dt, f"```python\nprint({v})\n```\n")] + [Step(1, 'more')] * 50
    s, _ = solver(lambda r: (code if r.kind == 'code' else box)(plan[r.index][0], dt=plan[r.index][1]), cfg)
    r = s.solve('q', qid='x1')
    rep = replay(r.trace)
    assert rep.answer == r.answer and decisions(rep.trace) == decisions(r.trace)

def test_replay_identical_real_clock_real_executor(tmp_path):
    from aimo2_nb.executor import Executor
    from aimo2_nb.trace import read_events
    cfg = config(samples=4, kinds=('code', 'cot'), timeout=20)
    cfg.budget.tick_s = 0.01
    code = "Compute.\n```python\nprint(sum(range(10)) + 3)\n```\nok"
    scripts = lambda r: say(code if r.kind == 'code' else 'so \\boxed{48}.', tok_s=400, per_chunk=3)
    eng = TimedEngine(scripts, clock=RealClock())
    with Executor(cfg.executor) as ex:
        r = Solver(eng, cfg, executor=ex, trace_path=tmp_path / 't.jsonl').solve('q', qid='live')
    assert r.answer == 48
    events = read_events(tmp_path / 't.jsonl')
    rep = replay(events)
    assert rep.answer == r.answer and decisions(rep.trace) == decisions(events)

def test_yaml_config_errors_name_the_field(tmp_path):
    p = tmp_path / 'c.yaml'
    p.write_text('speed:\n  tiers:\n    - {speed: 1, samples: 0}\n')
    with pytest.raises(ValueError, match=r'tiers\[\]\.samples: expected an integer >= 1'):
        load_config(p)


# ---------------------------------------------------------------- one sample's failure is that sample's (issue 12)
def test_a_failure_in_one_samples_bookkeeping_stops_only_that_sample(monkeypatch):
    "A parser that raises on one sample's text, and a code result that breaks its recording: the question still answers."
    import aimo2_nb.solver as S
    real_feed = S.AnswerParser.feed
    def feed(self, delta):
        if 'BOOM' in delta: raise RuntimeError('parser exploded')
        return real_feed(self, delta)
    monkeypatch.setattr(S.AnswerParser, 'feed', feed)
    cfg = config(samples=4, rules=[], timeout=60)
    scripts = [[Step(0.5, 'BOOM'), *([Step(1.0, ' more')] * 100)], box(7, 1.0), box(7, 1.5), box(7, 2.0)]
    s, eng = solver(scripts, cfg)
    r = s.solve('q')
    assert r.answer == 7 and r.reason != 'solver_error', r.reason
    assert r.samples[0]['stop'] == 'bookkeeping_error' and 0 in eng.aborted
    errors = [e for e in r.trace if e.kind == 'error']
    assert any('parser exploded' in e.message and e.where == 'sample 0' for e in errors)
