"""A TIR block that closes on the sample's last allowed token (tokens == sampling.max_new_tokens at the pause).
Expected: that sample ends at 'length' (or votes its tool answer); the other samples run as usual.
Seen: see the printout (SequentialEngine, as llama.cpp and transformers use)."""
import sys, threading, time; sys.path.insert(0, 'tests')
from test_tir import config, of, run_print
from aimo2_nb.core import RealClock
from aimo2_nb.engines.base import Chunk, SequentialEngine
from aimo2_nb.engines.replay import ClockFuture
from aimo2_nb.solver import Solver

class Typist(SequentialEngine):
    def _load(self): return None
    def _stream_one(self, sq, req):
        words = ['It ', 'printed 40, ', 'so \\boxed{40}'] if req.prefix else ['Compute.\n', '```python\n', 'print(40)\n', '```\n']
        n = 0
        for k, w in enumerate(words[:req.sampling.max_new_tokens], 1):
            time.sleep(0.005); n = k; yield Chunk(req.index, w, k)
        time.sleep(0.3)  # the solver pauses the sample before the turn's end arrives (as in the llama.cpp run)
        yield Chunk(req.index, '', n, 'length' if n < len(words) or not req.prefix else 'stop')

class Ex:
    def submit(self, code, timeout=None):
        f = ClockFuture(); threading.Timer(0.05, lambda: f.set(run_print(code))).start(); return f

cfg = config(samples=3, rules=[])
cfg.sampling.max_new_tokens = 4  # the fence closes on token 4
eng = Typist(clock=RealClock())
r = Solver(eng, cfg, executor=Ex()).solve('q')
eng.close()
for e in of(r, 'sample_end'): print(f"sample {e.sample}: finish={e.finish!r} tokens={e.tokens} error={e.error!r}")
print('tool_calls', len(of(r, 'tool_call')), 'errors', [x.message for x in of(r, 'error')])
