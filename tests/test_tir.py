"TIR samples through the solver: pause at a python block, run it in the sample's session, feed the real output back, go on."
from __future__ import annotations
import re, threading, time
from types import SimpleNamespace
import pytest
from aimo2_nb.config import RunConfig, PromptConfig, PromptSpec, Tier, SpeedConfig, StopConfig, ToolConfig
from aimo2_nb.core import RealClock
from aimo2_nb.engines.base import Chunk, SampleQueue, SequentialEngine, supports_turns
from aimo2_nb.engines.replay import TimedEngine, Step, say, ScriptedExecutor, ClockFuture
from aimo2_nb.prompts import SampleRequest
from aimo2_nb.solver import Solver
from aimo2_nb.rerun import replay, decisions

def ok(stdout, duration=0.01):
    return SimpleNamespace(status='ok', stdout=stdout, stderr='', truncated=False, duration=duration, error=None)

def run_print(code):
    "A scripted sandbox: prints what `print(N)` would."
    m = re.search(r'print\((\d+)\)', code)
    return ok(f"{m.group(1)}\n") if m else SimpleNamespace(status='error', stdout='', stderr='NameError: x', truncated=False,
                                                         duration=0.01, error='NameError')

def config(samples=1, kinds=('tir',), timeout=100.0, rules=(), **tools):
    cfg = RunConfig()
    cfg.prompts = PromptConfig([PromptSpec(k, 'sys', '', '', samples) for k in kinds])
    cfg.speed = SpeedConfig([Tier(3, samples, timeout, 99, [])], adaptive=False)
    cfg.stop = StopConfig(rules=list(rules))
    cfg.tools = ToolConfig(**tools)
    cfg.budget.total_s, cfg.budget.reserve_s, cfg.budget.n_questions = 10_000.0, 0.0, 1
    return cfg

def solver(scripts, cfg, exec_fn=run_print, exec_s=0.5, **kw):
    eng = TimedEngine(scripts, **kw)
    return Solver(eng, cfg, executor=ScriptedExecutor(exec_fn, eng.clock, exec_s)), eng

def of(r, kind): return [e for e in r.trace if e.kind == kind]

def code_then(v, after, invented=''):
    "A TIR script: first turn prints `v` (with an invented output block after it), continuation `after(prefix)`."
    def script(req):
        if not req.prefix:
            return [Step(0.5, f"Compute.\n```python\nprint({v})\n```\n", 10), Step(0.5, invented, 7), Step(1e9, 'never')]
        return after(req.prefix)
    return script

# ---------------------------------------------------------------- the output block
def test_real_output_replaces_an_invented_one():
    inv = "```output\n999\n```\nSo \\boxed{999}."
    s, eng = solver(code_then(391, lambda p: say("It printed 391, so \\boxed{391}.", 20, 8), inv), config())
    r = s.solve('q')
    call, end = of(r, 'tool_call')[0], of(r, 'sample_end')[0]
    assert r.answer == 391 and call.value == 391 and call.status == 'ok'
    assert '999' not in end.text and end.text[call.at:call.at + len(call.output)] == call.output == "\n```output\n391\n```\n"
    assert r.samples[0]['stop'] == 'tir_boxed'

def test_the_continuation_sees_the_real_output():
    seen = []
    def after(prefix):
        seen.append(prefix); return say("\\boxed{7}", 20, 8)
    s, _ = solver(code_then(7, after, "```output\n8\n```"), config())
    s.solve('q')
    assert seen == ["Compute.\n```python\nprint(7)\n```\n```output\n7\n```\n"]

# ---------------------------------------------------------------- tokens across turns
def test_tokens_cumulative_and_exact_across_turns():
    # turn 1: 10 tokens up to the block (+3 still decoded after the pause), turn 2: one 1-token chunk and its finish
    s, eng = solver(code_then(5, lambda p: say("\\boxed{5}", 100, 9)), config(), abort_lag=3)
    r = s.solve('q')
    end = of(r, 'sample_end')[0]
    assert of(r, 'tool_call')[0].tokens == 10 and end.finish == 'stop'
    assert end.tokens == 10 + 3 + 1 and r.tokens == 14

