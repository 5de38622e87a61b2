"""The transformers engine on a tiny random Qwen2 model built here: streaming equals `generate`, seeds, stops, aborts,
errors as data, settings, and the solver end to end (on a tiny model trained here to box an answer).

Needs torch and transformers (CI installs them through .ci/extra-install): skipped without them, except under CI=true,
where their absence is a failure. No test downloads anything. About 20 s on two cores.
"""
from __future__ import annotations
import dataclasses, importlib.util, json, os, random, time
from pathlib import Path

import pytest
from engine_helpers import drain as _drain, text_of, end_of

_HAVE = all(importlib.util.find_spec(m) is not None for m in ('torch', 'transformers', 'tokenizers'))
if not _HAVE:
    if os.environ.get('CI', '').lower() == 'true':
        raise ImportError('tests/test_engine_hf.py: torch, transformers and tokenizers must be installed in CI '
                          '(.ci/extra-install: torch==2.13.0 transformers==5.24.0)')
    pytest.skip('torch / transformers not installed: pip install torch==2.13.0 transformers==5.24.0',
                allow_module_level=True)

import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from aimo2_nb.config import SamplingConfig, profile
from aimo2_nb.core import ConfigError
from aimo2_nb.engines.base import Engine, SampleRequest
from aimo2_nb.engines.hf import Detok, HFEngine, tiny_model

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

MSGS = [{'role': 'user', 'content': 'What is 17*23? Think step by step.'}]
SAMP = dict(temperature=0.8, top_p=0.95, top_k=0, min_p=0.05, repetition_penalty=1.05)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp('hf') / 'tiny', seed=0, n_ctx=256)


@pytest.fixture(scope='module')
def eng(tiny):
    e = HFEngine(tiny, dtype='float32', n_threads=2).load()
    yield e
    e.close()


@pytest.fixture(scope='module')
def tok(tiny):
    return AutoTokenizer.from_pretrained(tiny, local_files_only=True)


def req(i: int, n: int = 40, seed: int | None = None, messages=MSGS, **kw) -> SampleRequest:
    return SampleRequest(i, messages, SamplingConfig(max_new_tokens=n, **{**SAMP, **kw}), seed=i + 1 if seed is None else seed)


def drain(eng, indices, until: float = 60.0, on_chunk=None):
    return _drain(eng, indices, until, on_chunk)


def reference(eng, messages, seed, n, **kw) -> list[int]:
    "The new tokens of a non-streamed `generate` with the same settings and seed (EOS included if reached)."
    s = {**SAMP, **kw}
    x = torch.tensor([eng._prompt(messages)])
    torch.manual_seed(seed)
    with eng._exclusive:
        out = eng._lm.generate(x, attention_mask=torch.ones_like(x), do_sample=s['temperature'] > 0,
                               temperature=s['temperature'] or None, top_p=s['top_p'], top_k=s['top_k'],
                               min_p=s['min_p'], repetition_penalty=s['repetition_penalty'], max_new_tokens=n,
                               eos_token_id=sorted(eng.stop_ids), pad_token_id=eng._tok.pad_token_id)
    return out[0, x.shape[1]:].tolist()


# ---------------------------------------------------------------- streaming equals generate

def test_is_an_engine(eng):
    assert isinstance(eng, Engine)


@pytest.mark.parametrize('kw', [{}, {'temperature': 1.0, 'top_k': 20, 'min_p': 0.0}, {'temperature': 0.0},
                                {'temperature': 0.0, 'repetition_penalty': 1.0}])
def test_stream_matches_generate(eng, tok, kw):
    seeds = [3, 11, 12345678901]  # a seed beyond 32 bits works too
    eng.start([req(i, n=60, seed=sd, **kw) for i, sd in enumerate(seeds)])
    got = drain(eng, range(len(seeds)))
    for i, sd in enumerate(seeds):
        ref = reference(eng, MSGS, sd, 60, **kw)
        end, chunks = end_of(got, i), [c for c in got if c.index == i]
        assert chunks[-1] is end  # nothing after the finish
        assert [c.tokens for c in chunks] == list(range(1, len(chunks) + 1))  # one chunk per token, cumulative
        assert end.tokens == len(ref)
        stopped = ref[-1] in eng.stop_ids
        assert end.finish == ('stop' if stopped else 'length')
        assert text_of(got, i) == tok.decode(ref[:-1] if stopped else ref, skip_special_tokens=True)


