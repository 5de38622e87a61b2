"""A CPU stand-in for lmdeploy 0.18's pipeline: the slice of its interface the lmdeploy engine uses, with the same
semantics where they matter (see nbs/12_engine_lmdeploy.ipynb). Used by the tests, the notebooks and the GPU
benchmark's --dry-run; not part of the aimo2_nb package."""
from __future__ import annotations
import asyncio, concurrent.futures, queue, threading, time
from types import SimpleNamespace
from typing import Callable, Iterator

__all__ = ['FakeSession', 'FakePipeline', 'FakeTokenizer', 'char_ids']


class FakeSession:
    "lmdeploy's `Session`, as far as the adapter sees it."
    def __init__(self, pipe: FakePipeline, sid: int): self.pipe, self.session_id, self._handle = pipe, sid, None
    def abort(self) -> None:
        "Cancel the request if it holds a handle (a queued request ignores this, as in lmdeploy 0.18)."
        if threading.current_thread() is self.pipe._thread: raise RuntimeError('Session.abort() called from the event loop')
        time.sleep(self.pipe.abort_delay_s)
        with self.pipe._lock:
            self.pipe.abort_calls.append(self.session_id)
            if self._handle is not None: self._handle['cancel'] = True
    def close(self) -> None:
        with self.pipe._lock: self.pipe.closed_sessions.append(self.session_id)

class _Gibberish:
    "Endless seeded random words, made on demand: what a random-weight model writes."
    WORDS = ('the ', 'of ', 'x', '7', ' and', 'ly', '\n', ' so', 'um ', '+')
    def __init__(self, seed: int): self.seed = seed
    def __len__(self) -> int: return 1 << 30
    def __getitem__(self, n: int) -> str: return self.WORDS[hash((self.seed, n)) % len(self.WORDS)]

def _gibberish(messages: list, seed: int) -> _Gibberish: return _Gibberish(seed)

def char_ids(s: str) -> list[int]:
    "The stand-in tokenizer: one id per character (1000 + its code point)."
    return [1000 + ord(ch) for ch in s]

class FakeTokenizer:
    "lmdeploy's `Tokenizer.encode` (0.18 signature): a BOS (id 1) unless `add_bos=False`, then one id per character."
    bos_token_id = 1
    def encode(self, s: str, add_bos: bool = True, add_special_tokens: bool = True, **kw) -> list[int]:
        return ([1] if add_bos else []) + char_ids(s)

class _FakePromptProcessor:
    "lmdeploy's `MultimodalProcessor.get_prompt_input` for text chat lists (what `AsyncEngine.preprocess` calls)."
    def __init__(self, pipe): self.pipe = pipe
    async def get_prompt_input(self, prompt, do_preprocess: bool, adapter_name=None, **kw) -> dict:
        self.pipe.prompt_calls.append(prompt)
        return dict(prompt=repr(prompt), input_ids=self.pipe.prompt_input(prompt))

