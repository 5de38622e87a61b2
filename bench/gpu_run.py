"""One-shot GPU proof of the lmdeploy engine adapter (see bench/GPU.md for the exact device command).

On a one-GPU machine with lmdeploy 0.18 (PyTorch engine) and random-weight models of the DeepSeek-R1-Distill-Qwen-14B
shape with the real R1 tokenizer, measures per configuration (bf16 weights + fp16 KV, bf16 + int8 KV, AWQ + int8 KV):
  (a) raw `stream_infer` throughput vs the same workload through `LmdeployEngine` (goal: adapter/raw >= 0.97)
  (c) tokens generated after an abort (single aborts, abort_all, and aborts of samples queued beyond max_batch_size)
and once (int8 engine):
  (b) the Solver end to end on the 10 AIMO-2 reference questions under a small time limit (random weights give no
      answers: every question must still end in time with the fallback, and its aborts recorded).
Each configuration runs in its own worker process (a clean GPU for the next one, and a hung worker is killed);
every stage is time-guarded and the results file is rewritten after each stage, so a cut-off run still reports.

    python bench/gpu_run.py [--deadline 550]            # on the GPU machine (from the repo root)
    python bench/gpu_run.py --dry-run                   # on any machine: a stand-in pipeline, scaled-down workload
Writes bench/gpu-<date>.json, and $OUT/gpu-<date>.json plus worker logs when OUT is set.
"""
from __future__ import annotations
import argparse, csv, datetime, json, os, platform, signal, subprocess, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GPU_DIR = ROOT / '.gpu'

SHAPE_14B = ['--hidden', '5120', '--layers', '48', '--heads', '40', '--kv', '8', '--inter', '13824', '--vocab', '152064']
CONFIGS = {  # name -> (weights, engine settings); the order of a run is --configs
    'int8': ('bf16', dict(quant_policy=8)),
    'bf16': ('bf16', dict(quant_policy=0)),
    'awq': ('awq', dict(quant_policy=8, model_format='awq')),
}
NEEDS_S = {'int8': 150, 'bf16': 110, 'awq': 130}  # rough minimum worker time (start-up + a/c) kept for each config

def now_iso() -> str: return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')

def log(*a) -> None: print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)

def write_json(obj: dict, *paths: Path) -> None:
    for p in paths:
        if p is None: continue
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + '.tmp'); tmp.write_text(json.dumps(obj, indent=1, default=str)); os.replace(tmp, p)

# ------------------------------------------------------------------------------------------------ worker side
def make_engine(args, name: str, model_dir: str | None):
    from aimo2_nb.engines.lmdeploy import LmdeployConfig, LmdeployEngine
    weights, extra = CONFIGS[name]
    cfg = LmdeployConfig(model=model_dir or '', backend='pytorch', tp=args.tp, max_batch_size=args.batch,
                         cache_max_entry_count=args.cache, max_new_tokens=max(args.new_tokens, args.solver_tokens),
                         **extra)
    factory = None
    if args.dry_run:
        sys.path.insert(0, str(ROOT / 'tests'))  # the stand-in pipeline is a test double, kept with the tests
        from doubles.fake_lmdeploy import FakePipeline
        factory = lambda c: FakePipeline(max_batch_size=c.max_batch_size, step_s=args.fake_step_s, prefill_s=0.05)
    return LmdeployEngine(cfg, pipeline_factory=factory)

def bench_messages(i: int) -> list:
    from aimo2_nb.config import RunConfig
    from aimo2_nb.prompts import messages
    spec = RunConfig().prompts.list[i % 2]
    return messages(spec, 'Let $n$ be the number of ordered triples of positive integers $(a,b,c)$ with $abc = 1000$. '
                          'Find $n$ modulo $1000$.')

def requests(n: int, max_new: int):
    from aimo2_nb.config import SamplingConfig
    from aimo2_nb.engines.base import SampleRequest
    s = SamplingConfig(max_new_tokens=max_new)
    return [SampleRequest(i, bench_messages(i), s, seed=10_000 + i, kind=('code', 'cot')[i % 2]) for i in range(n)]

