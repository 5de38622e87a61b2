"""GPU proof of `aimo2 eval --ray`: one Ray worker per GPU vs the single-process engine, in the same call.

On the lent machine (lmdeploy 0.18 PyTorch engine, a random-weight DeepSeek-R1-Distill-Qwen-14B-shape model with the
real R1 tokenizer, int8 KV; see bench/GPU.md for the model and wheels), measures the throughput of whole units (a
unit = one simulated competition run of `--questions` questions, `--samples` samples each, every question run to its
`--q-limit` since random weights never answer):
  (a) single process: `evaluate_units` without Ray on GPU 0 (a subprocess, so the GPU is clean afterwards);
  (b) Ray: a local cluster, one actor per GPU (`gpus_per_worker=1`), `--units-per-worker` units each.
Per unit: generated tokens / unit wall seconds (`tok_s`) and tokens / seconds inside questions (`gen_tok_s`).
Goal: the mean Ray worker's tok_s >= 0.95 x the single process's.

    python bench/gpu_ray.py [--deadline 545]      # on the GPU machine (from the repo root), after the install line
    python bench/gpu_ray.py --dry-run             # on any machine: lmdeploy's stand-in pipeline, 2 CPU workers
Writes bench/gpu-ray-<date>.json, and $OUT/gpu-ray-<date>.json plus the logs when OUT is set.

Ray on the GPU image (cp312, no network): `bash bench/gpu_ray_prep.sh` on the dev machine makes `.ray/` (Ray 2.60.0
trimmed to its core: no Java jar, no dashboard UI; 8 dependency wheels); the device command extracts it into .site.
"""
from __future__ import annotations
import argparse, datetime, functools, json, os, signal, subprocess, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'bench'))
os.environ['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
GPU_DIR = ROOT / '.gpu'
SHAPE_14B = ['--hidden', '5120', '--layers', '48', '--heads', '40', '--kv', '8', '--inter', '13824', '--vocab', '152064']

def log(*a) -> None: print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)

def write_json(obj: dict, *paths) -> None:
    for p in paths:
        if p is None: continue
        p = Path(p); p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + '.tmp'); tmp.write_text(json.dumps(obj, indent=1, default=str)); os.replace(tmp, p)

def fake_engine(settings: dict, step_s: float):
    "Dry run: the lmdeploy adapter over lmdeploy's stand-in pipeline (no GPU)."
    from aimo2_nb.engines.lmdeploy import LmdeployEngine, settings_config
    sys.path.insert(0, str(ROOT / 'tests'))  # the stand-in pipeline is a test double, kept with the tests
    from doubles.fake_lmdeploy import FakePipeline
    cfg = settings_config({k: v for k, v in settings.items() if k != 'kind'})
    return LmdeployEngine(cfg, pipeline_factory=lambda c: FakePipeline(max_batch_size=c.max_batch_size, step_s=step_s, prefill_s=0.05))

def setup(args):
    "The questions CSV, the run config and the engine spec of the workload."
    from aimo2_nb.config import RunConfig, SpeedConfig, Tier
    src = GPU_DIR / 'aimo2_reference.csv'
    if not src.exists(): src = ROOT / 'aimo2_nb' / 'problems' / 'aimo2_reference.csv'
    csv = Path(args.log_dir) / 'questions.csv'
    if src.exists(): csv.write_text(src.read_text(encoding='utf-8'), encoding='utf-8')
    else: csv.write_text('id,question,answer\n' + ''.join(f'q{i},What is {i}+{i}? Think hard.,{2 * i}\n' for i in range(10)))
    cfg = RunConfig()
    cfg.sampling.max_new_tokens = args.tokens
    cfg.speed = SpeedConfig([Tier(3, args.samples, args.q_limit, args.samples)], adaptive=False)
    b = cfg.budget
    b.total_s, b.reserve_s, b.n_questions, b.min_question_s, b.drain_s = args.q_limit * args.questions + 60, 0.0, args.questions, 0.0, 2.0
    cfg.trace.chunks = 'none'  # the trace of a speed run: texts at the end only
    settings = dict(kind='lmdeploy', model=args.model_dir, backend='pytorch', tp=0, quant_policy=8, max_batch_size=args.batch,
                    cache_max_entry_count=args.cache, max_new_tokens=args.tokens, ignore_eos=True)
    cfg.engine = dict(settings)
    engine = functools.partial(fake_engine, settings, args.fake_step_s) if args.dry_run else settings
    return csv, cfg, engine

