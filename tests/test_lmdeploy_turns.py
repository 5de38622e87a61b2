"""TIR turns on the lmdeploy engine (issue 16, /work/TIR.md section 1): `pause`/`resume` with token identity, on the
stand-in pipeline (tests/doubles/fake_lmdeploy.py: one id per generated word, one id per character for encoded text,
optional held-back text), plus the two facts that need the real lmdeploy 0.18 on CPU: our prompt-ids call is what
`AsyncEngine.preprocess` does, and the checkpoints of lmdeploy's own incremental detokenizer cut at token boundaries
(R1 tokenizer)."""
from __future__ import annotations
import dataclasses, json, lzma, random, threading, time
from pathlib import Path
from types import SimpleNamespace
import pytest
from aimo2_nb.config import SamplingConfig
from aimo2_nb.core import ConfigError
from aimo2_nb.engines.base import Chunk, SampleRequest
from aimo2_nb.engines.lmdeploy import LmdeployConfig, LmdeployEngine, TurnTokens, chat_messages, turn_seed
from doubles.fake_lmdeploy import FakePipeline, char_ids

ROOT = Path(__file__).resolve().parents[1]
OUT = '\n```output\n42\n```\n'


def req(i, n=400, text='q', seed=None):
    return SampleRequest(i, [{'role': 'user', 'content': text}], SamplingConfig(max_new_tokens=n), seed=1000 + i if seed is None else seed)


def engine(cfg=None, **fake):
    pipes = []
    def factory(c):
        pipes.append(FakePipeline(**fake)); return pipes[-1]
    return LmdeployEngine(cfg or LmdeployConfig(backend='pytorch'), pipeline_factory=factory), pipes