def run_raw(eng, n: int, max_new: int) -> dict:
    "The workload straight through `pipe.stream_infer` (what the adapter wraps)."
    from aimo2_nb.engines.lmdeploy import generation_config, chat_messages
    pipe = eng.pipe
    reqs = requests(n, max_new)
    cls = getattr(pipe, 'GenerationConfig', None)
    gens = [generation_config(r.sampling, r.seed, True, cls) for r in reqs]
    prompts = [chat_messages(r, eng.cfg.assistant_prefix) for r in reqs]
    t0 = time.monotonic(); first = None; final = {}; nresp = 0
    for r in pipe.stream_infer(prompts, gen_config=gens):
        nresp += 1
        if first is None and r.generate_token_len: first = time.monotonic()
        if r.finish_reason is not None: final[r.index] = (r.finish_reason, r.generate_token_len)
    t1 = time.monotonic()
    tokens = sum(v[1] for v in final.values())
    return dict(n=n, max_new_tokens=max_new, seconds=round(t1 - t0, 3), first_token_s=round((first or t1) - t0, 3),
                tokens=tokens, tok_s=round(tokens / (t1 - t0), 1), responses=nresp,
                finishes=sorted({v[0] for v in final.values()}), all_finished=len(final) == n)

def run_adapter(eng, n: int, max_new: int) -> dict:
    "The same workload through `LmdeployEngine.start/poll` (ignore_eos set on the engine)."
    eng.cfg.ignore_eos = True
    reqs = requests(n, max_new)
    t0 = time.monotonic(); first = None; final = {}; nchunks = 0
    eng.start(reqs)
    while len(final) < n and time.monotonic() - t0 < 600:
        for c in eng.poll(0.05):
            nchunks += 1
            if first is None and c.tokens: first = time.monotonic()
            if c.finish is not None: final[c.index] = (c.finish, c.tokens, c.error)
    t1 = time.monotonic()
    eng.cfg.ignore_eos = False
    tokens = sum(v[1] for v in final.values())
    errs = sorted({v[2] for v in final.values() if v[2]})[:3]
    return dict(n=n, max_new_tokens=max_new, seconds=round(t1 - t0, 3), first_token_s=round((first or t1) - t0, 3),
                tokens=tokens, tok_s=round(tokens / (t1 - t0), 1), chunks=nchunks,
                finishes=sorted({v[0] for v in final.values()}), all_finished=len(final) == n, errors=errs)

def poll_until(eng, pred, limit_s: float, sink: list) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        sink += eng.poll(0.02)
        if pred(): return True
    return False