def test_seeds_make_samples(eng):
    eng.start([req(0, seed=5), req(1, seed=6), req(2, seed=5)])
    got = drain(eng, range(3))
    assert text_of(got, 0) == text_of(got, 2) and text_of(got, 0)
    assert text_of(got, 0) != text_of(got, 1)


def test_stop_at_an_eos_token(tiny, tok):
    "Whatever the engine counts as EOS ends the sample 'stop', counted, and out of the text."
    e = HFEngine(tiny, dtype='float32').load()
    ids = reference(e, MSGS, 0, 20, temperature=0.0)
    k = ids.index(ids[6])  # the first occurrence of the 7th greedy token
    e.stop_ids = {ids[6]}
    e.start([req(0, n=20, temperature=0.0)])
    got = drain(e, [0])
    end = end_of(got, 0)
    assert (end.finish, end.tokens) == ('stop', k + 1)
    assert text_of(got, 0) == tok.decode(ids[:k], skip_special_tokens=True)
    e.close()


def test_length_at_the_context_window(tiny, tok):
    e = HFEngine(tiny, dtype='float32', n_ctx=64).load()
    n_prompt = len(e._prompt(MSGS))
    e.start([req(0, n=1000, temperature=0.0, repetition_penalty=1.0)])
    end = end_of(drain(e, [0]), 0)
    if end.finish == 'length': assert end.tokens == 64 - n_prompt
    else: assert end.finish == 'stop' and end.tokens <= 64 - n_prompt
    e.close()


def test_default_bfloat16_runs(tiny):
    e = HFEngine(tiny)
    assert e.dtype == 'bfloat16'
    e.start([req(0, n=8)])
    end = end_of(drain(e, [0]), 0)
    assert end.finish in ('stop', 'length') and 0 < end.tokens <= 8
    assert next(e._lm.parameters()).dtype == torch.bfloat16
    e.close()


def test_detok_deltas_equal_the_full_decode(tok):
    rng = random.Random(0)
    specials = [tok.convert_tokens_to_ids(t) for t in ('<|im_start|>', '<|endoftext|>')]
    texts = ['héllo wörld → ∑ 日本語 🙂', 'plain ascii', '']
    seqs = [tok(t, add_special_tokens=False).input_ids for t in texts]
    seqs += [[rng.choice(range(256)) if rng.random() > 0.05 else rng.choice(specials) for _ in range(rng.randint(1, 80))]
             for _ in range(200)]  # random bytes: invalid UTF-8, split characters, special tokens
    for ids in seqs:
        d = Detok(tok)
        parts = [d.add(t) for t in ids] + [d.flush()]
        assert ''.join(parts) == tok.decode(ids, skip_special_tokens=True), ids
        assert not any(p.endswith('\ufffd') for p in parts[:-1] if p)  # incomplete characters are held back
    assert Detok(tok).add(tok('é', add_special_tokens=False).input_ids[0]) == ''


# ---------------------------------------------------------------- aborts, replacement, errors

def test_abort_running_sample_within_one_token_and_the_next_runs(eng):
    forwards, at = [0], {}
    hook = eng._lm.register_forward_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))  # one pass per token
    def on_chunk(c, got):
        if c.index == 0 and c.tokens >= 3 and not at:
            eng.abort(0)
            at['forwards'] = forwards[0]  # read after the abort: the worker had made at most this many tokens
    try:
        eng.start([req(0, n=250, repetition_penalty=1.0, temperature=0.0), req(1, n=10)])
        got = drain(eng, [0, 1], on_chunk=on_chunk)
    finally: hook.remove()
    e0, e1 = end_of(got, 0), end_of(got, 1)
    assert e0.finish == 'abort' and e0.tokens <= at['forwards'] + 1 and e0.tokens < 250, (e0, at)
    assert e1.finish in ('stop', 'length') and e1.tokens > 0