class Recorder:
    "Every chunk put on the question's stream, in order, with a sequence number (to see what came after a pause)."
    def __init__(self, e):
        self.e, self.log, self.got = e, [], []
        st = e._call.stream
        orig = st.put
        def put(ch):
            self.log.append(ch); orig(ch)
        st.put = put

    def poll_until(self, pred, limit=20.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            self.got += self.e.poll(0.02)
            if pred(self.got): return self.got
        raise AssertionError(f'timed out; got {self.got[-5:]}')

    def text(self, i): return ''.join(c.text for c in self.got if c.index == i)
    def fin(self, i): return next((c for c in self.got if c.index == i and c.finish), None)


def wait(pred, limit=10.0):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < limit, 'timed out'
        time.sleep(0.01)



def started(e, reqs, chars: int, indices=(0,)) -> Recorder:
    "Start `reqs` on `e` and poll until each sample of `indices` has streamed `chars` characters; the recorder."
    e.start(reqs)
    rec = Recorder(e)
    rec.poll_until(lambda g: all(len(rec.text(i)) >= chars for i in indices))
    return rec

def stream_ended(e, limit=10.0):
    st = e._call.stream
    extra = []
    t0 = time.monotonic()
    while not (st.done.is_set() and not st.open):
        assert time.monotonic() - t0 < limit, f'stream still open: {st.open}'
        extra += e.poll(0.02)
    return extra


# ---------------------------------------------------------------- the pure bookkeeping
def test_turn_tokens_cut_at_checkpoints():
    enc = lambda s: [ord(c) for c in s]
    t = TurnTokens()
    t.add([1, 2], 'ab'); t.add([3], ''); t.add([4], 'cd')  # the text of 3 was held back, then came with 4
    assert t.resume(3, 'X', enc) == [1, 2] + enc('cX')  # no checkpoint between 2 and 4: 'c' is re-encoded
    assert t.text == 'abcX' and t.appended == 2
    t.add([7], 'ef')
    assert t.resume(6, '', enc) == [1, 2] + enc('cX') + [7]
    assert t.resume(0, 'Z', enc) == enc('Z') and t.text == 'Z'
    with pytest.raises(ConfigError, match='resume keep'): t.resume(2, '', enc)
    assert [turn_seed(5, k) for k in range(3)] == [5, 6, 7]


# ---------------------------------------------------------------- pause and resume on the stand-in pipeline
def test_continuation_is_prompt_ids_kept_generated_ids_and_encoded_rest():
    e, pipes = engine(step_s=0.002, hold_every=3)
    rec = started(e, [req(0, 400)], 30)
    e.pause(0)
    s = e._call.samples[0]
    text, words = s.words.text, s.words.runs[0]
    keep = len(text) - 2  # two characters before the end: inside the last chunk
    e.resume(0, keep, OUT)
    rec.poll_until(lambda g: len(e.turn_log) == 1 and len(pipes[0].inputs) == 2)
    pipe = pipes[0]
    t, c = max(m for m in words.marks if m[1] <= keep)
    want = pipe.prompt_input(e._call.prompts[0]) + words.ids[:t] + char_ids(text[c:keep] + OUT)
    assert pipe.inputs[1][1] == want
    assert pipe.inputs[1][1][:len(pipe.inputs[0][1])] == pipe.inputs[0][1]  # the first turn's prompt ids, unchanged
    assert words.ids[:t] == [pipe.token_id(w) for w in pipe_words(pipe, 0)][:t]  # the ids lmdeploy generated
    assert pipe.prompt_calls == [e._call.prompts[0]]
    log = e.turn_log[0]
    assert (log['turn'], log['prompt_tokens'], log['appended']) == (1, len(want), len(text[c:keep] + OUT))
    assert log['reused'] == len(pipe.inputs[0][1]) + t
    e.close()


def pipe_words(pipe, k):
    "The token strings of the k-th request's generated ids (inverse of the fake's vocabulary)."
    inv = {v: w for w, v in pipe._vocab.items()}
    seq = next(s for s in pipe._seqs if s[:len(pipe.inputs[k][1])] == pipe.inputs[k][1])
    return [inv[i] for i in seq[len(pipe.inputs[k][1]):]]


def test_pause_while_tokens_stream_forwards_nothing_and_counts_them():
    e, pipes = engine(step_s=0.002, abort_delay_s=0.3)  # the abort lands late: the paused turn keeps decoding
    rec = started(e, [req(0, 2000), req(1, 300)], 10)
    e.pause(0)
    n_at_pause = len(rec.log)
    tokens_at_pause = e._call.samples[0].tokens
    rec.poll_until(lambda g: rec.fin(1) is not None)
    wait(lambda: e._call.samples[0].drained)
    assert not [c for c in rec.log[n_at_pause:] if c.index == 0]  # nothing of sample 0 after the pause
    assert e._call.samples[0].tokens > tokens_at_pause  # decoded after the pause: counted
    e.resume(0, len(e._call.samples[0].words.text), OUT)
    rec.poll_until(lambda g: any(c.index == 0 and c.text for c in rec.log[n_at_pause:]))
    first = next(c for c in rec.log[n_at_pause:] if c.index == 0)
    assert first.tokens == e._call.samples[0].base + 1 and first.tokens > tokens_at_pause + 1  # cumulative
    e.abort(0)
    rec.poll_until(lambda g: rec.fin(0) is not None)
    assert rec.fin(0).finish == 'abort'
    stream_ended(e)
    e.close()


def test_resume_before_the_paused_turn_drained_waits_when_asked():
    e, pipes = engine(LmdeployConfig(backend='pytorch', resume_at_once=False), step_s=0.002, abort_delay_s=0.2)
    rec = started(e, [req(0, 600)], 10)
    e.pause(0)
    e.resume(0, len(rec.text(0)), OUT)  # the abort has not even landed
    s = e._call.samples[0]
    assert s.pending is not None and not s.drained and len(pipes[0].inputs) == 1
    rec.poll_until(lambda g: rec.fin(0) is not None)
    assert rec.fin(0).finish == 'length' and rec.fin(0).tokens == 600
    assert len(pipes[0].inputs) == 2 and e.turn_log[0]['resume_wait_s'] > 0
    assert pipes[0].abort_calls  # the first turn was aborted before the continuation started
    toks = [c.tokens for c in rec.got if c.index == 0]
    assert toks == sorted(toks)  # cumulative over the turns
    stream_ended(e)
    e.close()


def test_resume_at_once_counts_the_paused_turns_late_tokens_and_forwards_none():
    "The default: the continuation starts at `resume`; the paused turn, still decoding until its abort lands, only adds tokens."
    e, pipes = engine(step_s=0.002, abort_delay_s=0.3)
    rec = started(e, [req(0, 600)], 10)
    e.pause(0)
    n, keep = len(rec.log), len(rec.text(0))
    e.resume(0, keep, OUT)  # the abort has not landed: the first turn still decodes
    wait(lambda: len(pipes[0].inputs) == 2)  # the continuation started before the drain
    s = e._call.samples[0]
    assert e.turn_log[0]['resume_wait_s'] < 0.2
    rec.poll_until(lambda g: rec.fin(0) is not None)
    wait(lambda: not s.old)  # the first turn's abort landed meanwhile and its late tokens were counted
    fin = rec.fin(0)
    first_in = pipes[0].inputs[0][1]
    first = next(len(q) - len(first_in) for q in pipes[0]._seqs if q[:len(first_in)] == first_in)  # all the first turn decoded
    assert fin.finish == 'length' and fin.tokens == first + pipes[0].gens[1].max_new_tokens  # exact: late tokens included
    assert first > e.turn_log[0]['tokens_at_pause']  # the first turn went on decoding after the pause
    text0 = ''.join(c.text for c in rec.log[n:] if c.index == 0)
    assert pipes[0].inputs[1][1][-len(char_ids(OUT)):] == char_ids(OUT)  # the continuation's ids end with the output block
    toks = [c.tokens for c in rec.got if c.index == 0]
    assert toks == sorted(toks) and text0  # cumulative; the new turn's text only
    stream_ended(e)
    e.close()


def test_abort_while_paused_ends_at_once():
    e, pipes = engine(step_s=0.002, abort_delay_s=0.3)
    rec = started(e, [req(0, 5000), req(1, 5000), req(2, 60)], 5, (0, 1))
    e.pause(0); e.pause(1)
    wait(lambda: e._call.samples[1].drained, 5)  # sample 1 waits for its code; sample 0 may still drain
    n = len(rec.log)
    e.abort(1)
    assert Chunk(1, '', e._call.samples[1].tokens, 'abort') in rec.log[n:]  # at once, cumulative tokens
    e.abort(0)
    assert [c.finish for c in rec.log[n:] if c.index == 0] == ['abort']
    with pytest.raises(ConfigError, match='a paused sample'): e.resume(1, 0, OUT)
    rec.poll_until(lambda g: rec.fin(2) is not None)
    stream_ended(e)
    assert len(pipes[0].inputs) == 3  # no continuation was started
    assert {r['index'] for r in e.abort_log} >= {1} and all(r['early'] for r in e.abort_log if r['index'] in (0, 1))
    e.close()


def test_abort_of_a_resumed_sample_before_its_continuation_started():
    e, pipes = engine(LmdeployConfig(backend='pytorch', resume_at_once=False), step_s=0.002, abort_delay_s=0.3)
    rec = started(e, [req(0, 5000)], 5)
    e.pause(0); e.resume(0, 3, OUT); e.abort(0)  # the resume waits for the drain; the abort ends it now
    assert rec.log[-1].finish == 'abort'
    stream_ended(e)
    time.sleep(0.4)
    assert len(pipes[0].inputs) == 1 and not e.turn_log
    e.close()


def test_abort_during_a_continuation():
    e, pipes = engine(step_s=0.002)
    rec = started(e, [req(0, 5000), req(1, 5000)], 5)
    e.pause(0)
    wait(lambda: e._call.samples[0].drained)
    e.resume(0, len(rec.text(0)), OUT)
    mark = len(rec.log)
    rec.poll_until(lambda g: sum(1 for c in rec.log[mark:] if c.index == 0 and c.text) >= 5)
    s = e._call.samples[0]
    sess = s.session
    assert sess is not e._call.first_sessions[0] and s.turn == 1
    e.abort(0)
    rec.poll_until(lambda g: rec.fin(0) is not None)
    f = rec.fin(0)
    assert f.finish == 'abort' and f.tokens >= s.base + 5
    assert sess.session_id in pipes[0].abort_calls
    r = [x for x in e.abort_log if x['index'] == 0][-1]
    assert not r['early'] and r['tokens'] == f.tokens
    e.abort_all()
    rec.poll_until(lambda g: rec.fin(1) is not None)
    stream_ended(e)
    time.sleep(0.1)
    assert sess.session_id in pipes[0].closed_sessions  # the continuation's session is closed at its end
    e.close()


def test_a_queued_continuation_is_aborted_at_once():
    e, pipes = engine(LmdeployConfig(backend='pytorch', reabort_s=0.02), step_s=0.002, max_batch_size=1)
    rec = started(e, [req(0, 5000), req(1, 5000)], 5)  # sample 1 waits behind sample 0
    e.pause(0)
    wait(lambda: e._call.samples[0].drained)  # sample 1 now holds the only slot
    e.resume(0, len(rec.text(0)), OUT)
    wait(lambda: e._call.samples[0].turn == 1)
    assert e._call.samples[0].state == 'queued'
    n = len(rec.log)
    e.abort(0)
    assert [c.finish for c in rec.log[n:] if c.index == 0] == ['abort']
    e.abort(1)
    stream_ended(e)
    e.close()


def test_tokens_and_max_new_tokens_across_turns():
    e, pipes = engine(step_s=0.002)
    e.start([req(0, 150)])
    rec = Recorder(e)
    mark = 0
    for k in range(3):  # three tool calls, each after a few tokens of a new turn
        rec.poll_until(lambda g: sum(1 for c in rec.log[mark:] if c.index == 0 and c.text) >= 8)
        e.pause(0)
        wait(lambda: e._call.samples[0].drained)
        e.resume(0, e._call.samples[0].words.chars, f'\n```output\n{k}\n```\n')
        wait(lambda: e._call.samples[0].turn == k + 1)
        mark = len(rec.log)
    rec.poll_until(lambda g: rec.fin(0) is not None)
    assert (rec.fin(0).finish, rec.fin(0).tokens) == ('length', 150)
    toks = [c.tokens for c in rec.got if c.index == 0]
    assert toks == sorted(toks) and toks[-1] == 150
    gens = [g for g in pipes[0].gens]
    assert [g.max_new_tokens for g in gens] == [150] + [150 - t['tokens_at_pause'] - t['after_pause'] for t in e.turn_log]
    assert [g.random_seed for g in gens] == [1000, 1001, 1002, 1003]
    stream_ended(e)
    e.close()


def test_resume_with_no_tokens_left_finishes_length():
    e, pipes = engine(step_s=0.002, abort_delay_s=0.5)
    rec = started(e, [req(0, 12)], 2)
    e.pause(0)  # the late abort lets the turn reach its 12 tokens: it ends 'length' internally
    wait(lambda: e._call.samples[0].drained)
    assert e._call.samples[0].tokens == 12
    e.resume(0, 1, OUT)
    rec.poll_until(lambda g: rec.fin(0) is not None)
    assert (rec.fin(0).finish, rec.fin(0).tokens) == ('length', 12) and len(pipes[0].inputs) == 1
    stream_ended(e)
    e.close()


def test_prompt_ids_once_per_distinct_prompt_and_turns_independent():
    e, pipes = engine(step_s=0.002)
    e.start([req(0, 300, 'a'), req(1, 300, 'a'), req(2, 300, 'bb'), req(3, 300, 'bb')])
    rec = Recorder(e)
    for i in range(4):
        rec.poll_until(lambda g: len(rec.text(i)) >= 3)
        e.pause(i)
    for i in (2, 0, 3, 1):  # resumed in any order, each when its own code is done
        wait(lambda: e._call.samples[i].drained)
        e.resume(i, e._call.samples[i].words.chars, OUT)
    rec.poll_until(lambda g: all(rec.fin(i) for i in range(4)))
    assert sorted(map(json.dumps, pipes[0].prompt_calls)) == sorted(json.dumps(chat_messages(req(i, text=t))) for i, t in ((0, 'a'), (2, 'bb')))
    assert all(rec.fin(i).finish == 'length' and rec.fin(i).tokens == 300 for i in range(4))
    stream_ended(e)
    e.close()


def test_a_question_without_turns_is_unchanged():
    e, pipes = engine(step_s=0.002)
    e.start([req(0, 30), req(1, 30)])
    rec = Recorder(e)
    rec.poll_until(lambda g: rec.fin(0) and rec.fin(1))
    stream_ended(e)
    pipe = pipes[0]
    assert len(pipe.inputs) == 2 and not pipe.prompt_calls and not e.turn_log
    assert [(c.index, c.tokens) for c in rec.got if c.index == 0] == [(0, k) for k in range(1, 31)]
    assert (rec.fin(0).finish, rec.fin(0).tokens) == ('length', 30)
    e.pause(0); e.abort(0)  # after its end: nothing happens
    assert len(rec.log) == 60
    e.close()


def test_pause_and_resume_misuse():
    e, pipes = engine(step_s=0.002)
    with pytest.raises(ConfigError, match='resume'): e.resume(0, 0, '')
    rec = started(e, [req(0, 5000)], 3)
    with pytest.raises(ConfigError, match='a paused sample'): e.resume(0, 0, OUT)
    e.pause(0); e.pause(0); e.pause(7)  # twice, and an unknown sample: harmless
    with pytest.raises(ConfigError, match=r'resume\(0\).keep'): e.resume(0, 10_000, OUT)
    e.resume(0, 0, OUT)
    with pytest.raises(ConfigError, match='a paused sample'): e.resume(0, 0, OUT)
    rec.poll_until(lambda g: sum(1 for c in rec.log if c.index == 0 and c.tokens > e._call.samples[0].base) >= 2)
    e.abort_all()
    stream_ended(e)
    e.close()


def test_a_failed_continuation_is_an_error_of_that_sample():
    class NoIds(FakePipeline):
        def _infer(self, *a, **k): raise RuntimeError('engine gone')
    e = LmdeployEngine(LmdeployConfig(backend='pytorch'), pipeline_factory=lambda c: NoIds(step_s=0.002))
    rec = started(e, [req(0, 5000), req(1, 40)], 3)
    e.pause(0)
    wait(lambda: e._call.samples[0].drained)
    e.resume(0, 1, OUT)
    rec.poll_until(lambda g: rec.fin(0) and rec.fin(1))
    assert rec.fin(0).finish == 'error' and 'engine gone' in rec.fin(0).error and rec.fin(1).finish == 'length'
    stream_ended(e)
    e.close()


def test_close_with_paused_and_continuing_samples_leaves_no_thread():
    before = set(threading.enumerate())
    e, pipes = engine(step_s=0.002)
    started(e, [req(i, 100_000) for i in range(4)], 3, range(4))
    for i in range(3): e.pause(i)
    wait(lambda: e._call.samples[1].drained)
    e.resume(1, 2, OUT)
    wait(lambda: e._call.samples[1].turn == 1)
    e.close()
    time.sleep(0.2)
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith(('lmdeploy-turn', 'lmdeploy-stream'))]