def run_aborts(eng, n: int, args) -> dict:
    "(c) abort single samples mid-stream, then abort_all; then abort samples still queued beyond max_batch_size."
    out = {}
    eng.cfg.ignore_eos = True
    mark = len(eng.abort_log)
    got: list = []
    eng.start(requests(n, 4096))
    poll_until(eng, lambda: len({c.index for c in got if c.tokens >= 64}) >= n, 30, got)  # everyone decoding
    singles = list(range(0, min(8, n)))
    t_ab = time.monotonic()
    for k, i in enumerate(singles):
        eng.abort(i)
        poll_until(eng, lambda: False, 0.15, got)  # let the others stream in between
    done = lambda: all(any(c.index == i and c.finish for c in got) for i in singles)
    poll_until(eng, done, 10, got)
    single = [r for r in eng.abort_log[mark:] if r['index'] in singles]
    mark2 = len(eng.abort_log)
    eng.abort_all()
    poll_until(eng, lambda: eng._call.stream.done.is_set() and not eng._call.stream.open, 15, got)
    allrecs = eng.abort_log[mark2:]
    agg = lambda xs: dict(n=len(xs), mean=round(sum(xs) / len(xs), 2) if xs else None, max=max(xs) if xs else None)
    out['single'] = dict(tokens_after=agg([r['tokens_after'] for r in single if not r['early']]),
                         seconds=agg([r['seconds'] for r in single if not r['early']]), records=single)
    out['abort_all'] = dict(tokens_after=agg([r['tokens_after'] for r in allrecs if not r['early']]),
                            seconds=agg([r['seconds'] for r in allrecs if not r['early']]),
                            drain_s=round(time.monotonic() - t_ab, 3))
    # queued beyond max_batch_size: lmdeploy 0.18 ignores Session.abort() for them; the adapter re-aborts on first output
    q = n + 4
    got = []; mark3 = len(eng.abort_log); t0 = time.monotonic()
    eng.start(requests(q, 2048))
    queued = list(range(n, q))
    for i in queued: eng.abort(i)
    poll_until(eng, lambda: len({c.index for c in got if c.tokens >= 32}) >= n - 2, 30, got)
    eng.abort_all()
    poll_until(eng, lambda: eng._call.stream.done.is_set() and not eng._call.stream.open, 30, got)
    time.sleep(0.5)
    recs = [r for r in eng.abort_log[mark3:] if r['index'] in queued]
    out['queued'] = dict(n=len(queued), reported_early=sum(1 for c in got if c.index in queued and c.finish == 'abort' and c.tokens == 0),
                         real_ends=[dict(finish=r['finish'], tokens=r['tokens'], seconds=r['seconds']) for r in recs],
                         stream_ended=bool(eng._call.stream.done.is_set()), seconds=round(time.monotonic() - t0, 3))
    eng.cfg.ignore_eos = False
    out['abort_errors'] = eng.abort_errors[:5]
    return out

def run_solver(eng, args, deadline: float) -> dict:
    "(b) the Solver on the reference questions, each under a small limit."
    from aimo2_nb.config import RunConfig, SpeedConfig, Tier
    from aimo2_nb.solver import Solver
    path = GPU_DIR / 'aimo2_reference.csv'
    if not path.exists(): path = ROOT / 'aimo2_nb' / 'problems' / 'aimo2_reference.csv'
    rows = list(csv.DictReader(open(path, encoding='utf-8')))[:args.questions]
    left = deadline - time.time() - 10
    per_q = max(3.0, min(args.solver_limit, left / max(1, len(rows)) - 1.5))
    cfg = RunConfig()
    cfg.sampling.max_new_tokens = args.solver_tokens
    cfg.speed = SpeedConfig([Tier(3, args.solver_samples, per_q, 8)], adaptive=False)
    b = cfg.budget
    b.total_s, b.reserve_s, b.n_questions, b.min_question_s, b.drain_s = per_q * len(rows) + 5, 0.0, len(rows), 0.0, 2.0
    cfg.trace.chunks = 'none'
    out_dir = Path(os.environ['OUT']) if os.environ.get('OUT') else args.log_dir
    trace = str(out_dir / 'solver-trace.jsonl')
    s = Solver(eng, cfg, trace_path=trace)
    per = []
    for row in rows:
        if time.time() + per_q + 3 > deadline:
            per.append(dict(qid=row['id'], skipped='no time left')); continue
        t0 = time.monotonic()
        r = s.solve(row['question'], row['id'], int(row['answer']))
        wall = time.monotonic() - t0
        fin = {}
        for x in r.samples: fin[x['finish']] = fin.get(x['finish'], 0) + 1
        per.append(dict(qid=r.qid, gold=int(row['answer']), answer=r.answer, reason=r.reason, elapsed=round(r.elapsed, 3),
                        wall=round(wall, 3), limit=round(r.plan.limit_s, 3) if r.plan else None,
                        in_time=bool(r.plan and r.elapsed <= r.plan.limit_s + 0.05), tokens=r.tokens,
                        tokens_after_stop=r.tokens_after_stop, samples=len(r.samples), finishes=fin,
                        fallback=bool(r.vote and r.vote.fallback),
                        errors=[e.message[:200] for e in r.trace if e.kind == 'error'][:3]))
        log('solver', per[-1])
    done = [p for p in per if 'reason' in p]
    return dict(limit_s=round(per_q, 3), samples=args.solver_samples, max_new_tokens=args.solver_tokens, questions=per,
                all_in_time=bool(done) and all(p['in_time'] for p in done), finished=len(done), of=len(rows))

