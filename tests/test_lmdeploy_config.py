"""The lmdeploy engine on CPU: our settings against lmdeploy 0.18's REAL config classes, the chat prompt lmdeploy
builds for an R1-distill tokenizer, and the adapter's logic (sessions, seeds, abort routing, queued samples, chunk
conversion, errors) against a stand-in pipeline with lmdeploy's interface and semantics.

The real-class tests need `lmdeploy` importable without a GPU: see bench/GPU.md ("CPU CI") for the install lines
(CPU torch + `pip install --no-deps lmdeploy==0.18.0` + a handful of light packages). They skip otherwise."""
from __future__ import annotations
import dataclasses, json, os, threading, time
from pathlib import Path
from types import SimpleNamespace
import pytest
from aimo2_nb.config import RunConfig, SamplingConfig, SpeedConfig, Tier
from aimo2_nb.core import ConfigError
from aimo2_nb.engines.base import Chunk, Engine, SampleRequest, load_engine
from aimo2_nb.engines.lmdeploy import (LmdeployConfig, LmdeployEngine, QuantPolicy, backend_config,
                                       backend_kwargs, chat_messages, generation_config, generation_kwargs,
                                       running_backend, settings_config, _InferCall, TurbomindProbe)
from doubles.fake_lmdeploy import FakePipeline

ROOT = Path(__file__).resolve().parents[1]

def lmdeploy_messages():
    return pytest.importorskip('lmdeploy.messages', reason='lmdeploy not installed (see bench/GPU.md, CPU CI)')

def field_names(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}

# ---------------------------------------------------------------- settings
def test_defaults_are_the_seeds():
    c = LmdeployConfig()
    assert (c.backend, c.tp, c.quant_policy, c.max_batch_size, c.cache_max_entry_count, c.enable_prefix_caching,
            c.max_prefill_token_num) == ('turbomind', 0, QuantPolicy.INT8, 32, 0.95, True, 8192)
    assert c.resolved_session_len == 16384 + 8192 + 128
    assert LmdeployConfig(session_len=40000).resolved_session_len == 40000

@pytest.mark.parametrize('settings, msg', [
    ({'quant_policy': 16}, 'engine.quant_policy: expected one of 0, 4, 8, got 16'),
    ({'quant_policy': True}, 'engine.quant_policy'),
    ({'backend': 'vllm'}, 'engine.backend'),
    ({'tp': 'all'}, "engine.tp: expected an integer, got 'all'"),
    ({'model_format': 'gguf'}, 'engine.model_format'),
    ({'max_batch_size': 0}, 'engine.max_batch_size'),
    ({'backend': 'pytorch', 'cache_max_entry_count': 1.0}, 'engine.cache_max_entry_count'),
    ({'session_len': 10}, 'engine.session_len'),
    ({'executor_backend': 'slurm'}, 'engine.executor_backend'),
    ({'max_batch': 32}, 'engine.max_batch: unknown setting'),
])
def test_bad_settings_name_the_field(settings, msg):
    with pytest.raises(ConfigError, match=msg.replace('.', r'\.').replace('(', r'\(')):
        settings_config(settings)

def test_quant_policy_from_yaml_int():
    assert settings_config({'quant_policy': 0}).quant_policy is QuantPolicy.NONE
    assert settings_config({'kind': 'lmdeploy', 'quant_policy': 4}).quant_policy is QuantPolicy.INT4

def test_registered_engine_kind():
    e = load_engine({'kind': 'lmdeploy', 'model': '/nowhere', 'backend': 'pytorch', 'max_batch_size': 16})
    assert isinstance(e, LmdeployEngine) and isinstance(e, Engine)
    assert (e.cfg.max_batch_size, e.pipe) == (16, None)  # nothing loaded yet

# ---------------------------------------------------------------- the real config classes
KAGGLE = dict(model='/kaggle/input/r1-14b-awq', backend='turbomind', quant_policy=8, model_format='awq')

def test_turbomind_config_kaggle_l4():
    m = lmdeploy_messages()
    cfg = LmdeployConfig(**KAGGLE)
    tc = backend_config(cfg, n_gpus=4)
    assert isinstance(tc, m.TurbomindEngineConfig)
    assert (tc.tp, tc.quant_policy, tc.model_format, tc.enable_prefix_caching) == (4, 8, 'awq', True)
    assert (tc.session_len, tc.max_batch_size, tc.cache_max_entry_count, tc.max_prefill_token_num) == (24704, 32, 0.95, 8192)
    assert tc.dtype == 'auto'