def unit_rates(run_dir: Path) -> list[dict]:
    "Per finished unit: tokens, wall seconds, tokens per wall second and per second inside questions."
    from aimo2_nb import eval as E
    res = list(E.read_results(run_dir).values())
    out = []
    for rec in E.read_jsonl(run_dir / 'units.jsonl'):
        if rec.get('status') != 'ok': out.append(dict(unit=rec['unit'], status=rec.get('status'), reason=rec.get('reason'))); continue
        rows = [r for r in res if r.get('run', 'csv.0') == rec['run']]
        tok, el = sum(r['tokens'] for r in rows), sum(r['elapsed'] for r in rows)
        out.append(dict(unit=rec['unit'], worker=rec.get('worker'), questions=len(rows), tokens=tok, wall_s=rec.get('wall_s'),
                        tok_s=round(tok / rec['wall_s'], 1) if rec.get('wall_s') else None,
                        gen_tok_s=round(tok / el, 1) if el else None,
                        reasons=sorted({r['reason'] for r in rows})))
    return out

def mean(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return round(sum(xs) / len(xs), 1) if xs else None

def baseline(args) -> None:
    "(a) in a subprocess: the same units in one process, no Ray."
    from aimo2_nb import eval_ray as R
    csv, cfg, engine = setup(args)
    t0 = time.monotonic()
    R.evaluate_units(csv, cfg, engine, Path(args.log_dir) / 'local', R.EvalPlan(repeats=args.local_units), limit=args.questions, progress=False, plots=False)
    write_json(dict(wall_s=round(time.monotonic() - t0, 1)), Path(args.log_dir) / 'local.json')

def run_baseline(args, deadline: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), '--baseline'] + args.passthrough + ['--log-dir', str(args.log_dir)]
    env = dict(os.environ)
    if not args.dry_run: env['CUDA_VISIBLE_DEVICES'] = env.get('CUDA_VISIBLE_DEVICES', '0').split(',')[0]
    logf = open(Path(args.log_dir) / 'local.log', 'w')
    log('single process:', ' '.join(cmd))
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try: rc = p.wait(timeout=max(10, deadline - time.time()))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.wait(); rc = 'killed (deadline)'
    out = dict(exit=rc, units=unit_rates(Path(args.log_dir) / 'local'))
    try: out.update(json.loads((Path(args.log_dir) / 'local.json').read_text()))
    except Exception: pass
    if rc != 0: out['log_tail'] = (Path(args.log_dir) / 'local.log').read_text(errors='replace')[-2500:]
    return out