# ---------------------------------------------------------------- the real lmdeploy 0.18 on CPU (R1 tokenizer)
def r1_folder(tmp_path) -> Path:
    pytest.importorskip('lmdeploy.messages', reason='lmdeploy not installed (see bench/GPU.md, CPU CI)')
    fx = ROOT / 'tests' / 'fixtures' / 'r1-tokenizer'
    (tmp_path / 'tokenizer.json').write_bytes(lzma.decompress((fx / 'tokenizer.json.xz').read_bytes()))
    (tmp_path / 'tokenizer_config.json').write_bytes((fx / 'tokenizer_config.json').read_bytes())
    (tmp_path / 'config.json').write_text(json.dumps(dict(architectures=['Qwen2ForCausalLM'], model_type='qwen2',
        vocab_size=152064, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=4096, bos_token_id=151646, eos_token_id=151643)))
    return tmp_path


def test_first_turn_and_continuation_requests_through_lmdeploys_own_pipeline_code(tmp_path):
    """lmdeploy 0.18's real `Pipeline.stream_infer` / `_infer` / `_run` and `AsyncEngine.preprocess` (the R1 tokenizer and
    chat template; only the GPU engine behind `generate` is stubbed): the first turn's input ids are what our
    `prompt_ids` computes, and a continuation's request dict reaches the engine with exactly our ids."""
    d = r1_folder(tmp_path)
    from lmdeploy.messages import GenerationConfig, Response
    from lmdeploy.model import get_chat_template
    from lmdeploy.pipeline import Pipeline, _EventLoopThread
    from lmdeploy.serve.core.async_engine import AsyncEngine
    from lmdeploy.serve.managers.session_manager import SessionManager
    from lmdeploy.serve.processors import MultimodalProcessor
    from lmdeploy.tokenizer import Tokenizer
    from aimo2_nb.config import RunConfig
    from aimo2_nb.prompts import messages
    tk = Tokenizer(str(d))
    ae = object.__new__(AsyncEngine)  # only what preprocess reads
    ae.tokenizer, ae.prompt_processor = tk, MultimodalProcessor(tk, get_chat_template(str(d)))
    ae.request_logger = SimpleNamespace(log_prompt=lambda *a, **k: None, log_inputs=lambda *a, **k: None)
    ae.session_len, ae.backend_config = 8192, SimpleNamespace(enable_prefix_caching=True)
    ae._determine_gen_config = lambda ids, gen_config=None: gen_config or GenerationConfig()
    seen = []
    async def generate(request, stream_response=True):  # the GPU engine: records what preprocess made
        seen.append(request)
        yield SimpleNamespace(to_response=lambda idx: Response(text='ok', generate_token_len=1, input_token_len=request.input_token_len,
                                                               finish_reason='length', token_ids=[5], index=idx))
    ae.generate = generate
    pipe = object.__new__(Pipeline)  # the real pipeline code on a real event-loop thread, without a model
    pipe.async_engine, pipe.limiter, pipe.backend_config = ae, None, SimpleNamespace(max_batch_size=4)
    pipe.internal_thread, mgr = _EventLoopThread(daemon=True), SessionManager()
    try:
        e = LmdeployEngine(LmdeployConfig(backend='pytorch', assistant_prefix='<think>\n'))
        e.pipe = pipe
        for spec in RunConfig().prompts.list:
            msgs = chat_messages(SampleRequest(0, messages(spec, 'What is $2+2$?')), e.cfg.assistant_prefix)
            seen.clear()
            rs = list(pipe.stream_infer([msgs], sessions=[mgr.get()], gen_config=[GenerationConfig(max_new_tokens=4)]))
            assert rs[-1].finish_reason == 'length', rs[-1]
            ids = e.prompt_ids(msgs)
            assert ids == seen[0].inputs['input_ids'] and ids[0] == 151646 and ids[-2:] == [151648, 198]
        cont = ids + [5, 6, 7] + tk.encode(OUT, add_bos=False)
        seen.clear()
        it = pipe._infer(iter([dict(session_id=mgr.get(), messages=None, input_ids=cont, gen_config=GenerationConfig(max_new_tokens=9),
                                    stream_response=True)]), multiplex=True)  # what `_launch` sends
        rs = list(it)
        assert rs[-1].finish_reason == 'length' and seen[0].inputs['input_ids'] == cont and seen[0].gen_config.max_new_tokens == 9
        enc = tk.encode(OUT, add_bos=False)
        assert enc and enc[0] != 151646 and tk.decode(enc) == OUT
    finally:
        pipe.internal_thread.close()


