"Helpers shared by the engine tests (llama.cpp, transformers)."
from __future__ import annotations
import time
from aimo2_nb.engines.base import Chunk

def drain(eng, indices, until: float = 60.0, on_chunk=None) -> list[Chunk]:
    "Poll until every sample in `indices` has finished; every chunk in arrival order."
    got, open_, t0 = [], set(indices), time.monotonic()
    while open_ and time.monotonic() - t0 < until:
        for c in eng.poll(0.05):
            got.append(c)
            if c.finish: open_.discard(c.index)
            if on_chunk: on_chunk(c, got)
    assert not open_, f"samples {open_} did not finish in {until}s"
    return got

def text_of(got, i): return ''.join(c.text for c in got if c.index == i)
def end_of(got, i): return next(c for c in got if c.index == i and c.finish)
