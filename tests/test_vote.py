"Table of voting cases: seed defects, answer 0, weights, every tie-break, the fallback, order independence."
import random
import pytest
from aimo2_nb.config import VoteConfig
from aimo2_nb.vote import SampleAnswer as S, sample_vote, answer_weight, vote

CASES = [  # id, samples, config, expected answer, expected fallback
    ('majority', [S(0, 42), S(1, 42), S(2, 333)], {}, 42, False),
    ('seed_defect_3_failed_run_keeps_boxed', [S(0, 123, None, kind='code'), S(1, 123, None), S(2, None, 456)], {}, 123, False),
    ('code_replaces_boxed', [S(0, 123, 456), S(1, 456), S(2, 123)], {}, 456, False),
    ('boxed_first_without_code_priority', [S(0, 123, 456), S(1, 123), S(2, 456)], {'code_priority': False}, 123, False),
    ('code_only_sample_votes_without_priority', [S(0, None, 456)], {'code_priority': False}, 456, False),
    ('answer_0_counts', [S(0, 0), S(1, 0), S(2, 500)], {'low_weight': 1.0}, 0, False),
    ('answer_0_code', [S(0, None, 0)], {}, 0, False),
    ('answer_0_alone_low_weight_still_wins', [S(0, 0)], {}, 0, False),
    ('low_weight_small_loses', [S(0, 7), S(1, 7), S(2, 333), S(3, 333)], {}, 333, False),
    ('low_weight_small_two_beat_one', [S(0, 7), S(1, 7), S(2, 333)], {}, 7, False),
    ('low_weight_multiple_of_100', [S(0, 200), S(1, 200), S(2, 333), S(3, 333)], {}, 333, False),
    ('weights_off', [S(0, 7), S(1, 7), S(2, 333)], {'low_weight': 1.0}, 7, False),
    ('five_low_tie_three_full_largest', [S(i, 100) for i in range(5)] + [S(5 + i, 333) for i in range(3)], {}, 333, False),
    ('five_low_tie_three_full_smallest', [S(i, 100) for i in range(5)] + [S(5 + i, 333) for i in range(3)], {'tie_break': 'smallest'}, 100, False),
    ('tie_largest', [S(0, 450), S(1, 960)], {}, 960, False),
    ('tie_smallest', [S(0, 450), S(1, 960)], {'tie_break': 'smallest'}, 450, False),
    ('tie_earliest', [S(0, 450, order=2.0), S(1, 960, order=1.0)], {'tie_break': 'earliest'}, 960, False),
    ('tie_earliest_first_vote_counts', [S(0, 450, order=2.0), S(1, 960, order=1.0), S(2, 450, order=0.5), S(3, 960, order=3)], {'tie_break': 'earliest'}, 450, False),
    ('tie_earliest_same_order_then_largest', [S(0, 450, order=1.0), S(1, 960, order=1.0)], {'tie_break': 'earliest'}, 960, False),
    ('earliest_ignores_untied', [S(0, 730, order=0.0), S(1, 450, order=2.0), S(2, 450, order=3.0)], {'tie_break': 'earliest'}, 450, False),
    ('all_none_fallback', [S(0), S(1, None, None), S(2, kind='code')], {'fallback': 210}, 210, True),
    ('empty_fallback', [], {}, 0, True),
]

@pytest.mark.parametrize('samples,cfg,answer,fallback', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_vote_table(samples, cfg, answer, fallback):
    r = vote(samples, VoteConfig(**cfg))
    assert (r.answer, r.fallback) == (answer, fallback)
    assert r.n_valid == sum(sample_vote(s, VoteConfig(**cfg)) is not None for s in samples)
    assert sum(r.counts.values()) == r.n_valid and set(r.tally) == set(r.counts)
    assert r.reason
    rng = random.Random(0)
    for _ in range(10):
        xs = list(samples); rng.shuffle(xs)
        assert vote(xs, VoteConfig(**cfg)) == r

@pytest.mark.parametrize('a,cfg,w', [(0, {}, 0.6), (20, {}, 0.6), (21, {}, 1.0), (100, {}, 0.6), (900, {}, 0.6), (150, {}, 1.0),
                                     (0, {'low_max': -1}, 1.0), (100, {'low_multiple': 0}, 1.0), (5, {'low_weight': 1.0}, 1.0),
                                     (50, {'low_multiple': 25}, 0.6)])
def test_answer_weight(a, cfg, w):
    assert answer_weight(a, VoteConfig(**cfg)) == w

@pytest.mark.parametrize('tie_break', ['largest', 'smallest', 'earliest'])
@pytest.mark.parametrize('seed', range(20))
def test_order_independence(seed, tie_break):
    rng, cfg = random.Random(seed), VoteConfig(tie_break=tie_break)
    xs = [S(i, rng.choice([None, 0, 7, 100, 450, 960]), rng.choice([None, None, 450, 7, 0]), order=rng.random())
          for i in range(rng.randint(0, 16))]
    ref = vote(xs, cfg)
    for _ in range(10):
        rng.shuffle(xs)
        assert vote(xs, cfg) == ref