def test_checkpoints_of_lmdeploys_detokenizer_are_token_boundaries(tmp_path):
    """Random ids (byte-level pieces that split UTF-8 characters included) through lmdeploy's incremental detokenizer,
    as `AsyncEngine.generate` streams them: every cut of `TurnTokens` decodes to exactly the kept text."""
    d = r1_folder(tmp_path)
    from lmdeploy.tokenizer import DetokenizeState, Tokenizer
    tk = Tokenizer(str(d))
    rng = random.Random(7)
    prompt = tk.encode('<｜User｜>Compute 2+2.<｜Assistant｜><think>\n', add_bos=True)
    pool = [i for i in range(151643) if i % 7 == 0] + tk.encode('数学 ∑ é 🙂 naïve', add_bos=False)
    pool += list(range(256)) * 40  # single-byte pieces: most of them halves of a UTF-8 character
    held = 0
    for trial in range(20):
        gen = [rng.choice(pool) for _ in range(rng.randint(20, 80))]
        t = TurnTokens()
        state, all_ids = DetokenizeState(len(prompt)), list(prompt)
        k = 0
        while k < len(gen):  # lmdeploy's generate: one or a few new ids per response
            step = gen[k:k + rng.choice((1, 1, 1, 2, 3))]; k += len(step)
            all_ids += step
            off = state.ids_offset
            text, state = tk.detokenize_incrementally(all_ids, state, skip_special_tokens=True)
            t.add(all_ids[off:], text); held += not text
        full = t.text
        for keep in sorted({rng.randint(0, len(full)) for _ in range(6)} | {len(full)}):
            u = TurnTokens(); u.runs = [type(t.runs[0])(list(t.runs[0].ids), list(t.runs[0].parts), t.runs[0].n, list(t.runs[0].marks))]
            ctx = u.resume(keep, OUT, lambda s: tk.encode(s, add_bos=False))
            n_gen = len(ctx) - u.appended
            assert ctx[:n_gen] == gen[:n_gen]  # the generated ids themselves, cut at a boundary
            assert tk.decode(ctx, skip_special_tokens=True) == full[:keep] + OUT, (trial, keep)
    assert held > 50  # many responses whose text lmdeploy held back