def test_abort_all_queued_samples_never_start(eng, monkeypatch):
    started = []
    prompt = HFEngine._prompt
    monkeypatch.setattr(eng, '_prompt', lambda messages: started.append(messages) or prompt(eng, messages))
    t = {}
    def on_chunk(c, got):
        if not t and c.index == 0 and c.tokens >= 1:
            t['abort'] = time.monotonic(); eng.abort_all()
    eng.start([req(i, n=200) for i in range(4)])
    got = drain(eng, range(4), on_chunk=on_chunk)
    assert time.monotonic() - t['abort'] < 2.0
    assert all(end_of(got, i).finish == 'abort' for i in range(4))
    for i in (1, 2, 3): assert [(c.text, c.tokens, c.finish) for c in got if c.index == i] == [('', 0, 'abort')]
    assert len(started) == 1


def test_start_replaces_the_previous_question(eng):
    eng.start([req(0, n=200)])
    while not eng.poll(0.05): pass
    eng.start([req(10, n=5, temperature=0.0, repetition_penalty=1.0), req(11, n=5)])
    got = drain(eng, [10, 11])
    assert {c.index for c in got} == {10, 11}
    assert all(end_of(got, i).finish in ('stop', 'length') for i in (10, 11))


def test_prompt_too_long_is_an_error_and_the_next_sample_runs(eng):
    eng.start([req(0, messages=[{'role': 'user', 'content': 'x' * 400}]), req(1, n=5)])
    got = drain(eng, [0, 1])
    e0 = end_of(got, 0)
    assert e0.finish == 'error' and 'context window is 256 tokens' in e0.error
    assert end_of(got, 1).finish in ('stop', 'length')


@pytest.mark.parametrize('breakage', ['bad_config', 'no_weights', 'no_template'])
def test_broken_model_folder_gives_error_chunks(tiny, tmp_path, breakage):
    import shutil
    d = tmp_path / 'broken'; shutil.copytree(tiny, d)
    if breakage == 'bad_config': (d / 'config.json').write_text('{"model_type": ')
    if breakage == 'no_weights': (d / 'model.safetensors').unlink()
    if breakage == 'no_template':
        (d / 'chat_template.jinja').unlink(missing_ok=True)
        cfg = json.loads((d / 'tokenizer_config.json').read_text()); cfg.pop('chat_template', None)
        (d / 'tokenizer_config.json').write_text(json.dumps(cfg))
    e = HFEngine(d, dtype='float32')
    e.start([req(0), req(1)])
    got = drain(e, [0, 1], until=30)
    assert [(c.index, c.finish) for c in got] == [(0, 'error'), (1, 'error')]
    assert all(c.error for c in got)
    if breakage == 'no_template': assert 'no chat template' in got[0].error
    e.close()


def test_poll_honours_timeout_when_idle(tiny):
    e = HFEngine(tiny)
    t0 = time.monotonic()
    assert e.poll(0.2) == []
    assert 0.15 <= time.monotonic() - t0 < 1.0


# ---------------------------------------------------------------- settings

def test_from_settings_validates(tiny):
    e = HFEngine.from_settings({'kind': 'hf', 'model': str(tiny), 'dtype': 'float32', 'n_threads': 1, 'n_ctx': 128})
    assert (e.dtype, e.n_threads, e.n_ctx_cap, e.device) == ('float32', 1, 128, 'cpu')
    bad = [({'model': str(tiny), 'temperature': 1}, 'engine.temperature: expected a known setting'),
           ({}, 'engine.model: expected a Hugging Face model folder'),
           ({'model': str(tiny / 'nope')}, 'engine.model: expected an existing local model folder'),
           ({'model': str(tiny), 'dtype': 'int4'}, "engine.dtype: expected one of 'bfloat16', 'float16', 'float32', 'auto', got 'int4'"),
           ({'model': str(tiny), 'n_threads': 0}, 'engine.n_threads'),
           ({'model': str(tiny), 'batch': 2}, 'engine.batch'),
           ({'model': str(tiny), 'device': 'tpu'}, 'engine.device'),
           ({'model': str(tiny), 'n_ctx': 'big'}, 'engine.n_ctx'),
           ({'model': str(tiny), 'allow_download': 'yes'}, 'engine.allow_download')]
    for settings, msg in bad:
        with pytest.raises(ConfigError, match=msg.replace('(', r'\(').replace(')', r'\)')): HFEngine.from_settings(settings)
    assert HFEngine.from_settings({'model': 'org/model', 'allow_download': True}).model == 'org/model'