def prompt_check(eng) -> dict:
    "The prompt lmdeploy builds for our messages: its tail and BOS count."
    try:
        ae = eng.pipe.async_engine
        p = ae.chat_template.messages2prompt(bench_messages(1))
        ids = ae.tokenizer.encode(p, add_bos=True)
        return dict(template=type(ae.chat_template).__name__, tail=p[-40:], tokens=len(ids),
                    bos_count=sum(1 for t in ids[:3] if t == ae.tokenizer.bos_token_id))
    except Exception as e:
        return dict(error=f"{type(e).__name__}: {e}")

def worker(args) -> None:
    name, deadline = args.worker, args.worker_deadline
    res = dict(config=name, weights=CONFIGS[name][0], settings=CONFIGS[name][1], stages={}, errors=[])
    path = Path(args.worker_out)
    save = lambda: write_json(res, path)
    model_dir = None if args.dry_run else (args.model_dir if CONFIGS[name][0] == 'bf16' else args.model_dir + '-awq')
    if model_dir and CONFIGS[name][0] == 'awq':  # made in the background by the orchestrator
        t0 = time.time()
        while not (Path(model_dir) / 'generation_config.json').exists():  # the maker's last file
            if time.time() > deadline - 60: res['errors'].append('AWQ model not ready'); save(); return
            time.sleep(1)
        res['waited_for_model_s'] = round(time.time() - t0, 1)
    eng = make_engine(args, name, model_dir)

    def stage(key: str, need_s: float, fn):
        left = deadline - time.time()
        if left < need_s:
            res['stages'][key] = dict(skipped=f'{left:.0f}s left, needs {need_s:.0f}s'); save(); return None
        log(name, 'stage', key, f'({left:.0f}s left)')
        t0 = time.monotonic()
        try:
            v = fn()
            res['stages'][key] = v
        except Exception as e:
            res['stages'][key] = dict(error=f"{type(e).__name__}: {e}", tb=traceback.format_exc()[-3000:])
            v = None
        res['stages'].setdefault(key, {})
        if isinstance(res['stages'][key], dict): res['stages'][key]['stage_s'] = round(time.monotonic() - t0, 2)
        save(); log(name, key, json.dumps(res['stages'][key], default=str)[:600])
        return v

    if stage('load', 20, lambda: (eng.load(), dict(backend=eng.backend, load_s=round(eng.load_s, 2)))[1]) is None:
        return
    stage('prompt', 5, lambda: prompt_check(eng))
    stage('warmup', 10, lambda: run_adapter(eng, args.batch, 16))
    est = args.new_tokens * args.step_guess + 10
    raw = stage('raw', est, lambda: run_raw(eng, args.batch, args.new_tokens))
    ada = stage('adapter', est, lambda: run_adapter(eng, args.batch, args.new_tokens))
    if name == args.solver_config:  # the headline ratio: raw measured before and after the adapter run
        raw2 = stage('raw2', est, lambda: run_raw(eng, args.batch, args.new_tokens))
        if raw and raw2 and raw2.get('tok_s'): raw = dict(raw, tok_s=round((raw['tok_s'] + raw2['tok_s']) / 2, 1))
    if raw and ada and raw.get('tok_s'): res['adapter_vs_raw'] = round(ada['tok_s'] / raw['tok_s'], 4)
    save()
    stage('abort', 25, lambda: run_aborts(eng, args.batch, args))
    if name == args.solver_config and args.questions > 0:
        stage('solver', 30, lambda: run_solver(eng, args, deadline))
    res['abort_stats'] = eng.abort_stats()
    save()
    t0 = time.monotonic()
    try: eng.close(timeout=10)
    except Exception as e: res['errors'].append(f"close: {type(e).__name__}: {e}")
    res['close_s'] = round(time.monotonic() - t0, 2)
    save()

