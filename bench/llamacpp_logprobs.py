"""Decode speed with per-token log-probabilities on vs off through our llama.cpp engine (issue 15), on this CPU.

The embedded 0.5B model generates the same samples (same seeds, greedy, a fixed number of new tokens) with
`sampling.logprobs` 0 and 1 in alternating rounds (off, on, off, on, ...: drift and load cancel), through
`LlamaCppEngine.start/poll`; the consumer feeds each chunk's log-probabilities to a `vote.Confidence`, as the solver
does. Reported: tokens/s of each round and the on/off ratio of the medians (a ratio in one run, never an absolute).
Log-probabilities come from `logprob_hook` (no `logits_all`): one pass over the 151k-token vocabulary per token.

    python bench/llamacpp_logprobs.py [--rounds 6] [--samples 2] [--new-tokens 96]
Writes bench/llamacpp-logprobs.json.
"""
from __future__ import annotations
import argparse, datetime, json, os, platform, statistics, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aimo2_nb.config import SamplingConfig
from aimo2_nb.engines.base import SampleRequest
from aimo2_nb.engines.llamacpp import DEFAULT_MODEL, LlamaCppEngine
from aimo2_nb.vote import Confidence

MSGS = [{'role': 'user', 'content': 'Write a very long story about a dragon and a knight.'}]


def round_(eng, n: int, new_tokens: int, logprobs: int) -> dict:
    "One workload: `n` samples of `new_tokens` tokens; tokens/s of the whole round."
    s = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0, logprobs=logprobs)
    conf = [Confidence(256) for _ in range(n)]
    t0, tokens, got, done = time.perf_counter(), [0] * n, [0] * n, set()
    eng.start([SampleRequest(i, MSGS, s, seed=i + 1) for i in range(n)])
    while len(done) < n:
        for c in eng.poll(0.5):
            conf[c.index].feed(c.logprobs); got[c.index] += len(c.logprobs)
            tokens[c.index] = c.tokens
            if c.finish: done.add(c.index)
    wall = time.perf_counter() - t0
    return dict(logprobs=logprobs, wall_s=round(wall, 3), tokens=sum(tokens), tok_s=round(sum(tokens) / wall, 2),
                logprobs_got=sum(got), every_token=sum(got) == sum(tokens) if logprobs else sum(got) == 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--samples', type=int, default=2)
    ap.add_argument('--new-tokens', type=int, default=96)
    ap.add_argument('--out', default=str(ROOT / 'bench/llamacpp-logprobs.json'))
    a = ap.parse_args()
    eng = LlamaCppEngine(DEFAULT_MODEL, n_ctx=1024, omp_wait='passive')
    try:
        round_(eng, 1, 8, 0)  # load the model and warm up
        rounds = [round_(eng, a.samples, a.new_tokens, k % 2) for k in range(a.rounds)]
    finally:
        eng.close()
    med = {lp: statistics.median(r['tok_s'] for r in rounds if r['logprobs'] == lp) for lp in (0, 1)}
    res = dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
               model=DEFAULT_MODEL, samples=a.samples, new_tokens=a.new_tokens, rounds=rounds,
               median_tok_s={'off': med[0], 'on': med[1]}, on_over_off=round(med[1] / med[0], 3),
               every_token_has_a_logprob=all(r['every_token'] for r in rounds))
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    print(json.dumps({k: v for k, v in res.items() if k != 'rounds'}, indent=1))


if __name__ == '__main__':
    main()