class FakePipeline:
    "A CPU stand-in for `lmdeploy.pipeline(...)` (0.18 interface: session, stream_infer, close, async_engine)."
    GenerationConfig = SimpleNamespace  # the adapter builds generation settings with this instead of lmdeploy's class
    def __init__(self, max_batch_size: int = 32, step_s: float = 0.002, prefill_s: float = 0.005,
                 script: Callable[[list, int], list[str]] | None = None, abort_delay_s: float = 0.0, backend: str = 'pytorch',
                 hold_every: int = 0):  # hold_every=k: every k-th token's text comes with the next response (an incomplete character)
        self.max_batch_size, self.step_s, self.prefill_s, self.abort_delay_s = max_batch_size, step_s, prefill_s, abort_delay_s
        self.script = script or _gibberish  # script(messages, or a continuation's input ids, seed) -> token strings
        self.hold_every = hold_every
        self.backend_config = SimpleNamespace(max_batch_size=max_batch_size)
        self.async_engine = SimpleNamespace(backend=backend, engine=object(), stop_all_session=self._stop_all,
                                            tokenizer=FakeTokenizer(), prompt_processor=_FakePromptProcessor(self))
        self._vocab: dict[str, int] = {}  # generated token string -> id (ids from 10_000_000, apart from char ids)
        self.prompt_calls: list = []; self.inputs: list = []; self.gens: list = []  # every request's (session id, input ids), gen config
        self._seqs: list = []  # finished sequences (input + generated ids): the prefix cache
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._queue: list = []  # requests waiting for a handle
        self._active: list = []  # requests holding a handle
        self._ids = 0
        self.abort_calls: list = []; self.closed_sessions: list = []; self.started: list = []
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name='fake-lmdeploy-loop', daemon=True); self._thread.start()

    def session(self) -> FakeSession:
        with self._lock: self._ids += 1; return FakeSession(self, self._ids)

    async def _stop_all(self) -> None:
        with self._lock:
            for h in self._active: h['cancel'] = True

    def prompt_input(self, messages: list) -> list[int]:
        "The first turn's input ids of a chat list: BOS, then the characters of every message."
        return [1] + char_ids(''.join(str(m.get('content', '')) for m in messages))

    def token_id(self, word: str) -> int:
        with self._lock: return self._vocab.setdefault(word, 10_000_000 + len(self._vocab))

    def _cached(self, ids: list) -> int:
        "Tokens of `ids` a finished sequence already holds (prefix caching, at token granularity)."
        best = 0
        for seq in self._seqs:
            n = 0
            for a, b in zip(ids, seq):
                if a != b: break
                n += 1
            best = max(best, n)
        return min(best, len(ids) - 1)

    def _run(self, fn=None, coro=None) -> concurrent.futures.Future:
        "`Pipeline._run`: run a coroutine (or function) and return a future of its result."
        f: concurrent.futures.Future = concurrent.futures.Future()
        try: f.set_result(asyncio.run(coro) if coro is not None else fn())
        except Exception as e: f.set_exception(e)
        return f

    def _request(self, i, s, g, words, q, ids) -> dict:
        self.inputs.append((s.session_id, list(ids))); self.gens.append(g)
        return dict(idx=i, session=s, gen=g, words=words, n=0, cancel=False, q=q, t_ready=None, input=list(ids), gen_ids=[],
                    held='', cached=self._cached(ids))

    def stream_infer(self, prompts: list, sessions: list | None = None, gen_config: list | None = None, **kw) -> Iterator:
        "An iterator of responses of every prompt; returns at once, like lmdeploy's."
        if self._closed: raise RuntimeError('pipeline is closed')
        sessions = sessions or [self.session() for _ in prompts]
        gens = gen_config if isinstance(gen_config, list) else [gen_config] * len(prompts)
        if not (len(prompts) == len(sessions) == len(gens)): raise ValueError('prompts, sessions and gen_config differ in length')
        q: queue.Queue = queue.Queue()
        reqs = []
        for i, (p, s, g) in enumerate(zip(prompts, sessions, gens)):
            seed = getattr(g, 'random_seed', None) or 0
            reqs.append(self._request(i, s, g, self.script(p, seed), q, self.prompt_input(p)))
        return self._enqueue(reqs, q)

    def _infer(self, requests, multiplex: bool = True, **kw) -> Iterator:
        "`Pipeline._infer` with request dicts as `AsyncEngine.preprocess` reads them (here: `input_ids` requests)."
        if self._closed: raise RuntimeError('pipeline is closed')
        q: queue.Queue = queue.Queue()
        reqs = []
        for i, d in enumerate(requests):
            if d.get('messages') is not None or d.get('input_ids') is None: raise ValueError('exactly one of messages or input_ids')
            g, s = d['gen_config'], d['session_id']
            if getattr(g, 'max_new_tokens', 1) < 1: raise ValueError('max_new_tokens must be at least 1')
            reqs.append(self._request(i, s, g, self.script(list(d['input_ids']), getattr(g, 'random_seed', None) or 0), q, d['input_ids']))
        return self._enqueue(reqs, q)

    def _enqueue(self, reqs: list, q: queue.Queue) -> Iterator:
        with self._lock:
            self._queue += reqs
            for r in reqs: r['group'] = reqs
        self._wake.set()
        return iter(q.get, None)

    def _emit(self, r: dict, text: str, fin: str | None) -> None:
        ids = [self.token_id(text)] if text else []  # one token per emitted word
        r['gen_ids'] += ids
        if text and self.hold_every and r['n'] % self.hold_every == 0 and fin is None:
            r['held'] += text; text = ''  # lmdeploy holds back the text of an incomplete character
        elif r['held']: text, r['held'] = r['held'] + text, ''
        lp = bool(getattr(r['gen'], 'logprobs', None)) and bool(ids)  # log-probability -0.5 each
        if fin is not None:
            with self._lock: self._seqs.append(r['input'] + r['gen_ids'])  # in the prefix cache before its end is seen
        r['q'].put(SimpleNamespace(index=r['idx'], text=text, generate_token_len=r['n'], finish_reason=fin,
                                   token_ids=ids, logprobs=[{ids[0]: -0.5}] if lp else None, cached_tokens=r['cached'],
                                   error_code=None, error_message=None, input_token_len=len(r['input'])))
        if fin is not None:
            r['done'] = True
            if all(x.get('done') for x in r['group']): r['q'].put(None)

    def _loop(self) -> None:
        while not self._closed:
            with self._lock:
                while self._queue and len(self._active) < self.max_batch_size:
                    r = self._queue.pop(0); r['session']._handle = r; r['t_ready'] = time.monotonic() + self.prefill_s
                    self._active.append(r); self.started.append(r['session'].session_id)
                active = list(self._active)
            if not active:
                self._wake.wait(0.05); self._wake.clear(); continue
            time.sleep(self.step_s)
            now = time.monotonic()
            for r in active:
                g = r['gen']
                if r['cancel']: fin, text = 'abort', ''
                elif now < r['t_ready']: continue
                else:
                    if r['n'] < len(r['words']):
                        text = r['words'][r['n']]; r['n'] += 1
                    else: text = ''
                    eos = r['n'] >= len(r['words']) and not getattr(g, 'ignore_eos', False)
                    fin = 'length' if r['n'] >= getattr(g, 'max_new_tokens', 512) else 'stop' if eos else None
                if fin is not None:
                    with self._lock:
                        self._active.remove(r); r['session']._handle = None
                self._emit(r, text, fin)

    def close(self) -> None:
        "Stop the scheduler; requests still queued or running end with 'abort'."
        with self._lock:
            rest = self._queue + self._active; self._queue, self._active = [], []
        self._closed = True
        for r in rest: self._emit(r, '', 'abort')