# ---------------------------------------------------------------- the GPU script's scripted tool calls, on CPU
def gpu_tir():
    import importlib, sys
    sys.path.insert(0, str(ROOT / 'bench'))
    return importlib.import_module('gpu_tir')


def test_inject_code_keeps_the_solver_and_the_engine_texts_equal():
    """The bench's `InjectCode`: a sample 'writes' a block, the engine is paused there; the resume the solver makes (keep =
    the block's end) continues the engine from its text + the block + the output."""
    G = gpu_tir()
    e, pipes = engine(step_s=0.002)
    w = G.InjectCode(e, lambda q, i: [(6, 'print(42)')] if i == 0 else [])
    w.start([req(0, 5000), req(1, 5000)])
    got = []
    while not any('```python' in c.text for c in got): got += w.poll(0.05)
    text = ''.join(c.text for c in got if c.index == 0)
    assert text.endswith('\n\n```python\nprint(42)\n```\n') and e._call.samples[0].paused
    w.pause(0)  # the solver pauses it: already paused
    end = len(text) - 1  # the parser's block end: just after the closing fence
    wait(lambda: e._call.samples[0].drained)
    w.resume(0, end, '\n```output\n42\n```\n')
    wait(lambda: e._call.samples[0].turn == 1)
    assert ''.join(r.text for r in e._call.samples[0].words.runs[:-1]) == text[:end] + '\n```output\n42\n```\n'  # then the new turn's
    got2 = []
    while sum(1 for c in got2 if c.index == 0 and c.text) < 3: got2 += w.poll(0.05)
    w.abort_all()
    assert w.stops[-1] == {0: 'continuing', 1: 'generating'}
    stream_ended(e)
    e.close()


