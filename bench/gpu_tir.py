"""TIR turns on the lmdeploy engine, on the GPU (issue 16, "Engines continue a sample" and "Evidence, on real parts").

One engine (lmdeploy 0.18 PyTorch engine, random-weight DeepSeek-R1-Distill-Qwen-14B shape with the real R1 tokenizer,
AWQ W4 + int8 KV by default, `ignore_eos`) measures, through `LmdeployEngine` (our adapter, `pause`/`resume`):
  (a) decode throughput of 16 samples x 2048 tokens with a tool call forced every 512 tokens (pause at 512, resume
      with an output block of ~100 tokens, i.e. 3 continued turns a sample) vs the same without turns, rounds
      alternating plain/turns (drift and warm-up cancel). Goal: turns/plain >= 0.90. Per continued turn: prompt
      length, tokens reused and appended, lmdeploy's `cached_tokens`, seconds to its first token.
  (b) time to the first token of 16 continued turns (paused at ~1800 tokens, drained, resumed at once with ~100
      tokens appended) vs 16 fresh prompts of the same lengths (random ids, sent through `Pipeline._infer`).
  (c) TIR questions end to end through `Solver` + `LmdeployEngine`: random weights never write code, so a wrapper
      (`InjectCode`) makes samples "write" a python block after a scripted number of tokens (the engine is paused
      there, the solver sees the block, runs it in the sample's executor session and resumes it with the real output).
      The plans leave samples generating, waiting for their code (a slow call) and in a continued turn when the
      question's time runs out: every abort path. Then: no GPU process left once the worker exited.
The GPU work runs in a worker process (the parent never touches CUDA, so it can check that nothing is left on the
GPU); every stage is time-guarded and the JSON is rewritten after each one.

    python bench/gpu_tir.py [--deadline 540]     # on the GPU machine (bench/GPU.md: .whl/ and .gpu/ carried)
    python bench/gpu_tir.py --dry-run            # any machine: the stand-in pipeline, a scaled-down workload
Writes $OUT/gpu-tir-<date>.json (and bench/gpu-tir-<date>.json on a real run), plus $OUT/gpu-tir-logs.txt and
$OUT/tir-solver-trace.jsonl.
"""
from __future__ import annotations
import dataclasses, datetime, json, os, random, signal, subprocess, sys, threading, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'bench'))
import gpu_run as G  # the model maker, device info and helpers of the main GPU proof

log = G.log


# ------------------------------------------------------------------------------------------------ the scripted tool
class InjectCode:
    """A turn engine whose samples "write" a python block after a scripted number of tokens of a turn.

    At that point the inner engine is paused and the block goes to the solver as the sample's next chunk. The solver
    then pauses the sample (already paused: nothing to do), runs the code and calls `resume(i, keep, output)` with
    `keep` in its text, which has the block: the inner engine continues from its own text cut before the block plus
    the block and the output, so both texts are the same again."""
    def __init__(self, inner, plan):  # plan(question number, sample index) -> [(tokens into the turn, code), ...]
        self.inner, self.plan, self.q = inner, plan, -1
        self.clock = inner.clock
        self.st: dict = {}
        self.stops: list = []  # per question: the phase of every sample when the solver stopped it

    def __getattr__(self, k): return getattr(self.inner, k)

    def start(self, requests):
        self.q += 1
        self.st = {r.index: dict(view=0, start=0, tokens=0, calls=list(self.plan(self.q, r.index)), p=None, code='',
                                 injected=False, own=False, turn=0, phase='generating') for r in requests}
        self.stops.append({})
        self.inner.start(requests)

    def poll(self, timeout):
        from aimo2_nb.engines.base import Chunk
        out = []
        for c in self.inner.poll(timeout):
            s = self.st.get(c.index)
            if s is None: out.append(c); continue
            s['tokens'] = max(s['tokens'], c.tokens)
            if c.finish is not None: s['phase'] = 'done'; out.append(c); continue
            if s['injected'] or s['own']: continue  # put before the pause: not part of the sample any more
            out.append(c); s['view'] += len(c.text)
            if s['calls'] and c.tokens - s['start'] >= s['calls'][0][0]:
                code = f"\n\n```python\n{s['calls'].pop(0)[1]}\n```\n"  # the parser sees a fence on a complete line
                self.inner.pause(c.index)
                s.update(p=s['view'], code=code, injected=True, phase='waiting')
                out.append(Chunk(c.index, code, c.tokens)); s['view'] += len(code)
        return out

    def pause(self, i):
        s = self.st.get(i)
        if s is None or s['injected'] or s['own']: return
        s['own'] = True; self.inner.pause(i)  # the solver found a block of its own

    def resume(self, i, keep, text):
        s = self.st[i]
        if s['injected'] and keep >= s['p']: self.inner.resume(i, s['p'], s['code'][:keep - s['p']] + text)
        else: self.inner.resume(i, keep, text)
        s.update(view=keep + len(text), injected=False, own=False, start=s['tokens'], turn=s['turn'] + 1, phase='continuing')

    def _stopped(self, i):
        s = self.st.get(i)
        if s is not None and i not in self.stops[-1]: self.stops[-1][i] = s['phase']

    def abort(self, i):
        self._stopped(i); self.inner.abort(i)

    def abort_all(self):
        for i in self.st: self._stopped(i)
        self.inner.abort_all()