def test_pytorch_config():
    m = lmdeploy_messages()
    cfg = LmdeployConfig(model='/m', backend='pytorch', quant_policy=8, model_format='awq', cache_max_entry_count=0.9,
                         max_batch_size=16, session_len=9000, tp=2)
    pc = backend_config(cfg, n_gpus=1)
    assert isinstance(pc, m.PytorchEngineConfig)
    assert pc.quant_policy == m.QuantPolicy.INT8 and int(pc.quant_policy) == 8
    assert pc.model_format is None  # AWQ is read from the checkpoint's quantization_config by the PyTorch engine
    assert (pc.tp, pc.distributed_executor_backend, pc.eager_mode) == (2, 'mp', False)
    assert (pc.session_len, pc.max_batch_size, pc.cache_max_entry_count, pc.enable_prefix_caching) == (9000, 16, 0.9, True)
    one = backend_config(LmdeployConfig(backend='pytorch', quant_policy=0, cache_max_entry_count=0.5), n_gpus=1)
    assert (one.tp, one.quant_policy, one.distributed_executor_backend) == (1, 0, None)

@pytest.mark.parametrize('backend', ['turbomind', 'pytorch'])
@pytest.mark.parametrize('fmt', [None, 'awq', 'fp8'])
@pytest.mark.parametrize('qp', [0, 4, 8])
def test_every_mapped_key_is_a_real_field(backend, fmt, qp):
    m = lmdeploy_messages()
    cls = m.TurbomindEngineConfig if backend == 'turbomind' else m.PytorchEngineConfig
    cfg = LmdeployConfig(backend=backend, model_format=fmt, quant_policy=qp, cache_max_entry_count=0.9, tp=0)
    kw = backend_kwargs(cfg, n_gpus=4)
    assert set(kw) <= field_names(cls), set(kw) - field_names(cls)
    obj = cls(**kw)  # lmdeploy's own __post_init__ accepts it
    assert int(obj.quant_policy) == qp and obj.tp == 4

def test_our_quant_policy_is_lmdeploys():
    m = lmdeploy_messages()
    for q in QuantPolicy: assert int(m.QuantPolicy(int(q))) == int(q) and m.QuantPolicy(int(q)).name == q.name

def test_generation_config_overrides_lmdeploy_defaults():
    m = lmdeploy_messages()
    d = m.GenerationConfig()
    assert (d.do_sample, d.top_k, d.max_new_tokens) == (False, 50, 512)  # the pitfalls we must override
    s = SamplingConfig(temperature=0.9, top_p=0.95, min_p=0.1, repetition_penalty=1.05, max_new_tokens=20000, top_k=0)
    g = generation_config(s, seed=1234)
    assert isinstance(g, m.GenerationConfig)
    assert (g.do_sample, g.temperature, g.top_p, g.top_k, g.min_p) == (True, 0.9, 0.95, 0, 0.1)
    assert (g.repetition_penalty, g.max_new_tokens, g.random_seed, g.ignore_eos) == (1.05, 20000, 1234, False)
    assert set(generation_kwargs(s, 1)) <= field_names(m.GenerationConfig)
    assert generation_config(SamplingConfig(temperature=0.0), 1).do_sample is False
    assert generation_config(s, 1, ignore_eos=True).ignore_eos is True

def test_each_sample_gets_its_own_seed():
    lmdeploy_messages()
    from aimo2_nb.prompts import build_requests
    reqs = build_requests('What is 2+2?', RunConfig(), 15, 'q1')
    seeds = [generation_config(r.sampling, r.seed).random_seed for r in reqs]
    assert len(set(seeds)) == 15