# ---------------------------------------------------------------- aborts
def test_question_stop_while_a_sample_waits_for_its_code():
    # sample 0's code takes 50 s; samples 1-3 box 4 after 2 s: the question stops, sample 0 is aborted while waiting
    cfg = config(samples=4, kinds=('tir',), rules=[__import__('aimo2_nb.config', fromlist=['x']).ConsistencyRule(3, 3)])
    def script(req):
        if req.index == 0: return code_then(1, lambda p: say('\\boxed{1}', 20))(req)
        return [Step(2.0, "\\boxed{4}")] + [Step(1.0, ' more')] * 100
    slow = lambda code: ok('1\n', 50.0)
    s, eng = solver(script, cfg, exec_fn=slow, exec_s=50.0)
    r = s.solve('q')
    assert r.answer == 4 and r.reason == 'consistency' and r.elapsed < 10
    assert of(r, 'sample_end')[0].finish == 'abort'
    assert [c.status for c in of(r, 'tool_call')] == ['cancelled']

def test_question_stop_during_a_continuation():
    cfg = config(samples=2, timeout=20.0)
    def script(req):
        if req.index == 0: return code_then(3, lambda p: [Step(1.0, ' thinking')] * 1000)(req)
        return [Step(1.0, ' x')] * 1000
    s, _ = solver(script, cfg)
    r = s.solve('q')
    assert r.reason == 'timeout' and r.elapsed <= 20.5
    assert [e.finish for e in of(r, 'sample_end')] == ['abort', 'abort']
    assert [c.status for c in of(r, 'tool_call')] == ['ok']

# ---------------------------------------------------------------- others never wait
def test_sixteen_samples_and_slow_code_never_block_the_others():
    cfg = config(samples=16, timeout=100.0, rules=[])
    def script(req):
        if req.index % 2 == 0: return code_then(2, lambda p: say('\\boxed{2}', 20))(req)  # waits 30 s for its code
        return [Step(0.1, f" w{k}", 1) for k in range(1, 40)] + [Step(0.1, '\\boxed{5}', 1, 'stop')]
    s, _ = solver(script, cfg, exec_fn=lambda c: ok('2\n', 30.0), exec_s=30.0)
    r = s.solve('q')
    answers = {e.sample: e.t for e in of(r, 'answer')}
    odd, even = [answers[i] for i in range(1, 16, 2)], [answers[i] for i in range(0, 16, 2)]
    assert max(odd) < 30 < min(even)  # every sample without code answered while the code ran
    assert r.answer in (2, 5) and len(of(r, 'tool_call')) == 8

# ---------------------------------------------------------------- limits
def test_limit_on_calls_and_output():
    def script(req):
        n = req.prefix.count('```output')
        if n < 3: return [Step(0.5, f"step {n}\n```python\nprint({10 ** 900 + n})\n```\n", 5), Step(1e9, 'x')]
        return say('\\boxed{3}', 20)
    s, _ = solver(script, config(calls=2, output_chars=100))
    r = s.solve('q')
    calls = of(r, 'tool_call')
    assert [c.status for c in calls] == ['ok', 'ok', 'limit'] and [c.call for c in calls] == [0, 1, 2]
    assert all(len(c.output) < 180 for c in calls) and 'characters cut' in calls[0].output
    assert 'not run' in calls[2].output and r.answer == 3

def test_tool_time_limit_per_sample():
    def script(req):
        n = req.prefix.count('```output')
        if n < 2: return [Step(0.5, f"```python\nprint({n})\n```\n", 5), Step(1e9, 'x')]
        return say('\\boxed{3}', 20)
    s, _ = solver(script, config(total_s=1.0), exec_fn=lambda c: ok('1\n', 1.0))
    r = s.solve('q')
    assert [c.status for c in of(r, 'tool_call')] == ['ok', 'limit']

def test_failed_call_feeds_back_a_short_error():
    tb = 'Traceback (most recent call last):\n' + '  File "x", line 1, in <module>\n' * 40 + 'ZeroDivisionError: division by zero'
    s, _ = solver(code_then(1, lambda p: say('\\boxed{0}', 20)), config(),
                  exec_fn=lambda c: SimpleNamespace(status='error', stdout='', stderr=tb, duration=0.01, error=None, restarted=False))
    call = of(s.solve('q'), 'tool_call')[0]
    assert call.status == 'error' and call.output.count('File') == 1 and 'ZeroDivisionError: division by zero' in call.output

# ---------------------------------------------------------------- votes
def test_tool_answers_do_not_vote_while_running_but_count_without_a_box():
    cfg = config(samples=2, rules=[__import__('aimo2_nb.config', fromlist=['x']).ConsistencyRule(2, 2)])
    def script(req):
        if req.index == 0: return code_then(8, lambda p: say('no box, done.', 20))(req)
        return [Step(3.0, '\\boxed{8}', 1, 'stop')]
    s, _ = solver(script, cfg)
    r = s.solve('q')
    assert r.answer == 8 and r.reason == 'consistency'
    assert {d['sample']: d['vote'] for d in r.samples} == {0: 8, 1: 8}