def tir_plan(q: int, i: int) -> list:
    "Question q, sample i: some never call (generating at the stop), some call slow code (waiting), the rest call fast code and continue."
    if i % 4 == 3: return []  # generates its first turn until the stop
    slow = 'import time\ntime.sleep(30)\nprint(1)'  # still running (or timed out and resumed) at the stop
    fast = f'x = {i + 1} * {q + 6}\nprint(x)'
    first = 24 + 16 * (i % 5)
    if i % 4 == 1: return [(first, fast), (48, slow)]
    return [(first, fast), (64, 'print(x + 1)'), (64, fast)]


# ------------------------------------------------------------------------------------------------ worker side
def make_engine(args, model_dir: str):
    from aimo2_nb.engines.lmdeploy import LmdeployConfig, LmdeployEngine
    extra = dict(quant_policy=8, **({'model_format': 'awq'} if args.weights == 'awq' else {}))
    cfg = LmdeployConfig(model=model_dir, backend='pytorch', tp=1, max_batch_size=max(32, args.n), cache_max_entry_count=0.8,
                         max_new_tokens=max(args.new_tokens, args.ttft_at + 512, 4096), ignore_eos=True, **extra)
    factory = None
    if args.dry_run:
        sys.path.insert(0, str(ROOT / 'tests'))  # the stand-in pipeline is a test double, kept with the tests
        from doubles.fake_lmdeploy import FakePipeline
        factory = lambda c: FakePipeline(max_batch_size=c.max_batch_size, step_s=args.fake_step_s, prefill_s=0.02)
    return LmdeployEngine(cfg, pipeline_factory=factory)


def output_block(enc, n_tokens: int, salt: int) -> str:
    "An output block of about `n_tokens` tokens, its numbers differing by `salt` (no sample shares another's)."
    rng = random.Random(salt)
    lines = []
    while True:
        text = '\n```output\n' + '\n'.join(lines) + '\n```\n'
        if len(enc(text)) >= n_tokens: return text
        lines.append(f"n = {rng.randrange(10**5)}  s = {rng.randrange(10**5)}")


def reqs(n: int, max_new: int, seed0: int):
    from aimo2_nb.config import SamplingConfig
    from aimo2_nb.engines.base import SampleRequest
    return [SampleRequest(i, G.bench_messages(i), SamplingConfig(max_new_tokens=max_new), seed=seed0 + i, kind='tir')
            for i in range(n)]