def test_registered_with_the_loader(tiny):
    from aimo2_nb.engines.base import ENGINE_KINDS, load_engine
    if 'hf' not in ENGINE_KINDS: pytest.skip("engine kind 'hf' is not registered in ENGINE_KINDS yet")
    assert isinstance(load_engine({'kind': 'hf', 'model': str(tiny)}), HFEngine)


# ---------------------------------------------------------------- the solver end to end

def train_to_answer(path: Path, prompts: list[list[int]], answer: list[int], steps: int = 150) -> None:
    "Teach the tiny model at `path` to reply `answer` to each prompt (a few seconds of Adam), and save it."
    from transformers import AutoModelForCausalLM
    lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    seqs = [torch.tensor([p + answer]) for p in prompts]
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    torch.manual_seed(0)
    lm.train()
    for step in range(steps):
        for p, x in zip(prompts, seqs):
            labels = x.clone(); labels[0, :len(p)] = -100
            loss = lm(input_ids=x, labels=labels).loss
            opt.zero_grad(); loss.backward(); opt.step()
        if loss.item() < 0.01: break
    lm.save_pretrained(path)


def test_solver_end_to_end(tmp_path):
    from aimo2_nb.prompts import messages
    from aimo2_nb.solver import Solver
    question = 'What is 17*23?'
    cfg = profile('cpu', samples=2, max_new_tokens=40, question_s=60)
    path = tiny_model(tmp_path / 'taught', n_ctx=1024)
    e = HFEngine(path, dtype='float32').load()
    prompts = [e._prompt(messages(spec, question)) for spec in cfg.prompts.list]
    train_to_answer(path, prompts, e._tok('The answer is \\boxed{391}.<|im_end|>', add_special_tokens=False).input_ids)
    e.close()
    cfg.engine = {'kind': 'hf', 'model': str(path), 'dtype': 'float32'}
    eng = HFEngine.from_settings(cfg.engine)
    try:
        res = Solver(eng, cfg, trace_path=tmp_path / 't.jsonl').solve(question, 'hf', 391)
    finally:
        eng.close()
    assert isinstance(res.answer, int) and 0 <= res.answer < cfg.answers.modulus
    assert res.answer == 391, (res.reason, res.samples)
    assert res.tokens > 0 and all(s['tokens'] > 0 for s in res.samples)
    assert {s['stop'] for s in res.samples} == {'cot_boxed', 'code_boxed_no_code'}  # both samples boxed 391 themselves


# ---------------------------------------------------------------- log-probabilities and TIR turns

def test_logprobs_are_the_models_own(eng):
    "With `sampling.logprobs`, each chunk carries its token's log-probability: equal to a teacher-forced forward pass."
    eng.start([req(0, n=12, temperature=0.0, logprobs=1)])
    got = [c for c in drain(eng, [0]) if c.index == 0]
    lps = [lp for c in got for lp in c.logprobs]
    ids = reference(eng, MSGS, 1, 12, temperature=0.0)
    assert len(lps) == len(ids) == got[-1].tokens
    x = torch.tensor([eng._prompt(MSGS) + ids])
    with torch.inference_mode(), eng._exclusive:
        logits = eng._lm(input_ids=x).logits[0].float()
    want = torch.log_softmax(logits, -1)[len(x[0]) - len(ids) - 1:-1].gather(1, torch.tensor(ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(lps), want, atol=1e-3)
    eng.start([req(1, n=5)])
    assert all(c.logprobs == () for c in drain(eng, [1]))  # off unless asked


def test_a_tir_turn_continues_from_the_plain_prefix(eng):
    "A continued turn is the prompt plus its text so far: the same tokens as a fresh sample whose prompt ends with that text."
    prefix = 'The answer is'
    eng.start([dataclasses.replace(req(0, n=8, temperature=0.0), prefix=prefix)])
    text = text_of(drain(eng, [0]), 0)
    ids = eng._prompt(MSGS) + eng._tok(prefix, add_special_tokens=False)['input_ids']
    with eng._exclusive:
        out = eng._lm.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
                               max_new_tokens=8, eos_token_id=sorted(eng.stop_ids), pad_token_id=eng._tok.pad_token_id,
                               repetition_penalty=SAMP['repetition_penalty'])
    new = out[0, len(ids):].tolist()
    assert text == eng._tok.decode([t for t in new if t not in eng.stop_ids], skip_special_tokens=True)
