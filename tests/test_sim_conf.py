"""The simulator replays the online confidence filter (`stop.conf_filter`): the solver records each sample's window-NLL
trajectory, the simulator stops a sample where `policies.sample_stop` says so, and both stop the same samples at about
the same token counts."""
from dataclasses import replace
import pytest
from aimo2_nb import trace as T
from aimo2_nb.config import PromptConfig, PromptSpec, RunConfig, SpeedConfig, Tier, VoteConfig
from aimo2_nb.engines.replay import ScriptedExecutor, Step, TimedEngine
from aimo2_nb.policies import plan_question
from aimo2_nb.simulate import (Mark, RecQuestion, RecSample, SimConfig, from_csv, load_input, no_early_stop, simulate,
                               simulate_main, simulate_question)
from aimo2_nb.solver import Solver

FLAT = SimConfig(throughput=[[1, 100.0], [64, 6400.0]], overhead_s=0, bootstrap=0)  # 100 tokens/s per sample, as the engine below
N, WINDOW, CHUNK = 7, 8, 4  # samples, confidence window (a trajectory point every 2 tokens), tokens per engine chunk


def _cfg(filter_on: bool, warmup: int = 4) -> RunConfig:
    "Every early stop off but the confidence filter; N CoT samples, one question on a large budget."
    cfg = no_early_stop(RunConfig())
    cfg.prompts = PromptConfig([PromptSpec('cot', 'sys', '', '', N)])
    cfg.speed = SpeedConfig([Tier(3, N, 1000.0, 99, [])], adaptive=False)
    cfg.stop = replace(cfg.stop, conf_filter=filter_on, conf_warmup=warmup)
    cfg.budget.total_s, cfg.budget.reserve_s, cfg.budget.n_questions = 10_000.0, 0.0, 1
    cfg.vote, cfg.sampling.logprobs = VoteConfig(conf_window=WINDOW), 1
    return cfg


def _script(nll, box: dict) -> list:
    "Steps of CHUNK tokens at 100 tokens/s with token j's NLL `nll(j)`; `box[j]` boxed in the chunk that ends at token j."
    n = max(box)
    return [Step(CHUNK / 100, f"\\boxed{{{box[e]}}} " if e in box else 'hm ', CHUNK, 'stop' if e == n else None,
                 logprobs=tuple(-nll(j) for j in range(e - CHUNK + 1, e + 1))) for e in range(CHUNK, n + 1, CHUNK)]


def _pattern(i):
    return lambda j: 0.1 + 0.05 * ((7 * j + i) % 5)  # confident: every window's mean NLL <= 0.2125


SCRIPTS = [_script(_pattern(i), {200 + 40 * i: 7}) for i in range(4)]  # 0-3: the warm-up, done by 320 tokens (3.2 s)
SCRIPTS += [_script(lambda j: 0.1 if j <= 480 else 2.0, {800: 9}),  # 4: wanders from token 481: stopped, its 9 never comes
            _script(lambda j: 2.0 if 80 < j <= 120 else 0.1, {600: 7}),  # 5: wanders before the warm-up ends only: runs on
            _script(lambda j: 0.1 if j <= 400 else 2.0, {100: 5, 700: 8})]  # 6: boxes 5, wanders from 401: stopped, its 5 votes


def _record(tmp_path, filter_on: bool):
    "The solver's result and the recorded question of a run of SCRIPTS."
    eng = TimedEngine(SCRIPTS)
    r = Solver(eng, _cfg(filter_on), executor=ScriptedExecutor(lambda c: None, eng.clock, 0.5),
               trace_path=tmp_path / 'traces.jsonl').solve('q', 'q1', gold=7)
    (q,) = load_input(tmp_path)
    return r, q


def _solver_stops(r) -> dict:
    return {e.sample: (e.tokens, e.reason) for e in r.trace if e.kind == 'sample_stop'}


def _sim_stops(q, cfg) -> tuple[dict, dict]:
    rep = simulate([q], cfg, FLAT)
    out = rep.questions[0]
    return {i: (tok, why) for i, tok, why in out['stops']}, out