def test_response_conversion_with_the_real_class():
    m = lmdeploy_messages()
    run = _InferCall([SampleRequest(5, []), SampleRequest(6, [])], ['s5', 's6'])
    ch, again, rec = run.on_response(m.Response(text='Hi', generate_token_len=1, input_token_len=9, index=0), 0.0)
    assert ch == Chunk(5, 'Hi', 1) and not again and rec is None
    err = m.Response(text='', generate_token_len=0, input_token_len=9, finish_reason='error', index=1,
                     error_code='INPUT_LENGTH_ERROR', error_message='prompt longer than session_len')
    ch, _, _ = run.on_response(err, 0.1)
    assert (ch.index, ch.finish) == (6, 'error') and 'prompt longer than session_len' in ch.error

# ---------------------------------------------------------------- the chat prompt lmdeploy builds
def r1_tokenizer_dir() -> Path | None:
    for p in (os.environ.get('AIMO2_R1_TOKENIZER'), ROOT / '.gpu' / 'r1-tokenizer', ROOT.parent / 'shared' / 'gpu' / 'r1-tokenizer'):
        if p and (Path(p) / 'tokenizer.json').exists(): return Path(p)
    return None

R1_FIXTURE = ROOT / 'tests' / 'fixtures' / 'r1-tokenizer'  # shipped with the repo (tokenizer.json xz-compressed)

def test_r1_prompt_ends_with_assistant_start(tmp_path):
    lmdeploy_messages()
    import lzma
    tok = r1_tokenizer_dir()
    if tok is not None:
        for f in ('tokenizer.json', 'tokenizer_config.json'): (tmp_path / f).write_bytes((tok / f).read_bytes())
    else:  # a clone alone: the fixture the repo ships
        (tmp_path / 'tokenizer.json').write_bytes(lzma.decompress((R1_FIXTURE / 'tokenizer.json.xz').read_bytes()))
        (tmp_path / 'tokenizer_config.json').write_bytes((R1_FIXTURE / 'tokenizer_config.json').read_bytes())
    (tmp_path / 'config.json').write_text(json.dumps(dict(architectures=['Qwen2ForCausalLM'], model_type='qwen2',
        vocab_size=152064, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=4096, bos_token_id=151646, eos_token_id=151643)))
    from lmdeploy.model import get_chat_template
    from lmdeploy.tokenizer import Tokenizer
    ct, tk = get_chat_template(str(tmp_path)), Tokenizer(str(tmp_path))
    assert type(ct).__name__ == 'HFChatTemplate'  # the model's own Jinja template
    req = RunConfig().prompts.list[1]
    from aimo2_nb.prompts import messages
    r = SampleRequest(0, messages(req, 'What is 2+2?'))
    p = ct.messages2prompt(chat_messages(r))
    assert p.startswith('<｜begin▁of▁sentence｜>You are a helpful math assistant.') and p.endswith('<｜Assistant｜>')
    ids = tk.encode(p, add_bos=True)  # what lmdeploy's processor does
    assert ids[0] == 151646 and ids[1] != 151646  # one BOS, not two
    p2 = ct.messages2prompt(chat_messages(r, '<think>\n'))
    assert p2.endswith('<｜Assistant｜><think>\n')
    assert tk.encode(p2, add_bos=True)[-2:] == [151648, 198]  # '<think>' is one token, then '\n'

# ---------------------------------------------------------------- the adapter on a stand-in pipeline
def req(i, n=40, text='q'):
    return SampleRequest(i, [{'role': 'user', 'content': text}], SamplingConfig(max_new_tokens=n), seed=1000 + i)

def drain(e, until=15.0):
    got, t0 = [], time.monotonic()
    while time.monotonic() - t0 < until:
        got += e.poll(0.05)
        st = e._call.stream
        if st.done.is_set() and not st.open: break
    return got

def engine(cfg=None, **fake):
    pipes = []
    def factory(c):
        pipes.append(FakePipeline(**fake)); return pipes[-1]
    e = LmdeployEngine(cfg or LmdeployConfig(backend='pytorch'), pipeline_factory=factory)
    return e, pipes