def run_ray(args, n_gpus: int) -> dict:
    "(b) a local Ray cluster, one worker per GPU."
    import ray
    from aimo2_nb import eval_ray as R
    csv, cfg, engine = setup(args)
    workers = n_gpus if not args.dry_run else 2
    t0 = time.monotonic()
    ray.init(num_cpus=max(2, min(os.cpu_count() or 2, 4 * workers)), num_gpus=0 if args.dry_run else n_gpus,
             include_dashboard=False, namespace='aimo2', log_to_driver=True)
    init_s = time.monotonic() - t0
    m = R.evaluate_units(csv, cfg, engine, Path(args.log_dir) / 'ray', R.EvalPlan(repeats=args.units_per_worker * workers),
                         ray_address='auto', workers=workers, gpus_per_worker=0 if args.dry_run else 1, limit=args.questions,
                         progress=False, plots=False)
    wall = time.monotonic() - t0
    ray.shutdown()
    return dict(workers=workers, ray_init_s=round(init_s, 1), wall_s=round(wall, 1), failed=m['units']['failed'],
                units=unit_rates(Path(args.log_dir) / 'ray'))

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='gpu_ray.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dry-run', action='store_true', help="lmdeploy's stand-in pipeline on CPU, 2 CPU workers")
    ap.add_argument('--deadline', type=float, default=545, help='seconds this script may run in all')
    ap.add_argument('--model-dir', default='/dev/shm/aimo2-r1-14b')
    ap.add_argument('--questions', type=int, default=3, help='questions per unit (one simulated run)')
    ap.add_argument('--q-limit', type=float, default=15.0, help='seconds per question (random weights: every question runs to it)')
    ap.add_argument('--samples', type=int, default=16)
    ap.add_argument('--tokens', type=int, default=4096, help='max new tokens per sample')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--cache', type=float, default=0.8, help='cache_max_entry_count')
    ap.add_argument('--local-units', type=int, default=2, help='units of the single-process run')
    ap.add_argument('--units-per-worker', type=int, default=2)
    ap.add_argument('--fake-step-s', type=float, default=0.013)
    ap.add_argument('--baseline', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--log-dir', help='scratch folder (default /tmp/aimo2-gpu-ray-PID)')
    args = ap.parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    if args.dry_run and '--q-limit' not in given: args.q_limit = 3.0
    args.log_dir = Path(args.log_dir or f'/tmp/aimo2-gpu-ray-{os.getpid()}'); args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.baseline:
        baseline(args); sys.stdout.flush(); os._exit(0)  # lmdeploy's atexit hooks may wait on threads
    args.passthrough = [a for a in given if a != '--baseline']
    t_start = time.time(); deadline = t_start + args.deadline
    out_dir = Path(os.environ['OUT']) if os.environ.get('OUT') else None
    date = datetime.date.today().isoformat()
    name = f"gpu-ray-{date}{'-dry' if args.dry_run else ''}.json"
    paths = ([] if args.dry_run else [ROOT / 'bench' / name]) + ([out_dir / name] if out_dir else [args.log_dir / name])
    from gpu_run import device_info
    res = dict(date=date, dry_run=args.dry_run, **device_info(args.dry_run),
               workload=dict(model='DeepSeek-R1-Distill-Qwen-14B shape, random weights, int8 KV, lmdeploy PyTorch engine',
                             questions_per_unit=args.questions, q_limit_s=args.q_limit, samples=args.samples,
                             max_new_tokens=args.tokens, batch=args.batch), notes=[])
    try: import ray; res['ray'] = ray.__version__
    except Exception as e: res['ray'] = f'not importable: {type(e).__name__}: {e}'
    def save():
        loc, r = res.get('single_process', {}), res.get('ray_workers', {})
        a = mean(u.get('tok_s') for u in loc.get('units', []))
        b = mean(u.get('tok_s') for u in r.get('units', []))
        res['single_tok_s'], res['ray_worker_tok_s'] = a, b
        res['ray_per_worker_vs_single'] = round(b / a, 3) if a and b else None
        res['goal_0.95'] = bool(res['ray_per_worker_vs_single'] and res['ray_per_worker_vs_single'] >= 0.95)
        write_json(res, *paths)
        if out_dir:
            logs = [f"===== {f.name}\n{f.read_text(errors='replace')[-100_000:]}" for f in sorted(args.log_dir.glob('*.log'))]
            (out_dir / 'gpu-ray-logs.txt').write_text('\n'.join(logs))
    n_gpus = 0
    if not args.dry_run:
        try:
            import torch
            n_gpus = torch.cuda.device_count()
        except Exception as e: res['notes'].append(f'torch: {e}')
        if not n_gpus: res['notes'].append('no CUDA device: nothing measured'); save(); return 1
        t0 = time.time()
        cmd = [sys.executable, str(GPU_DIR / 'make_random_qwen2.py'), '--out', args.model_dir, '--tok', str(GPU_DIR / 'r1-tokenizer'),
               '--mode', 'direct', *SHAPE_14B]
        with open(args.log_dir / 'make-model.log', 'w') as f: rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=180).returncode
        res['make_model'] = dict(rc=rc, seconds=round(time.time() - t0, 1)); save()
        if rc != 0: res['notes'].append('model creation failed (see make-model.log)'); save(); return 1
    # (a) the single process gets the time its units need; (b) gets the rest
    per_unit = args.questions * (args.q_limit + 3)
    a_deadline = min(deadline - (90 + args.units_per_worker * per_unit), time.time() + 100 + args.local_units * per_unit)
    res['single_process'] = run_baseline(args, a_deadline); save()
    log('single process:', res['single_process'].get('units'))
    try: res['ray_workers'] = run_ray(args, n_gpus)
    except Exception as e: res['ray_workers'] = dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
    res['seconds'] = round(time.time() - t_start, 1); save()
    print(json.dumps({k: res.get(k) for k in ('device', 'gpus', 'ray', 'single_tok_s', 'ray_worker_tok_s', 'ray_per_worker_vs_single', 'goal_0.95')}, indent=1))
    return 0

if __name__ == '__main__':
    sys.exit(main())
