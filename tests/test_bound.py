"""bench/tune/bound.py: the two bounds on what a stop rule can save, checked on hand-made questions."""
from __future__ import annotations
import importlib.util, sys
from pathlib import Path

import pytest

from aimo2_nb.config import profile
from aimo2_nb.simulate import Mark, RecQuestion, RecSample, SimConfig

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('bound', ROOT / 'bench/tune/bound.py')
bound = importlib.util.module_from_spec(spec); sys.modules['bound'] = bound; spec.loader.exec_module(bound)

FLAT = SimConfig(curve='h100-gptoss120b-est', overhead_s=0.0, ctx_step=10 ** 9)


def q(*samples) -> RecQuestion:
    "A question from (tokens, answer or None) pairs."
    return RecQuestion('q', None, tuple(RecSample(i, 'tir', n, () if a is None else (Mark(n, 'boxed', a),))
                                        for i, (n, a) in enumerate(samples)))


def test_first_answer_and_oracle_on_a_hand_made_question():
    # arrivals: 1000 -> 5555, 2000 -> 7777, 3000 -> 7777, 4000 -> none; no early stop votes 7777 (2 of 3)
    r = bound.question(q((3000, 7777), (1000, 5555), (4000, None), (2000, 7777)), 10, profile('default').vote, FLAT)
    assert r['tokens'] == 10000
    assert r['first'][0] == 4 * 1000 and r['first'][2] is True  # stops at the first answer, 5555: a changed answer
    # after two answers 5555 and 7777 tie: the default vote's tie-break takes the larger, 7777 = the final answer
    assert r['oracle'][0] == 1000 + 3 * 2000 and r['first'][1] < r['oracle'][1] < r['time']


def test_the_oracle_waits_while_the_vote_differs():
    # 9999 alone, then a 9999 / 3333 tie (the larger wins): the vote equals the final 3333 only at the third answer
    r = bound.question(q((1000, 9999), (2000, 3333), (3000, 3333), (5000, 3333)), 10, profile('default').vote, FLAT)
    assert r['oracle'][0] == 1000 + 2000 + 3000 + 3000
    assert r['first'][2] is True


def test_no_answer_at_all_stops_both_bounds_at_once():
    r = bound.question(q((1000, None), (2000, None)), 10, profile('default').vote, FLAT)
    assert r['first'][:2] == (0, 0) and r['oracle'] == (0, 0) and r['tokens'] == 3000


def test_finish_times_follow_the_curve_and_shrinking_batch():
    t = bound.finish_times([1000, 2000], FLAT)
    rate = bound.sample_rate(2, FLAT.prompt_tokens, FLAT)
    assert t[0] == pytest.approx(1000 / rate)
    assert t[1] > t[0] and t[1] == pytest.approx(t[0] + 1000 / bound.sample_rate(1, FLAT.prompt_tokens + 1000, FLAT))


def test_summary_and_allowance():
    rows = [dict(tokens=100, time=10.0, first=(40, 2.0, True), oracle=(80, 8.0)),
            dict(tokens=100, time=10.0, first=(50, 5.0, False), oracle=(50, 5.0))]
    s = bound.summarise(rows, 0.5)  # the allowance may switch half of the questions: the first one, which gains most
    assert s['first'] == pytest.approx(dict(tokens_saved=0.55, time_saved=0.65, changed_per_30=15.0))
    assert s['oracle'] == pytest.approx(dict(tokens_saved=0.35, time_saved=0.35, changed_per_30=0.0))
    assert s['allowance']['tokens_saved'] == pytest.approx(0.55) and s['allowance']['time_saved'] == pytest.approx(0.65)