# ---------------------------------------------------------------- replay
def test_replay_of_a_tir_run_gives_the_same_decisions():
    cfg = config(samples=3, rules=[__import__('aimo2_nb.config', fromlist=['x']).ConsistencyRule(2, 3)])
    def script(req):
        return code_then(100 + req.index % 2, lambda p: say(f"\\boxed{{{p.split('output')[1].split()[0]}}}", 20))(req)
    s, _ = solver(script, cfg)
    r = s.solve('q')
    assert of(r, 'tool_call')
    rep = replay(r.trace)
    assert rep.answer == r.answer and decisions(rep.trace) == decisions(r.trace)

# ---------------------------------------------------------------- a threaded engine (the llama.cpp / transformers base)
class Typist(SequentialEngine):
    "A word-per-token engine: turn 1 writes a python block and an invented output, turn 2 boxes what its output said."
    def _load(self): return None
    def _stream_one(self, sq, req):
        if req.prefix:
            shown = req.prefix.rsplit('```output\n', 1)[1].split('\n')[0]
            words = ['It ', 'printed ', shown + ', ', f'so \\boxed{{{shown}}}']
        else: words = ['Compute.\n', '```python\n', f'print({40 + req.index})\n', '```\n', '```output\n', '1\n', '```\n'] + ['more '] * 50
        for k, w in enumerate(words, 1):
            time.sleep(0.005)
            if sq.is_aborted(req.index): yield Chunk(req.index, '', k - 1, 'abort'); return
            yield Chunk(req.index, w, k)
        yield Chunk(req.index, '', len(words), 'stop')

def test_threaded_engine_pauses_and_resumes():
    cfg = config(samples=3, rules=[])
    eng = Typist(clock=RealClock())
    assert supports_turns(eng)
    class Ex:  # real futures, finished by a thread after a while
        def submit(self, code, timeout=None):
            f = ClockFuture()
            threading.Timer(0.05, lambda: f.set(run_print(code))).start()
            return f
    r = Solver(eng, cfg, executor=Ex()).solve('q')
    eng.close()
    assert sorted(d['vote'] for d in r.samples) == [40, 41, 42]
    for e in of(r, 'sample_end'):
        assert e.finish == 'stop' and '```output\n1' not in e.text and e.text.endswith(f"so \\boxed{{{40 + e.sample}}}")

def test_sample_queue_turn_states():
    sq = SampleQueue([SampleRequest(0, []), SampleRequest(1, [])])
    assert sq.next_ready() == 0
    sent = []
    sq.deliver(Chunk(0, 'abc', 2), sent.append)
    assert sq.pause(0) and not sq.pause(0)
    sq.deliver(Chunk(0, 'dropped', 3), sent.append)  # after the pause: counted, not forwarded
    sq.resume(0, 2, '[out]')  # resumed before its turn ended: queued again when it ends
    sq.end(0)
    assert sq.next_ready() == 0 and sq.request(0).prefix == 'ab[out]' and sq.tokens[0] == 3
    assert [c.text for c in sent] == ['abc']
    assert sq.request(0).sampling.max_new_tokens == RunConfig().sampling.max_new_tokens - 3
    assert sq.pause(0); sq.end(0)
    assert sq.state[0] == 'paused' and sq.abort(0) and sq.state[0] == 'done'  # an abort while paused ends it at once
    with pytest.raises(Exception, match='a paused sample'): sq.resume(1, 0, 'x')

# ---------------------------------------------------------------- real sandboxed sessions
def test_a_session_keeps_state_and_loses_it_on_a_crash_with_a_clear_message():
    from aimo2_nb.config import ExecConfig
    from aimo2_nb.executor import Executor
    steps = ["x = 41\nprint('set')", "print(x + 1)", "import os\nos._exit(3)", "print(x)"]
    def script(req):
        n = req.prefix.count('```output')
        if n < len(steps): return [Step(0.01, f"step {n}\n```python\n{steps[n]}\n```\n", 5), Step(1e9, 'x')]
        return say('\\boxed{42}', 200)
    cfg = config(timeout=120.0)
    ex = Executor(ExecConfig(timeout=10.0, workers=2))
    try:
        r = Solver(TimedEngine(script, clock=RealClock()), cfg, executor=ex).solve('q')
    finally: ex.close()
    calls = of(r, 'tool_call')
    assert [c.status for c in calls][:2] == ['ok', 'ok'] and calls[1].value == 42 and '42' in calls[1].output
    assert calls[2].status != 'ok' and not calls[2].restarted
    assert calls[3].restarted and 'the session restarted' in calls[3].output and 'NameError' in calls[3].output
    assert r.answer == 42 and all(c.isolation for c in calls)