def test_gpu_tir_dry_run(tmp_path):
    "The GPU script end to end on the stand-in pipeline: every stage reports, the structure the GPU run is read by."
    import os, subprocess, sys
    env = dict(os.environ, OUT=str(tmp_path))
    p = subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu_tir.py'), '--dry-run', '--n', '4', '--rounds', '2',
                        '--questions', '1'], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    d = json.loads(next(tmp_path.glob('gpu-tir-*.json')).read_text())
    st = d['worker']['stages']
    plain, turns = st['a0_plain'], st['a1_turns']
    assert plain['all_finished'] and turns['all_finished'] and plain['tokens'] == turns['tokens'] == 4 * 256
    assert turns['continued_turns'] == 4 * 3 and plain['continued_turns'] == 0
    # the stand-in caches a sequence once it ended; a continuation may start before its paused turn ended (resume_at_once)
    assert 0 < turns['turn_cached_tokens']['mean'] <= turns['turn_reused']['mean']
    assert st['b_ttft']['continued']['got'] == 4 and st['b_ttft']['fresh']['got'] == 4
    assert d['turns_vs_plain'] is not None and d['no_gpu_process_left'] and d['worker_exit'] == 0
    c = st['c_solver_tir']  # the solver's TIR loop with scripted tool calls, stopped by its time limit
    assert c['all_aborted'] and c['streams_ended'] and c['turn_threads_left'] == 0, c  # (how many calls ran depends on the CPU's load)
    assert 'generating' in c['abort_paths']  # (being in time is the GPU run's to show: no timed assertions here)


