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