def test_replay_of_a_real_clock_tir_run_with_real_sessions():
    "Recorded live (threads, real sandbox sessions, real clock), re-run offline: the same decisions, tool calls included."
    from aimo2_nb.config import ExecConfig, ConsistencyRule
    from aimo2_nb.executor import Executor
    def script(req):
        n = req.prefix.count('```output')
        if n == 0: return [Step(0.01 * (1 + req.index), f"```python\nx = {20 + req.index % 2}\nprint(x)\n```\n", 5), Step(1e9, 'x')]
        if n == 1: return [Step(0.01, "```python\nprint(x * 2)\n```\n", 4), Step(1e9, 'x')]
        v = req.prefix.rsplit('```output\n', 1)[1].split()[0]
        return say(f"\\boxed{{{v}}}", 200)
    cfg = config(samples=4, timeout=60.0, rules=[ConsistencyRule(2, 3)])
    ex = Executor(ExecConfig(timeout=10.0, workers=2))
    try: r = Solver(TimedEngine(script, clock=RealClock()), cfg, executor=ex).solve('q')
    finally: ex.close()
    assert len(of(r, 'tool_call')) >= 4 and r.answer in (40, 42)
    rep = replay(r.trace)
    assert rep.answer == r.answer and decisions(rep.trace) == decisions(r.trace)
    assert [e for e in decisions(rep.trace) if e.kind == 'tool_call'] == [e for e in decisions(r.trace) if e.kind == 'tool_call']


# ---------------------------------------------------------------- a turn that ends right at its block (found by the CPU eval)
@pytest.mark.parametrize('first', [[Step(0.5, "Compute.\n```python\nprint(18)\n```", 10), Step(0.1, '', 1, 'stop')],
                                   [Step(0.5, "Compute.\n```python\nprint(18)\n```", 10, 'stop')],
                                   [Step(0.5, "Compute.\n```python\nprint(18)\n```\n", 10, 'stop')]],
                         ids=['EOS in its own chunk', 'EOS with the fence', 'EOS after the newline'])
def test_eos_right_after_the_block_pauses_instead_of_ending(first):
    s, _ = solver(lambda req: first if not req.prefix else say("It printed 18, so \\boxed{18}.", 20, 8), config())
    r = s.solve('q')
    assert r.answer == 18 and [c.value for c in of(r, 'tool_call')] == [18]
    assert of(r, 'sample_end')[0].finish == 'stop' and r.samples[0]['stop'] == 'tir_boxed'


class EosAfterBlock(Typist):
    "Turn 1 writes a python block and ends (EOS) right after its fence, in the fence's own chunk."
    def _stream_one(self, sq, req):
        if req.prefix: yield from Typist._stream_one(self, sq, req); return
        words = ['Compute.\n', '```python\n', f'print({40 + req.index})\n', '```']
        for k, w in enumerate(words, 1):
            time.sleep(0.005)
            yield Chunk(req.index, w, k, 'stop' if k == len(words) else None)

def test_threaded_engine_eos_after_the_block_resumes():
    eng = EosAfterBlock(clock=RealClock())
    class Ex:
        def submit(self, code, timeout=None):
            f = ClockFuture(); threading.Timer(0.05, lambda: f.set(run_print(code))).start(); return f
    r = Solver(eng, config(samples=3, rules=[]), executor=Ex()).solve('q')
    eng.close()
    assert sorted(d['vote'] for d in r.samples) == [40, 41, 42] and len(of(r, 'tool_call')) == 3

def test_a_block_on_the_last_allowed_token_ends_only_that_sample():
    "No tokens left for the continuation: that sample ends 'length'; the samples queued behind it still run."
    class Short(Typist):
        def _stream_one(self, sq, req):
            if req.index == 0 and not req.prefix:
                for k, w in enumerate(['```python\n', 'print(1)\n', '```\n'], 1): yield Chunk(0, w, k)
                yield Chunk(0, '', 3, 'length'); return
            yield from Typist._stream_one(self, sq, req)
    eng = Short(clock=RealClock())
    class Ex:
        def submit(self, code, timeout=None):
            f = ClockFuture(); f.set(run_print(code)); return f
    cfg2 = config(samples=3, rules=[]); cfg2.sampling.max_new_tokens = 3
    r = Solver(eng, cfg2, executor=Ex()).solve('q')
    eng.close()
    fins = {e.sample: e.finish for e in of(r, 'sample_end')}
    assert fins[0] == 'length' and not [e for e in r.trace if e.kind == 'error']