# ------------------------------------------------------------------------------------------------ orchestrator
def device_info(dry: bool) -> dict:
    d = dict(python=platform.python_version(), host=platform.node())
    if dry:
        d['device'] = 'cpu (dry run: FakePipeline)'; return d
    try:
        import torch
        d['device'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'
        d['gpus'] = torch.cuda.device_count(); d['torch'] = torch.__version__; d['cuda'] = torch.version.cuda
    except Exception as e: d['device'] = f'unknown ({type(e).__name__}: {e})'
    for m in ('lmdeploy', 'transformers', 'triton'):
        try: d[m] = __import__(m).__version__
        except Exception as e: d[m] = f'not importable: {type(e).__name__}'
    try: d['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version,memory.total', '--format=csv,noheader'],
                                      capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception: pass
    return d

def make_model(args, awq: bool, background: bool = False):
    out = args.model_dir + ('-awq' if awq else '')
    cmd = [sys.executable, str(GPU_DIR / 'make_random_qwen2.py'), '--out', out, '--tok', str(GPU_DIR / 'r1-tokenizer'),
           '--mode', 'direct', *SHAPE_14B] + (['--awq'] if awq else [])
    log('make model:', ' '.join(cmd))
    logf = open(args.log_dir / f"make-{'awq' if awq else 'bf16'}.log", 'w')
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    if background: return p
    p.wait(timeout=120)
    return p.returncode

def run_worker(args, name: str, worker_deadline: float, on_progress=None) -> dict:
    wout = args.log_dir / f'worker-{name}.json'
    if wout.exists(): wout.unlink()
    cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', name, '--worker-deadline', str(worker_deadline),
           '--worker-out', str(wout), '--log-dir', str(args.log_dir)] + args.passthrough
    logf = open(args.log_dir / f'worker-{name}.log', 'w')
    log('worker', name, f'until +{worker_deadline - time.time():.0f}s')
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    kill_at = max(time.time() + 5, worker_deadline + 20)
    rc = None
    while rc is None:
        try: rc = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            if time.time() > kill_at:
                os.killpg(p.pid, signal.SIGKILL); p.wait(); rc = 'killed (over its deadline)'
            elif on_progress is not None:  # partial results reach $OUT even if this whole run is cut off
                try: on_progress(json.loads(wout.read_text()))
                except Exception: pass
    try: res = json.loads(wout.read_text())
    except Exception as e: res = dict(config=name, errors=[f'no worker result: {type(e).__name__}: {e}'])
    res['exit'] = rc
    if rc != 0:
        tail = (args.log_dir / f'worker-{name}.log').read_text(errors='replace')[-2500:]
        res.setdefault('errors', []).append(f'worker exit {rc}; log tail: {tail}')
    return res

def collect_logs(args) -> None:
    "Every log of the run, concatenated (each cut to its last 200 kB), into $OUT/gpu-logs.txt."
    if args.out_dir is None: return
    parts = []
    for f in sorted(args.log_dir.glob('*.log')):
        t = f.read_text(errors='replace')
        parts.append(f"===== {f.name} ({len(t)} chars{', last 200000' if len(t) > 200_000 else ''})\n{t[-200_000:]}")
    (args.out_dir / 'gpu-logs.txt').write_text('\n'.join(parts))

