"""Decode throughput with per-token log-probabilities on vs off, through our lmdeploy engine adapter (issue 15).

One engine (lmdeploy 0.18 PyTorch engine, `logprobs_mode='raw_logprobs'`, random-weight DeepSeek-R1-Distill-Qwen-14B
shape, AWQ W4 + int8 KV by default) runs the same workload (16 samples x 2048 new tokens, `ignore_eos`) through
`LmdeployEngine.start/poll` with `sampling.logprobs` 0 and 1 alternately (off, on, off, on: drift cancels), and the
consumer does what the solver does with them: `vote.Confidence.feed` per chunk. Goal: on/off >= 0.95 (raw lmdeploy
measured 1221 vs 1220 tok/s on an H200: the engine side is free; this measures our adapter's side). Also checks that
every sample's log-probabilities arrived (one per generated token) and are <= 0.

    python bench/gpu_logprobs.py [--deadline 540] [--weights awq|bf16]   # on the GPU machine, from the repo root
    python bench/gpu_logprobs.py --dry-run                               # any machine: a stand-in pipeline
Writes bench/gpu-logprobs-<date>.json, and $OUT/gpu-logprobs-<date>.json when OUT is set.
Needs what bench/gpu_run.py needs (bench/GPU.md): the `.whl/` wheels and the `.gpu/` folder (make_random_qwen2.py,
r1-tokenizer) carried to the machine.
"""
from __future__ import annotations
import datetime, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'bench'))
import gpu_run as G  # the model maker, device info and helpers of the main GPU proof


def make_engine(args, model_dir: str):
    from aimo2_nb.engines.lmdeploy import LmdeployConfig, LmdeployEngine
    extra = dict(quant_policy=8, **({'model_format': 'awq'} if args.weights == 'awq' else {}))
    cfg = LmdeployConfig(model=model_dir, backend='pytorch', tp=1, max_batch_size=max(32, args.n), cache_max_entry_count=0.8,
                         max_new_tokens=args.new_tokens, logprobs_mode='raw_logprobs', ignore_eos=True, **extra)
    factory = None
    if args.dry_run:
        sys.path.insert(0, str(ROOT / 'tests'))  # the stand-in pipeline is a test double, kept with the tests
        from doubles.fake_lmdeploy import FakePipeline
        factory = lambda c: FakePipeline(max_batch_size=c.max_batch_size, step_s=args.fake_step_s, prefill_s=0.05)
    return LmdeployEngine(cfg, pipeline_factory=factory)


def round_(eng, n: int, new_tokens: int, logprobs: int, limit_s: float) -> dict:
    "One workload through start/poll; the consumer feeds log-probabilities to a Confidence per sample, as the solver does."
    from aimo2_nb.config import SamplingConfig
    from aimo2_nb.engines.base import SampleRequest
    from aimo2_nb.vote import Confidence
    s = SamplingConfig(max_new_tokens=new_tokens, logprobs=logprobs)
    reqs = [SampleRequest(i, G.bench_messages(i), s, seed=20_000 + i, kind=('code', 'cot')[i % 2]) for i in range(n)]
    conf = {i: Confidence(256) for i in range(n)}
    final, nlp, bad = {}, 0, 0
    t0 = time.monotonic(); first = None
    eng.start(reqs)
    while len(final) < n and time.monotonic() - t0 < limit_s:
        for c in eng.poll(0.05):
            if first is None and c.tokens: first = time.monotonic()
            if c.logprobs:
                conf[c.index].feed(c.logprobs); nlp += len(c.logprobs); bad += sum(1 for x in c.logprobs if x > 1e-6)
            if c.finish is not None: final[c.index] = c.tokens
    t1 = time.monotonic()
    if len(final) < n: eng.abort_all()
    tokens = sum(final.values())
    return dict(logprobs=logprobs, n=n, new_tokens=new_tokens, seconds=round(t1 - t0, 3), first_token_s=round((first or t1) - t0, 3),
                tokens=tokens, tok_s=round(tokens / max(1e-9, t1 - t0), 1), all_finished=len(final) == n,
                logprobs_received=nlp, logprobs_positive=bad,
                tail_nll_mean=round(sum(c.tail_nll or 0 for c in conf.values()) / n, 4) if nlp else None)


def main(argv=None) -> int:
    ap = G.rounds_parser('gpu_logprobs.py', __doc__, 'alternating off/on rounds (even)', 0.005)
    args = ap.parse_args(argv)
    if args.dry_run and '--new-tokens' not in (argv or sys.argv[1:]): args.new_tokens = 64
    t_start = time.time(); deadline = t_start + args.deadline
    date = datetime.date.today().isoformat()
    name = f"gpu-logprobs-{date}{'-dry' if args.dry_run else ''}.json"
    out = Path(os.environ['OUT']) if os.environ.get('OUT') else None
    paths = ([] if args.dry_run else [ROOT / 'bench' / name]) + ([out / name] if out else [])
    res = dict(date=date, dry_run=args.dry_run, **G.device_info(args.dry_run), weights=args.weights,
               workload=dict(n=args.n, new_tokens=args.new_tokens, engine='lmdeploy PyTorch engine, logprobs_mode=raw_logprobs, KV int8'),
               rounds=[], notes=[])
    save = lambda: G.write_json(res, *paths)
    save()
    model_dir = ''
    if not args.dry_run:
        args.log_dir = Path(f'/tmp/aimo2-gpu-logprobs-{os.getpid()}'); args.log_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        rc = G.make_model(args, awq=args.weights == 'awq')
        model_dir = args.model_dir + ('-awq' if args.weights == 'awq' else '')
        res['make_model'] = dict(rc=rc, seconds=round(time.time() - t0, 1)); save()
    t0 = time.time()
    eng = make_engine(args, model_dir)
    opener = getattr(eng, 'load', None) or getattr(eng, '_load', None)
    if callable(opener): opener()
    res['engine_start_s'] = round(time.time() - t0, 1); save()
    per_round = None
    for k in range(args.rounds):
        left = deadline - time.time()
        if per_round is not None and left < 1.5 * per_round: res['notes'].append(f'stopped after {k} rounds: {left:.0f}s left'); break
        t0 = time.time()
        res['rounds'].append(round_(eng, args.n, args.new_tokens, k % 2, max(30.0, left - 20)))
        per_round = time.time() - t0
        G.log('round', k, res['rounds'][-1]); save()
    off = [r['tok_s'] for r in res['rounds'] if r['logprobs'] == 0]
    on = [r['tok_s'] for r in res['rounds'] if r['logprobs'] == 1]
    if off and on:
        res['tok_s_off'], res['tok_s_on'] = round(sum(off) / len(off), 1), round(sum(on) / len(on), 1)
        res['on_vs_off'] = round(res['tok_s_on'] / res['tok_s_off'], 4)
        res['goal_on_vs_off'] = 0.95
        got = [r for r in res['rounds'] if r['logprobs'] == 1]
        res['logprobs_complete'] = all(r['logprobs_received'] >= r['tokens'] - r['n'] for r in got) and not any(r['logprobs_positive'] for r in got)
    res['seconds'] = round(time.time() - t_start, 1); save()
    try: eng.close()
    except Exception: pass
    print(json.dumps({k: res.get(k) for k in ('device', 'engine_start_s', 'tok_s_off', 'tok_s_on', 'on_vs_off', 'logprobs_complete')}, indent=1))
    sys.stdout.flush(); os._exit(0)  # lmdeploy's atexit hooks may wait on threads; the results are written


if __name__ == '__main__':
    sys.exit(main())