def test_solver_records_trajectories(tmp_path):
    "Every sample's `sample_end` holds its trajectory: a point every WINDOW // 4 tokens once the window is full."
    r, q = _record(tmp_path, False)
    ends = {e.sample: e.confidence for e in r.trace if e.kind == 'sample_end'}
    assert ends[0]['window'] == WINDOW and [p[0] for p in ends[0]['trajectory']][:3] == [8, 10, 12]
    assert len(ends[0]['trajectory']) == (200 - WINDOW) // 2 + 1 and ends[0]['worst_window_nll'] == 0.2125
    s4 = q.samples[4]
    assert s4.trajectory[:2] == ((8, 0.1), (10, 0.1)) and s4.worst == 2.0 and s4.n_tokens == 800 and not s4.censored
    assert s4.trajectory[-1] == (800, 2.0) and max(w for t, w in s4.trajectory if t <= 480) == 0.1


@pytest.mark.parametrize('recorded_with_filter', [True, False])
def test_solver_and_simulator_stop_the_same_samples(tmp_path, recorded_with_filter):
    "The solver with the filter on, and the simulator replaying its trace (or a trace recorded with the filter off):"
    " samples 4 and 6 stop with `low_confidence` at about the same token counts, 5 (a wander before the warm-up) runs."
    live, _ = _record(tmp_path / 'live', True)
    want = _solver_stops(live)
    assert {i: why for i, (_, why) in want.items()} == {4: 'low_confidence', 6: 'low_confidence'}
    assert 481 <= want[4][0] <= 481 + CHUNK and 401 <= want[6][0] <= 401 + CHUNK
    _, q = _record(tmp_path / 'rec', recorded_with_filter)
    got, out = _sim_stops(q, _cfg(True))
    assert set(got) == set(want) and all(why == 'low_confidence' for _, why in got.values())
    for i in want: assert abs(got[i][0] - want[i][0]) <= WINDOW // 4 + CHUNK, (i, got[i], want[i])
    assert (out['answer'], out['reason']) == (live.answer, live.reason) == (7, 'all_finished')
    assert abs(out['tokens'] - live.tokens) <= 2 * (WINDOW // 4 + CHUNK)


def test_stopped_sample_keeps_its_earlier_answer(tmp_path):
    "Sample 6's 5 (boxed before it wandered) votes in the solver and in the simulator; 4's 9 never arrives in either."
    eng = TimedEngine(SCRIPTS)
    r = Solver(eng, _cfg(True), executor=ScriptedExecutor(lambda c: None, eng.clock, 0.5)).solve('q', 'q1')
    votes = {s['sample']: s['vote'] for s in r.samples}
    assert votes[6] == 5 and votes[4] is None and {a for a, _ in r.vote.tally.items()} == {5, 7}
    # the simulator: one confident sample (123) and a stopped one that boxed 456 first: tied, the largest wins only if 456 votes
    th_first = RecSample(0, 'cot', 100, (Mark(100, 'boxed', 123),), trajectory=((100, 0.2),), worst=0.2)
    boxed_then_lost = RecSample(1, 'cot', 1000, (Mark(50, 'boxed', 456),), trajectory=((100, 0.2), (200, 0.3), (300, 1.5)), worst=1.5)
    cfg = _cfg(True, warmup=1); cfg.speed.tiers[0].samples = 2; cfg.vote = VoteConfig(low_weight=1.0)
    qq = RecQuestion('kept', 456, (th_first, boxed_then_lost))
    res = simulate_question(qq, plan_question(10_000, 1, cfg), cfg, FLAT)
    assert (res.stops, res.answer) == (((1, 200, 'low_confidence'),), 456)  # th = 0.2 at 1 s (100 tokens); 0.3 > 0.2 at 200


def test_filter_never_fires_off_before_warmup_or_without_trajectories(tmp_path):
    _, q = _record(tmp_path, False)
    for cfg in (_cfg(False), _cfg(True, warmup=8)):  # off; a warm-up of 8 finished samples never completes (4 and 6 are long)
        got, out = _sim_stops(q, cfg)
        assert got == {} and out['tokens'] == 200 + 240 + 280 + 320 + 800 + 600 + 700
    bare = replace(q, samples=tuple(replace(s, trajectory=()) for s in q.samples))  # an older trace: no trajectories
    assert _sim_stops(bare, _cfg(True))[0] == {}
    p = tmp_path / 'a.csv'
    p.write_text('question_id,sample_id,kind,answer,n_tokens,first_answer_token,gold,conf\n'
                 + ''.join(f'q,{i},cot,7,{200 + 100 * i},,7,{0.1 + i}\n' for i in range(N)))
    rows = from_csv(p)
    assert all(s.trajectory == () for s in rows[0].samples)
    rep = simulate(rows, _cfg(True, warmup=1), FLAT)
    assert rep.questions[0]['stops'] == () and rep.conf_trajectory_frac == 0.0
    cfg_file = tmp_path / 'c.yaml'
    cfg_file.write_text('stop:\n  conf_filter: true\n')
    assert 'confidence filter: 0.0% of the recorded samples have a confidence trajectory' in simulate_main(p, cfg_file)


def test_old_trace_without_trajectory_loads(tmp_path):
    "A `sample_end` confidence summary from before trajectories: it loads; the sample has no trajectory."
    w = T.TraceWriter(tmp_path / 'traces.jsonl')
    for e in [T.QuestionStart('o', 0.0, question='?', speed=3, samples=1, limit_s=60, avg_s_left=60, gold=7, kinds=['cot']),
              T.Answer('o', 1.0, 0, 'boxed', 7, '7', 90),
              T.SampleEnd('o', 1.0, 0, 'stop', 90, confidence=dict(n=90, mean_nll=0.3, tail_nll=0.2, worst_window_nll=0.5)),
              T.QuestionEnd('o', 1.0, 7, 'all_finished', 90)]:
        w.add(e)
    w.flush()
    (q,) = load_input(tmp_path)
    assert (q.samples[0].conf, q.samples[0].trajectory, q.samples[0].worst) == (0.2, (), None)  # 90 < the default 256 window
    assert simulate([q], _cfg(True, warmup=1), FLAT).conf_trajectory_frac == 0.0


def test_tune_grid_sets_the_filter(tmp_path):
    "`aimo2 tune` grids reach `stop.conf_filter`: on, the simulator saves the wandering samples' tokens."
    from aimo2_nb.tune import DataSpec, TuneGrid, evaluate
    _record(tmp_path, False)
    g = TuneGrid(base='default', axes={'stop.conf_filter': [False, True]},
                 set={'prompts.list': [{'kind': 'cot', 'system': 'sys', 'count': N}], 'speed.adaptive': False,
                      'speed.tiers.*.samples': N, 'stop.cot_at_boxed': False, 'stop.rules': [], 'stop.use_min_answers': False,
                      'stop.decided': False, 'stop.sequential': 'off'},
                 simulate={'throughput': [[1, 100.0], [64, 6400.0]], 'overhead_s': 0, 'bootstrap': 0})
    off, on = evaluate(g, {'rec': DataSpec(str(tmp_path))}, jobs=1, show=False)
    assert (off['stop.conf_filter'], on['stop.conf_filter']) == (False, True)
    assert off['rec.tokens_saved_frac'] == 0.0
    saved = (800 - 482) + (700 - 402)  # samples 4 and 6 stop at their first trajectory point past the threshold
    assert on['rec.tokens_saved_frac'] == pytest.approx(saved / 3140, abs=0.002) and on['rec.changed_per_30'] == 0


@pytest.mark.parametrize('measure,want', [('tail', 333), ('mean', 777), ('worst', 777)])
def test_solver_and_simulator_read_the_same_confidence(tmp_path, measure, want):
    "`vote.conf_measure` picks which confidence breaks a tie; the solver and the simulator replaying its trace agree."
    # 333: unsure for 200 tokens, then sure (tail 0.1, mean 1.05, worst 2.0); 777: 0.5 throughout
    scripts = [_script(lambda j: 2.0 if j <= 200 else 0.1, {400: 333}), _script(lambda j: 0.5, {400: 777})]
    cfg = _cfg(False)
    cfg.prompts = PromptConfig([PromptSpec('cot', 'sys', '', '', 2)])
    cfg.speed = SpeedConfig([Tier(3, 2, 1000.0, 99, [])], adaptive=False)
    cfg.vote = VoteConfig(conf_window=WINDOW, tie_break='confidence', conf_measure=measure)
    eng = TimedEngine(scripts)
    live = Solver(eng, cfg, executor=ScriptedExecutor(lambda c: None, eng.clock, 0.5),
                  trace_path=tmp_path / 'traces.jsonl').solve('q', 'q1', gold=777)
    (q,) = load_input(tmp_path)
    assert [s.mean for s in q.samples] == pytest.approx([1.05, 0.5]) and q.samples[0].worst == pytest.approx(2.0)
    _, out = _sim_stops(q, cfg)
    assert live.answer == out['answer'] == want
