"""The lmdeploy adapter on a real GPU: streaming, per-sample abort, queued aborts and a Solver smoke run, on a random-weight
model of the Qwen2.5-0.5B shape with the real DeepSeek-R1-Distill tokenizer (made into /dev/shm on first use, ~3 s).

    python -m pytest -q -m gpu tests/gpu      # on the GPU machine, after the .whl install line of bench/GPU.md
Set AIMO2_GPU_MODEL to use an existing model folder instead."""
from __future__ import annotations
import os, subprocess, sys, time
from pathlib import Path
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip('torch')
if not torch.cuda.is_available(): pytest.skip('no CUDA device', allow_module_level=True)
pytest.importorskip('lmdeploy')

from aimo2_nb.config import RunConfig, SamplingConfig, SpeedConfig, Tier
from aimo2_nb.engines.base import SampleRequest
from aimo2_nb.engines.lmdeploy import LmdeployConfig, LmdeployEngine

ROOT = Path(__file__).resolve().parents[2]
SHAPE_05B = ['--mode', 'transformers', '--hidden', '896', '--layers', '24', '--heads', '14', '--kv', '2', '--inter', '4864',
             '--vocab', '151936', '--tie']
BATCH = 8

@pytest.fixture(scope='module')
def model_dir() -> str:
    if os.environ.get('AIMO2_GPU_MODEL'): return os.environ['AIMO2_GPU_MODEL']
    out = Path('/dev/shm/aimo2-qwen05-random')
    if not (out / 'generation_config.json').exists():
        subprocess.run([sys.executable, str(ROOT / '.gpu' / 'make_random_qwen2.py'), '--out', str(out),
                        '--tok', str(ROOT / '.gpu' / 'r1-tokenizer'), *SHAPE_05B], check=True, timeout=300)
    return str(out)

@pytest.fixture(scope='module')
def engine(model_dir):
    e = LmdeployEngine(LmdeployConfig(model=model_dir, backend='pytorch', tp=1, max_batch_size=BATCH, quant_policy=8,
                                      cache_max_entry_count=0.3, max_new_tokens=2048))
    e.load()
    yield e
    e.close(timeout=20)

def reqs(n: int, max_new: int, first: int = 0):
    msgs = [{'role': 'system', 'content': 'You are a helpful math assistant.'}, {'role': 'user', 'content': 'What is 17*23?'}]
    return [SampleRequest(first + i, msgs, SamplingConfig(max_new_tokens=max_new), seed=100 + i) for i in range(n)]

def until(e, pred, limit_s, got):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        got += e.poll(0.02)
        if pred(): return True
    return False

def ended(e): return e._call.stream.done.is_set() and not e._call.stream.open

def test_backend_and_prompt(engine):
    assert engine.backend == 'pytorch'
    ae = engine.pipe.async_engine
    p = ae.chat_template.messages2prompt(reqs(1, 8)[0].messages)
    assert p.endswith('<｜Assistant｜>') and ae.tokenizer.encode(p, add_bos=True)[1] != ae.tokenizer.bos_token_id

def test_streaming_deltas_and_counts(engine):
    engine.cfg.ignore_eos = True
    try:
        engine.start(reqs(4, 64))
        got = []
        assert until(engine, lambda: ended(engine), 60, got)
    finally: engine.cfg.ignore_eos = False
    ends = {c.index: (c.finish, c.tokens) for c in got if c.finish}
    assert ends == {i: ('length', 64) for i in range(4)}, ends
    for i in range(4):
        toks = [c.tokens for c in got if c.index == i]
        assert toks == sorted(toks) and toks[-1] == 64
    texts = {''.join(c.text for c in got if c.index == i) for i in range(4)}
    assert len(texts) == 4  # own seed per sample: no two samples alike

def test_abort_one_then_all(engine):
    engine.cfg.ignore_eos = True
    try:
        engine.start(reqs(4, 2000))
        got = []
        assert until(engine, lambda: all(any(c.index == i and c.tokens >= 16 for c in got) for i in range(4)), 60, got)
        t0 = time.monotonic(); engine.abort(1)
        assert until(engine, lambda: any(c.index == 1 and c.finish for c in got), 5, got)
        one = time.monotonic() - t0
        fin1 = [c for c in got if c.index == 1 and c.finish][0]
        assert fin1.finish == 'abort'
        assert not any(c.finish for c in got if c.index != 1)  # the others go on
        engine.abort_all()
        assert until(engine, lambda: ended(engine), 10, got)
    finally: engine.cfg.ignore_eos = False
    assert {c.index: c.finish for c in got if c.finish} == {i: 'abort' for i in range(4)}
    rec = [r for r in engine.abort_log if r['index'] == 1][-1]
    print(f"abort of one sample: {one * 1000:.0f} ms, {rec['tokens_after']} tokens after")
    assert rec['tokens_after'] < 64 and one < 2

def test_abort_of_queued_samples(engine):
    "lmdeploy 0.18 ignores Session.abort() for queued requests: the adapter reports them at once and re-aborts later."
    engine.cfg.ignore_eos = True
    try:
        engine.start(reqs(BATCH + 2, 2000))
        engine.abort(BATCH); engine.abort(BATCH + 1)
        got = []
        assert until(engine, lambda: sum(1 for c in got if c.index in (BATCH, BATCH + 1) and c.finish == 'abort') == 2, 2, got)
        until(engine, lambda: False, 1.0, got)
        t0 = time.monotonic(); engine.abort_all()
        assert until(engine, lambda: ended(engine), 15, got)
        drain = time.monotonic() - t0
    finally: engine.cfg.ignore_eos = False
    assert not [c for c in got if c.index in (BATCH, BATCH + 1) and c.text]
    time.sleep(1)
    late = [r for r in engine.abort_log if r['early'] and r['index'] in (BATCH, BATCH + 1)]
    assert all(r['tokens'] < 500 for r in late), late
    assert drain < 10

def test_solver_smoke(engine):
    from aimo2_nb.solver import Solver
    cfg = RunConfig()
    cfg.sampling.max_new_tokens = 1024
    cfg.speed = SpeedConfig([Tier(3, 6, 6.0, 6)], adaptive=False)
    b = cfg.budget
    b.total_s, b.reserve_s, b.n_questions, b.min_question_s, b.drain_s = 20.0, 0.0, 2, 0.0, 2.0
    s = Solver(engine, cfg)
    for q in ('What is 17*23?', 'Find the remainder of 2^100 modulo 7.'):
        r = s.solve(q)
        assert r.elapsed <= r.plan.limit_s + 0.1 and 0 <= r.answer < 1000 and r.tokens > 0
        assert all(x['finish'] in ('stop', 'length', 'abort') for x in r.samples), r.samples