def summary(v: list) -> dict:
    v = sorted(x for x in v if x is not None)
    if not v: return dict(n=0)
    return dict(n=len(v), mean=round(sum(v) / len(v), 4), p50=v[len(v) // 2], max=v[-1], min=v[0])


def run_round(eng, args, seed0: int, turns: bool, outs: dict, limit_s: float) -> dict:
    "(a) one round: n samples x new_tokens; with `turns`, a tool call every `every` tokens answered at once."
    n, every = args.n, args.every
    mark = len(eng.turn_log)
    view, turn, final = {i: 0 for i in range(n)}, {i: 0 for i in range(n)}, {}
    held: dict = {}  # paused sample -> poll number of its pause (resumed once a later poll drained what was queued)
    polls, first = 0, None
    t0 = time.monotonic()
    eng.start(reqs(n, args.new_tokens, seed0))
    while len(final) < n and time.monotonic() - t0 < limit_s:
        batch = eng.poll(0.05); polls += 1
        for c in batch:
            if first is None and c.tokens: first = time.monotonic()
            if c.finish is not None: final[c.index] = c; continue
            if c.index in held: continue  # put before its pause
            view[c.index] += len(c.text)
            if turns and turn[c.index] < args.new_tokens // every - 1 and c.tokens >= every * (turn[c.index] + 1):
                eng.pause(c.index); held[c.index] = polls
        for i in [i for i, k in held.items() if k < polls]:  # a poll passed since its pause: the tool answers at once
            out = outs[(i, turn[i])]
            eng.resume(i, view[i], out)
            view[i] += len(out); turn[i] += 1; del held[i]
    t1 = time.monotonic()
    if len(final) < n: eng.abort_all()
    tokens = sum(c.tokens for c in final.values())
    tl = eng.turn_log[mark:]
    return dict(turns=turns, n=n, new_tokens=args.new_tokens, every=every if turns else None, seconds=round(t1 - t0, 3),
                first_token_s=round((first or t1) - t0, 3), tokens=tokens, tok_s=round(tokens / max(1e-9, t1 - t0), 1),
                all_finished=len(final) == n, finishes=sorted({c.finish for c in final.values()}),
                continued_turns=len(tl), turn_first_token_s=summary([t['first_token_s'] for t in tl]),
                turn_prompt_tokens=summary([t['prompt_tokens'] for t in tl]), turn_appended=summary([t['appended'] for t in tl]),
                turn_reused=summary([t['reused'] for t in tl]), turn_cached_tokens=summary([t['cached_tokens'] for t in tl]),
                tokens_after_pause=summary([t['after_pause'] for t in tl]),
                pause_to_start_s=summary([t['pause_to_start_s'] for t in tl]))


def run_ttft(eng, args, enc, seed0: int, limit_s: float) -> dict:
    "(b) 16 samples paused at ~ttft_at tokens, drained, resumed at once: first tokens vs 16 fresh prompts of the same lengths."
    from aimo2_nb.config import SamplingConfig
    from aimo2_nb.engines.lmdeploy import generation_config
    n, at = args.n, args.ttft_at
    t0 = time.monotonic()
    eng.start(reqs(n, at + 1024, seed0))
    view, held, polls = {i: 0 for i in range(n)}, {}, 0
    while len(held) < n and time.monotonic() - t0 < limit_s:
        polls += 1
        for c in eng.poll(0.05):
            if c.index in held or c.finish: continue
            view[c.index] += len(c.text)
            if c.tokens >= at: eng.pause(c.index); held[c.index] = polls
    call = eng._call
    while not all(call.by_index[i].drained for i in held) and time.monotonic() - t0 < limit_s: eng.poll(0.05)
    eng.poll(0.01)  # whatever was queued before the pauses
    if len(held) < n: eng.abort_all(); return dict(error=f'only {len(held)} of {n} samples reached {at} tokens in time')
    mark = len(eng.turn_log)
    outs = {i: output_block(enc, args.out_tokens, 7 * seed0 + i) for i in range(n)}
    tr = time.monotonic()
    for i in range(n): eng.resume(i, view[i], outs[i])
    firsts = {}
    while len(firsts) < n and time.monotonic() - tr < 60:
        for c in eng.poll(0.02):
            if c.text and c.index not in firsts: firsts[c.index] = time.monotonic() - tr
    eng.abort_all()
    while eng._call.stream is not None and not (eng._call.stream.done.is_set() and not eng._call.stream.open) and time.monotonic() - tr < 90:
        eng.poll(0.05)
    tl = eng.turn_log[mark:]
    cont = dict(all_s=round(max(firsts.values()), 4) if firsts else None, per_sample=summary(list(firsts.values())),
                engine_first_token_s=summary([t['first_token_s'] for t in tl]), prompt_tokens=summary([t['prompt_tokens'] for t in tl]),
                reused=summary([t['reused'] for t in tl]), appended=summary([t['appended'] for t in tl]),
                cached_tokens=summary([t['cached_tokens'] for t in tl]), got=len(firsts))
    # fresh prompts of the same lengths: random ids never seen (no prefix to reuse), through lmdeploy's own request path
    pipe, rng = eng.pipe, random.Random(seed0)
    lens = [t['prompt_tokens'] for t in tl] or [at] * n
    cls = getattr(pipe, 'GenerationConfig', None)
    gens = [generation_config(SamplingConfig(max_new_tokens=1), seed0 + k, True, cls) for k in range(len(lens))]
    sessions = [pipe.session() for _ in lens]
    ids = [[rng.randrange(1000, 150000) for _ in range(L)] for L in lens]
    tf = time.monotonic(); ff = {}
    it = pipe._infer(iter([dict(session_id=s, messages=None, input_ids=x, gen_config=g, stream_response=True)
                           for s, x, g in zip(sessions, ids, gens)]), multiplex=True)
    for r in it:
        if (r.generate_token_len or 0) > 0 and r.index not in ff: ff[r.index] = time.monotonic() - tf
    for s in sessions:
        try: s.close()
        except Exception: pass
    fresh = dict(all_s=round(max(ff.values()), 4) if ff else None, per_sample=summary(list(ff.values())), got=len(ff),
                 prompt_tokens=summary(lens))
    ratio = round(cont['all_s'] / fresh['all_s'], 4) if cont['all_s'] and fresh['all_s'] else None
    return dict(n=n, paused_at=at, out_tokens=args.out_tokens, continued=cont, fresh=fresh, continued_vs_fresh_all=ratio)


def run_solver_tir(eng, args, deadline: float) -> dict:
    "(c) TIR questions through Solver + LmdeployEngine with scripted tool calls, stopped by their time limit."
    from typing import get_args
    import aimo2_nb.config as C
    from aimo2_nb.engines import base
    if 'tir' not in get_args(C.PromptKind) or not hasattr(base, 'supports_turns') or not hasattr(C, 'ToolConfig'):
        return dict(skipped="this tree's solver has no TIR (prompt kind 'tir', supports_turns, ToolConfig)")
    from aimo2_nb.solver import Solver
    cfg = C.RunConfig()
    tir = C.BUILTIN_PROMPTS['tir'] if hasattr(C, 'BUILTIN_PROMPTS') else C.PromptSpec('tir')
    cfg.prompts.list = [dataclasses.replace(tir, count=args.solver_samples)]
    cfg.sampling.max_new_tokens = 4096
    cfg.tools = C.ToolConfig(calls=4, timeout_s=args.tool_timeout, output_chars=600, total_s=60.0)
    limit = args.solver_limit
    cfg.speed = C.SpeedConfig([C.Tier(3, args.solver_samples, limit, 8)], adaptive=False)
    b = cfg.budget
    b.total_s, b.reserve_s, b.n_questions, b.min_question_s, b.drain_s = (limit + 2) * args.questions + 5, 0.0, args.questions, 0.0, 2.0
    cfg.trace.chunks = 'none'
    out_dir = Path(os.environ['OUT']) if os.environ.get('OUT') else args.log_dir
    wrap = InjectCode(eng, tir_plan)
    s = Solver(wrap, cfg, trace_path=str(out_dir / 'tir-solver-trace.jsonl'))
    per = []
    for q in range(args.questions):
        if time.time() + limit + 5 > deadline: per.append(dict(q=q, skipped='no time left')); continue
        t0 = time.monotonic()
        r = s.solve(f'Find the remainder when {q + 7}^{q + 100} is divided by 1000.', f'tir{q}')
        wall = time.monotonic() - t0
        calls = [e for e in r.trace if getattr(e, 'kind', '') == 'tool_call']
        fin = {}
        for x in r.samples: fin[x['finish']] = fin.get(x['finish'], 0) + 1
        stops = wrap.stops[-1] if wrap.stops else {}
        ph = {}
        for v in stops.values(): ph[v] = ph.get(v, 0) + 1
        # give the engine a moment, then the question's samples must all be over (no stream left)
        call = eng._call
        t1 = time.monotonic()
        while call is not None and call.stream is not None and call.stream.t.is_alive() and time.monotonic() - t1 < 10:
            time.sleep(0.05)  # the question's stream thread ends once every sample (turns included) is over
        per.append(dict(q=q, reason=r.reason, answer=r.answer, elapsed=round(r.elapsed, 3), wall=round(wall, 3),
                        limit=round(r.plan.limit_s, 3) if r.plan else None,
                        in_time=bool(r.plan and r.elapsed <= r.plan.limit_s + 0.05), tokens=r.tokens,
                        tokens_after_stop=getattr(r, 'tokens_after_stop', None), finishes=fin, phases_at_stop=ph,
                        tool_calls=len(calls), tool_status=sorted({getattr(e, 'status', '') for e in calls}),
                        tool_outputs=[getattr(e, 'output', '')[:80] for e in calls[:3]],
                        stream_ended=bool(call is None or call.stream is None or not call.stream.t.is_alive()),
                        turn_threads_alive=sum(1 for t in threading.enumerate() if t.name.startswith('lmdeploy-turn')),
                        continued_turns_so_far=len(eng.turn_log),
                        errors=[getattr(e, 'message', '')[:200] for e in r.trace if getattr(e, 'kind', '') == 'error'][:3]))
        log('tir question', per[-1])
    try: s.close()
    except Exception: pass
    done = [p for p in per if 'reason' in p]
    seen = {k for p in done for k in p['phases_at_stop']}
    return dict(limit_s=limit, samples=args.solver_samples, questions=per, all_in_time=bool(done) and all(p['in_time'] for p in done),
                abort_paths=sorted(seen), every_abort_path=seen >= {'generating', 'waiting', 'continuing'},
                all_aborted=bool(done) and all(set(p['finishes']) <= {'abort'} for p in done),
                tool_calls=sum(p['tool_calls'] for p in done), streams_ended=bool(done) and all(p['stream_ended'] for p in done),
                turn_threads_left=max([p['turn_threads_alive'] for p in done] or [0]))


def worker(args) -> None:
    out = Path(args.worker_out)
    res = dict(**G.device_info(args.dry_run), stages={}, errors=[])
    save = lambda: G.write_json(res, out)
    deadline = args.worker_deadline
    save()
    t0 = time.time()
    eng = make_engine(args, args.model_path)
    eng.load()
    res['engine_start_s'], res['backend'] = round(time.time() - t0, 1), eng.backend
    enc = lambda s: eng.pipe.async_engine.tokenizer.encode(s, add_bos=False)
    t0 = time.time()
    res['warm_up'] = eng.warm_up(reqs(args.n, 32, 99))
    save()

    def stage(key, need_s, fn):
        left = deadline - time.time()
        if left < need_s: res['stages'][key] = dict(skipped=f'{left:.0f}s left, needs ~{need_s:.0f}s'); save(); return
        t = time.time()
        try: res['stages'][key] = fn(left)
        except Exception as e:
            res['stages'][key] = dict(error=f'{type(e).__name__}: {e}', trace=traceback.format_exc()[-3000:])
            try: eng.abort_all()
            except Exception: pass
        res['stages'][key]['stage_s'] = round(time.time() - t, 1)
        log(key, json.dumps(res['stages'][key], default=str)[:1500]); save()

    # (a) plain / turns alternating; each round's tool outputs made before it starts
    rounds = []
    def a_round(k):
        turns = k % 2 == 1
        seed0 = 30_000 + 100 * k
        outs = {(i, j): output_block(enc, args.out_tokens, seed0 * 10 + 7 * i + j) for i in range(args.n)
                for j in range(args.new_tokens // args.every)} if turns else {}
        def go(left):
            r = run_round(eng, args, seed0, turns, outs, max(20.0, min(left - 15, 240)))
            rounds.append(r); return r
        return go
    for k in range(args.rounds):
        stage(f'a{k}_' + ('turns' if k % 2 else 'plain'), args.round_need_s, a_round(k))
    plain = [r['tok_s'] for r in rounds if not r['turns'] and r.get('all_finished')]
    turn = [r['tok_s'] for r in rounds if r['turns'] and r.get('all_finished')]
    if plain and turn:
        res['tok_s_plain'], res['tok_s_turns'] = round(sum(plain) / len(plain), 1), round(sum(turn) / len(turn), 1)
        res['turns_vs_plain'], res['goal_turns_vs_plain'] = round(res['tok_s_turns'] / res['tok_s_plain'], 4), 0.90
    save()
    stage('b_ttft', args.ttft_need_s, lambda left: run_ttft(eng, args, enc, 50_000, max(20.0, min(left - 15, 120))))
    b = res['stages'].get('b_ttft', {})
    res['ttft_continued_all_s'] = b.get('continued', {}).get('all_s'); res['ttft_fresh_all_s'] = b.get('fresh', {}).get('all_s')
    stage('c_solver_tir', args.solver_need_s, lambda left: run_solver_tir(eng, args, time.time() + left - 10))
    c = res['stages'].get('c_solver_tir', {})
    res['tir_every_abort_path'], res['tir_all_in_time'] = c.get('every_abort_path'), c.get('all_in_time')
    res['abort_stats'] = eng.abort_stats()
    t0 = time.time()
    try: eng.close()
    except Exception as e: res['errors'].append(f'close: {type(e).__name__}: {e}')
    res['close_s'] = round(time.time() - t0, 1)
    save()
    sys.stdout.flush(); os._exit(0)  # lmdeploy's atexit hooks may wait on threads; the results are written


# ------------------------------------------------------------------------------------------------ parent side
def gpu_processes() -> list | str:
    "Compute processes on the GPUs now (nvidia-smi), without touching CUDA here."
    try:
        p = subprocess.run(['nvidia-smi', '--query-compute-apps=pid,process_name,used_memory', '--format=csv,noheader'],
                           capture_output=True, text=True, timeout=30)
        return [l.strip() for l in p.stdout.splitlines() if l.strip()]
    except Exception as e: return f'no nvidia-smi ({type(e).__name__})'


def group_alive(pgid: int) -> bool:
    try: os.killpg(pgid, 0); return True
    except ProcessLookupError: return False
    except PermissionError: return True


def main(argv=None) -> int:
    ap = G.rounds_parser('gpu_tir.py', __doc__, '(a): rounds, plain and turns alternating (even)', 0.004)
    ap.add_argument('--every', type=int, default=512, help='(a): a tool call every this many tokens')
    ap.add_argument('--out-tokens', type=int, default=100, help='tokens of each output block fed back')
    ap.add_argument('--ttft-at', type=int, default=1800, help='(b): tokens before the pause')
    ap.add_argument('--questions', type=int, default=3, help='(c): TIR questions')
    ap.add_argument('--solver-samples', type=int, default=16)
    ap.add_argument('--solver-limit', type=float, default=10.0, help='(c): seconds a question')
    ap.add_argument('--tool-timeout', type=float, default=6.0)
    ap.add_argument('--worker-out'); ap.add_argument('--worker-deadline', type=float); ap.add_argument('--model-path', default='')
    ap.add_argument('--log-dir', type=Path)
    args = ap.parse_args(argv)
    args.round_need_s, args.ttft_need_s, args.solver_need_s = 45, 40, args.questions * (args.solver_limit + 4) + 10
    if args.dry_run:  # scaled down: the same code paths in a minute on a CPU
        given = set(a.split('=')[0] for a in (argv if argv is not None else sys.argv[1:]))
        for k, v in dict(new_tokens=256, every=64, out_tokens=40, ttft_at=160, solver_limit=6.0).items():
            if '--' + k.replace('_', '-') not in given: setattr(args, k, v)
        args.round_need_s, args.ttft_need_s, args.solver_need_s = 5, 5, args.questions * (args.solver_limit + 4) + 5
    if args.worker_out:
        worker(args); return 0

    t_start = time.time(); deadline = t_start + args.deadline
    date = datetime.date.today().isoformat()
    name = f"gpu-tir-{date}{'-dry' if args.dry_run else ''}.json"
    out = Path(os.environ['OUT']) if os.environ.get('OUT') else None
    paths = ([] if args.dry_run else [ROOT / 'bench' / name]) + ([out / name] if out else [])
    args.log_dir = Path(f'/tmp/aimo2-gpu-tir-{os.getpid()}'); args.log_dir.mkdir(parents=True, exist_ok=True)
    res = dict(date=date, started=G.now_iso(), dry_run=args.dry_run,
               workload=dict(n=args.n, new_tokens=args.new_tokens, every=args.every, out_tokens=args.out_tokens, rounds=args.rounds,
                             ttft_at=args.ttft_at, weights=args.weights, engine='lmdeploy PyTorch engine, KV int8, ignore_eos'),
               gpu_processes_before=[] if args.dry_run else gpu_processes(), notes=[])
    save = lambda: G.write_json(res, *paths)
    save()
    model = ''
    if not args.dry_run:
        t0 = time.time()
        rc = G.make_model(args, awq=args.weights == 'awq')
        model = args.model_dir + ('-awq' if args.weights == 'awq' else '')
        res['make_model'] = dict(rc=rc, seconds=round(time.time() - t0, 1)); save()
    wout = args.log_dir / 'worker.json'
    wdead = deadline - 15
    raw, passthrough = list(argv if argv is not None else sys.argv[1:]), []
    while raw:  # every option but --deadline (given as '--deadline N' or '--deadline=N') goes to the worker
        a = raw.pop(0)
        if a == '--deadline': raw = raw[1:]
        elif not a.startswith('--deadline='): passthrough.append(a)
    cmd = [sys.executable, str(Path(__file__).resolve()), *passthrough, '--worker-out', str(wout),
           '--worker-deadline', str(wdead), '--model-path', model, '--log-dir', str(args.log_dir)]
    logf = open(args.log_dir / 'worker.log', 'w')
    log('worker:', ' '.join(cmd))
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    rc = None
    while rc is None:
        try: rc = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            if time.time() > wdead + 20: os.killpg(p.pid, signal.SIGKILL); p.wait(); rc = 'killed (over its deadline)'
            else:
                try: res['worker'] = json.loads(wout.read_text()); save()
                except Exception: pass
    try: res['worker'] = json.loads(wout.read_text())
    except Exception as e: res['worker'] = dict(errors=[f'no worker result: {type(e).__name__}: {e}'])
    res['worker_exit'] = rc
    w = res['worker']
    for k in ('device', 'backend', 'engine_start_s', 'tok_s_plain', 'tok_s_turns', 'turns_vs_plain', 'goal_turns_vs_plain',
              'ttft_continued_all_s', 'ttft_fresh_all_s', 'tir_every_abort_path', 'tir_all_in_time'):
        res[k] = w.get(k)
    time.sleep(3)
    res['worker_processes_left'] = group_alive(p.pid)
    if res['worker_processes_left']:
        os.killpg(p.pid, signal.SIGKILL); res['notes'].append('killed processes the worker left behind')
    res['gpu_processes_after'] = [] if args.dry_run else gpu_processes()
    res['no_gpu_process_left'] = (not res['worker_processes_left']) and (res['gpu_processes_after'] == [] or
                                                                        res['gpu_processes_after'] == res['gpu_processes_before'])
    if rc != 0:
        res['notes'].append(f'worker exit {rc}; log tail: ' + (args.log_dir / 'worker.log').read_text(errors='replace')[-2500:])
    res['seconds'] = round(time.time() - t_start, 1)
    save()
    if out is not None:
        parts = []
        for f in sorted(args.log_dir.glob('*.log')):
            parts.append(f'===== {f.name}\n' + f.read_text(errors='replace')[-200_000:])
        (out / 'gpu-tir-logs.txt').write_text('\n'.join(parts))
    keys = ('device', 'backend', 'engine_start_s', 'tok_s_plain', 'tok_s_turns', 'turns_vs_plain', 'ttft_continued_all_s',
            'ttft_fresh_all_s', 'tir_every_abort_path', 'tir_all_in_time', 'no_gpu_process_left', 'worker_exit', 'seconds')
    print(json.dumps({k: res.get(k) for k in keys}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