def test_warm_up_of_tir_requests_pauses_and_resumes_each_sample_once():
    "The warm-up also runs the continuation path (its first use compiles kernels too: ~1 s a turn on an H200)."
    e, pipes = engine()
    reqs = [dataclasses.replace(req(i), kind='tir') for i in range(4)]
    got = e.warm_up(reqs, tokens=12, timeout=30)
    assert (got['samples'], got['ended'], got['resumed']) == (4, 4, 4)
    assert len(e.turn_log) == 4 and not e.abort_log
    plain = e.warm_up([req(i) for i in range(4)], tokens=12, timeout=30)
    assert (plain['ended'], plain['resumed']) == (4, 0)
    e.close()


def test_a_tir_turn_that_stops_right_after_its_block_is_paused_not_finished():
    "EOS right after the fence (a small model 'stops' as its prompt says): no finish; the sample resumes from the block."
    first = ['Compute.\n', '```python\n', 'print(7)\n', '```']
    script = lambda p, seed: first if p and isinstance(p[0], dict) else ['It ', 'printed ', '7, ', 'so ', '\\boxed{7}']
    e, pipes = engine(step_s=0.002, script=script)
    e.start([dataclasses.replace(req(0, 100), kind='tir'), req(1, 100)])
    rec = Recorder(e)
    rec.poll_until(lambda g: rec.text(0).endswith('```\n') and rec.fin(1) is not None)
    time.sleep(0.05); rec.got += e.poll(0.05)
    assert rec.fin(0) is None and e._call.samples[0].paused  # paused by the engine, no 'stop' forwarded
    assert rec.fin(1).finish == 'stop'  # a cot sample's EOS stays its end
    e.pause(0)  # the solver's pause: nothing to do
    end = len(''.join(first))
    e.resume(0, end, OUT)
    rec.poll_until(lambda g: rec.fin(0) is not None)
    assert rec.fin(0).finish == 'stop' and rec.text(0).endswith('\\boxed{7}')
    prompt = pipes[0].prompt_input(chat_messages(req(0, 100)))
    cont = pipes[0].inputs[-1][1]
    assert cont[:len(prompt)] == prompt and cont[-len(char_ids(OUT)):] == char_ids(OUT) and len(cont) == len(prompt) + 4 + len(char_ids(OUT))
    stream_ended(e)
    e.close()