def test_sessions_seeds_and_messages_per_sample():
    seen = []
    def script(messages, seed):
        seen.append((messages, seed)); return ['a', 'b', 'c']
    e, pipes = engine(LmdeployConfig(backend='pytorch', assistant_prefix='<think>\n'), script=script)
    e.start([req(3), req(4)])
    got = drain(e)
    assert sorted(s for _, s in seen) == [1003, 1004]
    assert all(m[-1] == {'role': 'assistant', 'content': '<think>\n'} for m, _ in seen)
    assert {c.index: c.finish for c in got if c.finish} == {3: 'stop', 4: 'stop'}
    assert ''.join(c.text for c in got if c.index == 3) == 'abc'
    assert [c.tokens for c in got if c.index == 3] == [1, 2, 3]
    assert len({id(s.session) for s in e._call.samples}) == 2
    time.sleep(0.2)
    assert sorted(pipes[0].closed_sessions) == [s.session.session_id for s in e._call.samples]  # sessions closed at the end
    e.close()

def test_abort_routes_to_that_sessions_only_and_off_the_callers_thread():
    e, pipes = engine(step_s=0.003)
    e.start([req(i, 5000) for i in range(3)])
    got = []
    while not any(c.index == 1 for c in got): got += e.poll(0.05)
    calls = []
    sess = e._call.samples[1].session
    orig = sess.abort
    def spy():
        calls.append(threading.current_thread().name); orig()
    sess.abort = spy
    e.abort(1)
    got = []
    while not any(c.index == 1 and c.finish for c in got): got += e.poll(0.05)
    assert calls == ['lmdeploy-abort']
    assert pipes[0].abort_calls == [sess.session_id]
    fin = [c for c in got if c.finish]
    assert [(c.index, c.finish) for c in fin] == [(1, 'abort')]
    e.abort_all()
    got = drain(e)
    assert sorted((c.index, c.finish) for c in got if c.finish) == [(0, 'abort'), (2, 'abort')]
    st = e.abort_stats()
    assert st['n'] == 3 and st['tokens_after']['max'] is not None and st['seconds']['max'] < 5
    e.close()

def test_abort_twice_and_after_finish_are_harmless():
    e, pipes = engine()
    e.start([req(0, 3)])
    got = drain(e)
    e.abort(0); e.abort(0); e.abort(99)
    time.sleep(0.1)
    assert pipes[0].abort_calls == [] and [c.finish for c in got if c.finish] == ['length']
    e.close()

def test_queued_samples_beyond_max_batch_size():
    e, pipes = engine(LmdeployConfig(backend='pytorch', reabort_s=0.05), max_batch_size=2, step_s=0.002)
    e.start([req(0, 30), req(1, 30), req(2, 100_000), req(3, 100_000)])
    e.abort(2); e.abort(3)  # still queued: lmdeploy would ignore these aborts
    got = drain(e)
    fins = [(c.index, c.finish, c.tokens) for c in got if c.finish]
    assert fins[:2] == [(2, 'abort', 0), (3, 'abort', 0)]  # reported at once
    assert sorted(fins[2:]) == [(0, 'length', 30), (1, 'length', 30)]
    assert not [c for c in got if c.index in (2, 3) and c.text]  # their later output is dropped
    time.sleep(0.5)
    early = {r['index']: r for r in e.abort_log if r['early']}
    assert set(early) == {2, 3} and all(r['finish'] == 'abort' and r['tokens'] < 1000 for r in early.values())
    e.close()

def test_abort_while_pending_with_a_handle():
    e, pipes = engine(prefill_s=0.5)
    e.start([req(0, 100_000)])
    time.sleep(0.1)  # holds a handle, still in prefill: no output yet
    e.abort(0)
    got = drain(e)
    assert [(c.index, c.finish) for c in got] == [(0, 'abort')]
    time.sleep(0.3)
    assert pipes[0].abort_calls and not pipes[0]._active
    e.close()

def test_new_question_aborts_the_previous_one():
    e, pipes = engine(step_s=0.003)
    e.start([req(0, 100_000, 'old')])
    while not e.poll(0.05): pass
    old = e._call
    e.start([req(0, 10, 'new')])
    assert old.samples[0].abort_t is not None
    got = drain(e)
    assert [(c.index, c.finish, c.tokens) for c in got if c.finish] == [(0, 'length', 10)]
    time.sleep(0.3)
    old.stream.t.join(2)
    assert not old.stream.t.is_alive()  # the old stream ended (aborted); its chunks never reached the new question
    assert [r['finish'] for r in e.abort_log] == ['abort']
    e.close()

