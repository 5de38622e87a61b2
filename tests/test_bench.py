"run_bench(small=True) runs and writes results.json / results.md with the keys and sane types (no timing asserts)."
import json
from aimo2_nb.bench import run_bench

KEYS = {'loop_cpu_us_per_token': float, 'loop_share_at_2400_tok_s': float, 'loop_speedup_vs_seed_16k': float,
        'exec_p50_ms_pool': (float, type(None)), 'exec_speedup_vs_fresh': (float, type(None)),
        'exec_session_vs_pool_p50': (float, type(None))}


def test_run_bench_small(tmp_path):
    res = run_bench(tmp_path, small=True, exec_runs=2)
    data = json.loads((tmp_path / 'results.json').read_text())
    md = (tmp_path / 'results.md').read_text()
    for k, t in KEYS.items():
        assert k in data and isinstance(data[k], t), (k, data.get(k))
    assert all(r['ours_gross_us_per_token'] > 0 for r in data['loop'])  # the loop did measurable work (values not asserted)
    assert data['small'] is True and data['headline_tokens_per_sample'] == 4000
    assert [r['tokens_per_sample'] for r in data['loop']] == [1000, 2000, 4000]
    for r in data['loop']:
        assert r['ours_found_all_answers'] is True
        assert r['ours_first_answer_delay_tokens']['max'] == 0
        assert r['seed_first_answer_delay_tokens']['max'] >= 0
    assert data['date'] and data['device'] and isinstance(data['cpus'], int)
    assert isinstance(data['exec'], dict) and 'source' in data['exec']
    assert '| samples x tokens |' in md and 'Code execution latency' in md
    if data['exec_session_vs_pool_p50'] is not None: assert 'session/pool p50' in md   # a warm session vs a one-shot run
    assert res['loop_cpu_us_per_token'] == data['loop_cpu_us_per_token']


def test_aimo2_bench_small_compares_like_with_like(tmp_path, monkeypatch, capsys):
    "`aimo2 bench --small` gives no verdict against the goals set at 32 x 16k, and leaves the recorded bench/ alone."
    from aimo2_nb.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(['bench', '--small', '--exec-runs', '2']) == 0
    out = capsys.readouterr().out
    assert (tmp_path / 'runs' / 'bench-small' / 'results.md').is_file() and not (tmp_path / 'bench').exists()
    assert 'gives no verdict' in out and '>= 3x faster than the seed at 16k:' not in out