def summarize(result: dict) -> None:
    cfgs = result['configs']
    def pick(name, *keys):
        v = cfgs.get(name, {})
        for k in keys: v = v.get(k, {}) if isinstance(v, dict) else {}
        return v if v != {} else None
    def raw_mean(n):
        v = [x for x in (pick(n, 'stages', 'raw', 'tok_s'), pick(n, 'stages', 'raw2', 'tok_s')) if isinstance(x, (int, float))]
        return round(sum(v) / len(v), 1) if v else None
    result['raw_tok_s'] = {n: raw_mean(n) for n in cfgs}
    result['adapter_tok_s'] = {n: pick(n, 'stages', 'adapter', 'tok_s') for n in cfgs}
    result['adapter_vs_raw'] = {n: cfgs[n].get('adapter_vs_raw') for n in cfgs}
    result['abort_tokens_after_stop'] = {n: dict(single=pick(n, 'stages', 'abort', 'single', 'tokens_after'),
                                                 abort_all=pick(n, 'stages', 'abort', 'abort_all', 'tokens_after'))
                                         for n in cfgs}
    result['abort_seconds'] = {n: pick(n, 'stages', 'abort', 'single', 'seconds') for n in cfgs}
    result['engine_start_s'] = {n: pick(n, 'stages', 'load', 'load_s') for n in cfgs}
    result['backend'] = {n: pick(n, 'stages', 'load', 'backend') for n in cfgs}
    sol = next((c['stages']['solver'] for c in cfgs.values() if isinstance(c.get('stages', {}).get('solver'), dict)), None)
    if sol: result['solver'] = sol
    ok = [v for v in result['adapter_vs_raw'].values() if v is not None]
    result['goal_adapter_vs_raw_0.97'] = bool(ok) and min(ok) >= 0.97