def test_engine_errors_become_error_chunks():
    class ErrorOne(FakePipeline):
        def _emit(self, r, text, fin):
            if r['idx'] == 1 and fin is None:
                r['cancel'] = True
                r['q'].put(SimpleNamespace(index=1, text='', generate_token_len=0, finish_reason='error',
                                           error_code='INTERNAL_ERROR', error_message='kaputt'))
                r['done'] = True
                return
            super()._emit(r, text, fin)
    e = LmdeployEngine(LmdeployConfig(backend='pytorch'), pipeline_factory=lambda c: ErrorOne())
    e.start([req(0, 5), req(1, 5)])
    got = drain(e, until=3)
    fins = {c.index: c for c in got if c.finish}
    assert fins[0].finish == 'length' and fins[1].finish == 'error' and 'kaputt' in fins[1].error

    class Raises(FakePipeline):
        def stream_infer(self, *a, **k): raise RuntimeError('CUDA error: an illegal memory access')
    e = LmdeployEngine(LmdeployConfig(backend='pytorch'), pipeline_factory=lambda c: Raises())
    e.start([req(0), req(1)])
    got = drain(e)
    assert [(c.index, c.finish) for c in got] == [(0, 'error'), (1, 'error')] and 'illegal memory' in got[0].error

def test_load_failure_reaches_the_solver_as_a_fallback():
    from aimo2_nb.solver import Solver
    def boom(c): raise RuntimeError('no GPU')
    e = LmdeployEngine(LmdeployConfig(backend='pytorch'), pipeline_factory=boom)
    cfg = RunConfig(); cfg.budget.n_questions = 1
    r = Solver(e, cfg).solve('What is 2+2?')
    assert r.reason == 'engine_error' and r.answer == cfg.vote.fallback

def test_backend_detection_and_fallback_policy(caplog):
    tm = type('TurboMind', (), {'__module__': 'lmdeploy.turbomind.turbomind'})
    pt = type('Engine', (), {'__module__': 'lmdeploy.pytorch.engine.engine'})
    assert running_backend(SimpleNamespace(async_engine=SimpleNamespace(engine=tm(), backend='pytorch'))) == 'turbomind'
    assert running_backend(SimpleNamespace(async_engine=SimpleNamespace(engine=pt(), backend='turbomind'))) == 'pytorch'
    ok = lambda m: TurbomindProbe(True)
    e = LmdeployEngine(LmdeployConfig(backend='turbomind'), pipeline_factory=lambda c: FakePipeline(), turbomind_probe=ok)
    with caplog.at_level('WARNING', logger='aimo2_nb.engines.lmdeploy'): e.load()  # lmdeploy disagreed with the probe
    assert 'built turbomind, running pytorch' in caplog.text
    assert e.backend == 'pytorch'
    e = LmdeployEngine(LmdeployConfig(backend='turbomind', require_backend=True), pipeline_factory=lambda c: FakePipeline(), turbomind_probe=ok)
    with pytest.raises(RuntimeError, match='require_backend'): e.load()
    e = LmdeployEngine(LmdeployConfig(backend='turbomind', require_backend=True), pipeline_factory=lambda c: FakePipeline(),
                       turbomind_probe=lambda m: TurbomindProbe(False, 'not built'))
    with pytest.raises(RuntimeError, match='require_backend is set and TurboMind is unavailable: not built'): e.load()

def test_solver_end_to_end_on_gibberish():
    "Random-weight text: no answers; every question ends at its limit with the fallback, all samples aborted."
    from aimo2_nb.solver import Solver
    cfg = RunConfig()
    cfg.speed = SpeedConfig([Tier(3, 6, 2.0, 6)], adaptive=False)
    b = cfg.budget
    b.total_s, b.reserve_s, b.n_questions, b.drain_s, b.min_question_s = 30.0, 0.0, 3, 1.0, 0.0
    e, pipes = engine(step_s=0.002)
    s = Solver(e, cfg)
    for q in range(3):
        r = s.solve(f'question {q}', f'q{q}')
        assert r.reason == 'timeout' and r.answer == cfg.vote.fallback
        assert r.elapsed <= r.plan.limit_s + 0.3, (r.elapsed, r.plan.limit_s)
        assert all(x['finish'] == 'abort' for x in r.samples), r.samples
        assert r.tokens > 0
    assert e.abort_stats()['n'] >= 18
    e.close()
