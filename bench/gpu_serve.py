"""GPU proof of multi-GPU serving (issue 18): the BUILT submission notebook, unchanged, under the stand-in gateway.

On a lent machine with 2 or more GPUs, for each variant of the engine settings (`as_built`: the AIMO-2 config's
engine as built, backend left at TurboMind; `pytorch`: `backend: pytorch`), with tp=2:
  - a wheels dataset and a model are laid out as Kaggle mounts them (`$AIMO2_INPUT_ROOT`): lmdeploy 0.18 (repacked
    without TurboMind: the image is CUDA 13) is installed BY THE NOTEBOOK from the wheels folder, offline;
  - the notebook runs in a real Jupyter kernel (nbclient + ipykernel: its main thread has a running asyncio loop, as
    on Kaggle), the stand-in gateway (tests/stubs) calls `predict` from its worker thread, on the 10 reference problems;
  - recorded: every row valid and in time (stub log), which thread served, every question's reason and tokens from the
    trace (answered by the engine, not by the no-engine fallback), the engine_load events (backend decided, seconds),
    tokens after the stop decisions (abort quality), the notebook's exit, and the GPU processes left afterwards.
Random weights never box an answer, so every answer is the vote's fallback: "answered by the engine" means the
question ran on the engine (samples generated tokens and were stopped by the question's limit).

    python bench/gpu_serve.py --deadline 560        # on the GPU machine, from the repo root (see bench/GPU.md)
Writes $OUT/gpu-serve-<date>.json (and bench/ when OUT is unset), the executed notebooks' text output and traces.
"""
from __future__ import annotations
import argparse, datetime, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / '.gpu'
OUT = Path(os.environ['OUT']) if os.environ.get('OUT') else None
SHAPE_14B = ['--hidden', '5120', '--layers', '48', '--heads', '40', '--kv', '8', '--inter', '13824', '--vocab', '152064']
MODEL_HANDLE = 'aimo2-nb/r1-14b-random/transformers/awq/1'
WHEELS = 'aimo2-nb/aimo2-wheels'


def log(*a) -> None: print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def gpu_apps() -> list[str]:
    "GPU compute processes now (nvidia-smi)."
    r = subprocess.run(['nvidia-smi', '--query-compute-apps=pid,process_name,used_memory', '--format=csv,noheader'],
                       capture_output=True, text=True)
    return [l.strip() for l in r.stdout.splitlines() if l.strip()] if r.returncode == 0 else [f'nvidia-smi failed: {r.stderr.strip()}']


def lay_out_inputs(root: Path, model: Path) -> None:
    "Kaggle's 2026 input layout: the wheels dataset (with its install list) and the model, under `root`."
    wd = root / 'datasets' / WHEELS
    wd.mkdir(parents=True, exist_ok=True)
    names = []
    for w in sorted((ROOT / '.whl').glob('*.whl')):
        if w.name.split('-')[0].lower() in ('pytest', 'pluggy', 'iniconfig', 'pygments'): continue
        shutil.copy(w, wd / w.name); names.append(w.name)
    sys.path.insert(0, str(ROOT))
    from aimo2_nb.kaggle_push import wheel_list  # the list `aimo2 wheels` writes: name==version lines
    (wd / 'aimo2-wheels.txt').write_text(wheel_list(wd, []))
    md = root / 'models' / MODEL_HANDLE
    md.parent.mkdir(parents=True, exist_ok=True)
    if not md.exists(): md.symlink_to(model)


def make_model(out: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(GPU_DIR / 'make_random_qwen2.py'), '--out', str(out), '--tok', str(GPU_DIR / 'r1-tokenizer'),
                    '--mode', 'direct', *SHAPE_14B, '--awq'], check=True)
    return time.monotonic() - t0


def config_yaml(variant: str, tp: int, trace: str) -> str:
    import yaml
    engine = {'kind': 'lmdeploy', 'tp': tp, 'quant_policy': 8, 'max_new_tokens': 2048, 'cache_max_entry_count': 0.5}
    if variant == 'pytorch': engine['backend'] = 'pytorch'
    cfg = {'serve': {'wheels_dataset': WHEELS, 'model': MODEL_HANDLE, 'trace_path': trace, 'load_timeout_s': 300.0,
                     'grace_s': 5.0},
           'run': {'engine': engine,
                   'sampling': {'max_new_tokens': 2048},
                   'budget': {'total_s': 420.0, 'n_questions': 10, 'reserve_s': 10.0},
                   'speed': {'adaptive': False, 'default_speed': 3,
                             'tiers': [{'speed': 3, 'samples': 16, 'timeout_s': 6.0, 'min_answers': 9}]}}}
    return yaml.safe_dump(cfg)