def rounds_parser(prog: str, doc: str, rounds_help: str, fake_step_s: float) -> argparse.ArgumentParser:
    "The options every on/off-rounds GPU script shares (gpu_logprobs.py, gpu_tir.py): one engine, 16 samples, alternating rounds."
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dry-run', action='store_true', help='stand-in pipeline on CPU, scaled-down workload')
    ap.add_argument('--deadline', type=float, default=540, help='seconds this script may run in all')
    ap.add_argument('--weights', choices=('awq', 'bf16'), default='awq')
    ap.add_argument('--n', type=int, default=16, help='samples decoded together')
    ap.add_argument('--new-tokens', type=int, default=2048)
    ap.add_argument('--rounds', type=int, default=4, help=rounds_help)
    ap.add_argument('--model-dir', default='/dev/shm/aimo2-r1-14b', help='where the random model is written (AWQ: +"-awq")')
    ap.add_argument('--fake-step-s', type=float, default=fake_step_s, help='dry run: seconds per fake decode step')
    return ap

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='gpu_run.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dry-run', action='store_true', help='stand-in pipeline on CPU, scaled-down workload')
    ap.add_argument('--deadline', type=float, default=550, help='seconds this script may run in all')
    ap.add_argument('--configs', default='int8,bf16,awq', help='comma list of: ' + ', '.join(CONFIGS))
    ap.add_argument('--solver-config', default='int8', help='the configuration whose engine also runs (b)')
    ap.add_argument('--model-dir', default='/dev/shm/aimo2-r1-14b', help='where the random model is written (AWQ: +"-awq")')
    ap.add_argument('--tp', type=int, default=1, help='tensor parallel GPUs (Kaggle runs tp=4 on 4x L4)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--new-tokens', type=int, default=1024)
    ap.add_argument('--cache', type=float, default=0.8, help='cache_max_entry_count')
    ap.add_argument('--questions', type=int, default=10)
    ap.add_argument('--solver-limit', type=float, default=10.0, help='largest per-question limit for (b), seconds')
    ap.add_argument('--solver-samples', type=int, default=16)
    ap.add_argument('--solver-tokens', type=int, default=4096)
    ap.add_argument('--step-guess', type=float, default=0.016, help='seconds per decode step, to size the time guards')
    ap.add_argument('--fake-step-s', type=float, default=0.013, help='dry run: seconds per fake decode step')
    ap.add_argument('--worker', choices=list(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument('--worker-deadline', type=float, help=argparse.SUPPRESS)
    ap.add_argument('--worker-out', help=argparse.SUPPRESS)
    ap.add_argument('--log-dir', help='scratch folder for logs and worker results (default /tmp/aimo2-gpu-run-PID)')
    args = ap.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.dry_run and '--new-tokens' not in given: args.new_tokens = 128
    if args.dry_run and '--solver-limit' not in given: args.solver_limit = 3.0
    out_dir = Path(os.environ['OUT']) if os.environ.get('OUT') else None
    if out_dir is None and args.dry_run:  # a dry run leaves nothing in the tree
        import tempfile; out_dir = Path(tempfile.mkdtemp(prefix='aimo2-gpu-dry-'))
    args.out_dir = out_dir
    # logs and worker results live in a scratch folder; $OUT gets 3 files ($OUT returns at most 8)
    args.log_dir = Path(args.log_dir or f'/tmp/aimo2-gpu-run-{os.getpid()}')
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args)
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(0)  # lmdeploy's atexit hooks may wait on threads; the results are written

    names = [n.strip() for n in args.configs.split(',') if n.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if bad: ap.error(f"--configs: unknown configuration {bad[0]!r} (known: {', '.join(CONFIGS)})")
    args.passthrough = list(given)
    t_start = time.time(); deadline = t_start + args.deadline
    date = datetime.date.today().isoformat()
    name = f'gpu-{date}{f"-tp{args.tp}" if args.tp > 1 else ""}{"-dry" if args.dry_run else ""}.json'
    paths = ([] if args.dry_run else [ROOT / 'bench' / name]) + ([out_dir / name] if out_dir else [])
    result = dict(date=date, started=now_iso(), dry_run=args.dry_run, **device_info(args.dry_run),
                  workload=dict(batch=args.batch, new_tokens=args.new_tokens, model='DeepSeek-R1-Distill-Qwen-14B shape, random weights',
                                engine=f'lmdeploy PyTorch engine, tp={args.tp}, prefix caching', cache_max_entry_count=args.cache),
                  configs={}, notes=[])
    def save():
        summarize(result); write_json(result, *paths); collect_logs(args)
    save()
    awq_proc = None
    if not args.dry_run:
        try:
            import torch
            if not torch.cuda.is_available(): result['notes'].append('no CUDA device: nothing measured'); save(); return 1
        except Exception as e:
            result['notes'].append(f'torch not importable: {e}'); save(); return 1
        t0 = time.time()
        if any(CONFIGS[n][0] == 'bf16' for n in names):
            rc = make_model(args, awq=False)
            result['make_bf16'] = dict(rc=rc, seconds=round(time.time() - t0, 1))
            save()
        if 'awq' in names: awq_proc = make_model(args, awq=True, background=True)
    for k, name in enumerate(names):
        later = sum(NEEDS_S[n] for n in names[k + 1:])
        left = deadline - time.time()
        if left < min(NEEDS_S[name], 60):
            result['configs'][name] = dict(config=name, skipped=f'{left:.0f}s left'); save(); continue
        wdl = deadline - min(later, max(0, left - NEEDS_S[name]))
        result['configs'][name] = run_worker(args, name, wdl, lambda part: (result['configs'].__setitem__(name, part), save()))
        save()
    if awq_proc is not None and awq_proc.poll() is None: awq_proc.kill()
    result['finished'] = now_iso(); result['seconds'] = round(time.time() - t_start, 1)
    save()
    log('wrote', ', '.join(map(str, paths)))
    print(json.dumps({k: result.get(k) for k in ('device', 'backend', 'engine_start_s', 'raw_tok_s', 'adapter_tok_s',
                                                  'adapter_vs_raw', 'abort_tokens_after_stop')}, indent=1, default=str))
    if 'solver' in result:
        s = result['solver']
        print('solver:', dict(limit_s=s['limit_s'], finished=s['finished'], of=s['of'], all_in_time=s['all_in_time']))
    return 0

if __name__ == '__main__':
    sys.exit(main())