def run_variant(variant: str, tp: int, inputs: Path, csv: Path, timeout: float) -> dict:
    work = Path(f'/tmp/serve-{variant}'); shutil.rmtree(work, ignore_errors=True); work.mkdir()
    (work / 'config.yaml').write_text(config_yaml(variant, tp, str(work / 'trace.jsonl')))
    env = {**os.environ, 'AIMO2_CONFIG': str(work / 'config.yaml'), 'AIMO2_KAGGLE_EVALUATION': str(ROOT / 'tests' / 'stubs'),
           'AIMO2_LOCAL_CSV': str(csv), 'AIMO2_INPUT_ROOT': str(inputs), 'KAGGLE_EVALUATION_STUB_LOG': str(work / 'stub_log.json'),
           'KAGGLE_EVALUATION_STUB_DEADLINE_S': '60'}
    code = f'''
import nbformat, nbclient, sys
nb = nbformat.read({str(ROOT / 'submission' / 'aimo2-submission.ipynb')!r}, as_version=4)
client = nbclient.NotebookClient(nb, timeout={int(timeout)}, kernel_name='python3', resources={{'metadata': {{'path': {str(work)!r}}}}})
try: client.execute()
finally:
    out = []
    for c in nb.cells:
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream': out.append(o.get('text', ''))
            elif o.get('output_type') == 'error': out.append('ERROR ' + o.get('ename', '') + ': ' + o.get('evalue', '') + '\\n' + '\\n'.join(o.get('traceback', []))[-3000:])
    open({str(work / 'notebook-output.txt')!r}, 'w').write(''.join(out))
'''
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, '-c', code], cwd=work, env=env, capture_output=True, text=True, timeout=timeout + 30)
        rc, err = p.returncode, p.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        rc, err = 'timeout', str(e)[-2000:]
    wall = time.monotonic() - t0
    time.sleep(3)
    res = dict(variant=variant, tp=tp, rc=rc, wall_s=round(wall, 1), stderr_tail=err, gpu_apps_after=gpu_apps())
    out_txt = work / 'notebook-output.txt'
    res['notebook_output_tail'] = out_txt.read_text()[-4000:] if out_txt.exists() else ''
    if (work / 'stub_log.json').exists():
        sl = json.loads((work / 'stub_log.json').read_text())
        res['rows'] = len(sl)
        res['row_seconds'] = [round(r['seconds'], 2) for r in sl]
        res['threads'] = sorted({r['thread'] for r in sl})
        res['any_main_thread'] = any(r['main_thread'] for r in sl)
    if (work / 'submission.parquet').exists():
        import pandas as pd
        sub = pd.read_parquet(work / 'submission.parquet')
        res['submission'] = dict(rows=len(sub), answers=[int(a) for a in sub['answer']], valid=bool(sub['answer'].between(0, 999).all()))
    if (work / 'trace.jsonl').exists():
        evs = [json.loads(l) for l in (work / 'trace.jsonl').read_text().splitlines() if l.strip()]
        res['engine_loads'] = [{k: e.get(k) for k in ('attempt', 'ok', 'why', 'backend', 'seconds', 'error')} | {'settings_backend': e.get('settings', {}).get('backend')}
                               for e in evs if e['kind'] == 'engine_load']
        ends = {e['qid']: e for e in evs if e['kind'] == 'question_end'}
        starts = {e['qid']: e for e in evs if e['kind'] == 'question_start'}
        res['questions'] = [dict(qid=q, reason=e['reason'], answer=e['answer'], tokens=e.get('tokens'), tokens_after_stop=e.get('tokens_after_stop'),
                                 limit_s=starts.get(q, {}).get('limit_s'), samples=starts.get(q, {}).get('samples')) for q, e in ends.items()]
        res['answered_by_engine'] = sum(1 for q in res['questions'] if (q['tokens'] or 0) > 0)
        if OUT: shutil.copy(work / 'trace.jsonl', OUT / f'serve-{variant}-trace.jsonl')
    if OUT and out_txt.exists(): shutil.copy(out_txt, OUT / f'serve-{variant}-notebook.txt')
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--deadline', type=float, default=560.0)
    ap.add_argument('--tp', type=int, default=2)
    ap.add_argument('--variants', default='as_built,pytorch')
    a = ap.parse_args(argv)
    t_start = time.monotonic()
    date = datetime.date.today().isoformat()
    import torch
    res = dict(date=date, device=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
               torch=torch.__version__, python=sys.version.split()[0], tp=a.tp, gpu_apps_before=gpu_apps(), variants={})
    dest = [p for p in [(OUT / f'gpu-serve-{date}.json') if OUT else (ROOT / 'bench' / f'gpu-{date}-serve-tp{a.tp}.json')]]
    def save():
        for p in dest: p.write_text(json.dumps(res, indent=1, default=str))
    model = Path('/dev/shm/m14awq')
    res['model_s'] = round(make_model(model), 1); log('model ready', res['model_s'])
    inputs = Path('/tmp/aimo2-input'); lay_out_inputs(inputs, model)
    csv = GPU_DIR / 'aimo2_reference.csv'
    for v in a.variants.split(','):
        left = a.deadline - (time.monotonic() - t_start)
        if left < 120: res['variants'][v] = {'skipped': f'only {left:.0f}s left'}; save(); continue
        log('variant', v, f'{left:.0f}s left')
        res['variants'][v] = run_variant(v, a.tp, inputs, csv, timeout=min(left - 20, 330))
        save(); log(json.dumps({k: res['variants'][v].get(k) for k in ('rc', 'wall_s', 'rows', 'answered_by_engine', 'engine_loads', 'gpu_apps_after')}, default=str))
    save()
    print(json.dumps(res, indent=1, default=str)[-6000:])
    return 0


if __name__ == '__main__':
    sys.exit(main())
