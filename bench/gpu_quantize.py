"""One-shot GPU proof of `aimo2 quantize` (see bench/GPU-quantize.md for the exact device command).

On a one-GPU machine with lmdeploy 0.18 (PyTorch engine; TurboMind does not run on the lent CUDA 13 image):
  1. make a random-weight model of the Qwen2.5-0.5B shape with the real R1 tokenizer (bf16, .gpu/make_random_qwen2.py);
  2. quantize it with `aimo2 quantize` (lmdeploy's AWQ, calibration blocks cut OFFLINE from tests/fixtures/data text);
  3. check the output layout (AWQ W4 GEMM group 128, what TurboMind loads) and record the size ratio
     (bf16 bytes / AWQ bytes, whole folder and the quantized linear layers alone);
  4. load the AWQ folder with `pipeline(out, backend_config=PytorchEngineConfig(model_format='awq', quant_policy=8))`
     (W4KV8, the seed's serving setup) in a worker process and generate.
Every stage has a time limit inside --deadline, and the JSON is rewritten after each stage, so a cut-off run still
reports what it measured.

    python bench/gpu_quantize.py [--deadline 240]      # on the GPU machine, from the repo root
    python bench/gpu_quantize.py --dry-run             # any machine: a tiny model quantized on CPU, no engine stage
Writes bench/gpu-quantize-<date>.json, and $OUT/gpu-quantize-<date>.json plus the logs when OUT is set.
"""
from __future__ import annotations
import argparse, datetime, json, os, subprocess, sys, tempfile, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GPU_DIR = ROOT / '.gpu'
FIX = ROOT / 'tests' / 'fixtures' / 'data'
CALIB = [FIX / 'generations.jsonl', FIX / 'sft_limo.jsonl', FIX / 'calib.jsonl']
SHAPE_05B = ['--mode', 'transformers', '--hidden', '896', '--layers', '24', '--heads', '14', '--kv', '2', '--inter', '4864',
             '--vocab', '151936', '--tie']

def log(*a) -> None: print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)

def write_json(obj: dict, *paths) -> None:
    for p in paths:
        if p is None: continue
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + '.tmp'); tmp.write_text(json.dumps(obj, indent=1, default=str)); os.replace(tmp, p)

def env() -> dict:
    e = dict(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH', '')])), HF_HUB_OFFLINE='1',
             TOKENIZERS_PARALLELISM='false')
    return {**os.environ, **e}

def run(cmd: list, limit_s: float, logf) -> tuple[int, float]:
    "Run `cmd` with a time limit, output appended to `logf`; (return code or -9 on timeout, seconds)."
    t0 = time.monotonic()
    logf.write(f"\n$ {' '.join(map(str, cmd))}\n"); logf.flush()
    try: rc = subprocess.run(list(map(str, cmd)), stdout=logf, stderr=subprocess.STDOUT, timeout=max(1, limit_s), env=env(), cwd=ROOT).returncode
    except subprocess.TimeoutExpired: rc = -9
    return rc, round(time.monotonic() - t0, 1)

def linear_bytes(src: Path, out: Path) -> dict:
    "Bytes of the quantized linear layers in `out` and of the same layers' weights in `src`."
    from aimo2_nb.quantize import safetensors_header
    def table(d):
        t = {}
        for p in d.glob('*.safetensors'): t.update(safetensors_header(p))
        return t
    a, b = table(src), table(out)
    size = lambda h: h['data_offsets'][1] - h['data_offsets'][0]
    layers = [k[:-len('.qweight')] for k in b if k.endswith('.qweight')]
    q = sum(size(b[f'{l}.{s}']) for l in layers for s in ('qweight', 'qzeros', 'scales'))
    f = sum(size(a[f'{l}.weight']) for l in layers if f'{l}.weight' in a)
    return dict(layers=len(layers), bf16_bytes=f, awq_bytes=q, ratio=round(f / max(1, q), 3))

# ------------------------------------------------------------------------------------------------ engine worker
def worker(out: str, result: str, new_tokens: int) -> int:
    "Load the AWQ folder in lmdeploy (PyTorch engine, int8 KV) and generate; write what happened to `result`."
    res = dict(stage='start')
    try:
        import torch, lmdeploy
        from lmdeploy import pipeline, GenerationConfig, PytorchEngineConfig
        res.update(lmdeploy=lmdeploy.__version__, torch=torch.__version__)
        t0 = time.monotonic()
        cfg = PytorchEngineConfig(model_format='awq', quant_policy=8, cache_max_entry_count=0.2, session_len=4096,
                                  max_batch_size=8)
        pipe = pipeline(out, backend_config=cfg, log_level='WARNING')
        res.update(engine_start_s=round(time.monotonic() - t0, 1), backend=type(pipe.async_engine.engine).__name__
                   if hasattr(pipe, 'async_engine') else None)
        try:
            mods = [type(m).__name__ for m in pipe.async_engine.engine.executor.model_agent.patched_model.modules()]
            res['linear_classes'] = sorted({m for m in mods if 'Linear' in m or 'W4' in m or 'AWQ' in m.upper()})
        except Exception as e: res['linear_classes'] = f'not inspected: {type(e).__name__}'
        prompts = [[{'role': 'user', 'content': f'What is {i} + {i}? Put the answer in \\boxed{{}}.'}] for i in range(4)]
        gens = [GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, do_sample=True, temperature=1.0, top_k=0,
                                 random_seed=100 + i) for i in range(len(prompts))]
        t1 = time.monotonic()
        outs = pipe(prompts, gen_config=gens)
        dt = time.monotonic() - t1
        toks = [o.generate_token_len for o in outs]
        res.update(stage='generated', generated_tokens=toks, finish=[o.finish_reason for o in outs], generate_s=round(dt, 2),
                   tok_s=round(sum(toks) / dt, 1), sample_text=outs[0].text[:200])
        res['ok'] = all(t == new_tokens for t in toks)
        pipe.close()
    except Exception as e:
        res.update(error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc()[-3000:], ok=False)
    Path(result).write_text(json.dumps(res, indent=1, default=str))
    return 0 if res.get('ok') else 1

# ------------------------------------------------------------------------------------------------ driver
def make_tiny_cpu_model(d: Path) -> None:
    "Dry run: a small random Qwen2 with the R1 tokenizer, made on CPU."
    import torch, shutil
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = GPU_DIR / 'r1-tokenizer'
    ids = json.loads((tok / 'gguf_ids.json').read_text())
    cfg = Qwen2Config(vocab_size=151936, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=ids['bos_token_id'], eos_token_id=ids['eos_token_id'])
    cfg.architectures = ['Qwen2ForCausalLM']
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(d)
    for f in ('tokenizer.json', 'tokenizer_config.json'): shutil.copy(tok / f, d)

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--deadline', type=float, default=240, help='seconds for the whole script')
    ap.add_argument('--calib-samples', type=int, default=16)
    ap.add_argument('--calib-seqlen', type=int, default=512)
    ap.add_argument('--new-tokens', type=int, default=64)
    ap.add_argument('--work', default=None, help='where models go (default /dev/shm, else a temp folder)')
    ap.add_argument('--dry-run', action='store_true', help='CPU: tiny model, quantize on CPU, no engine stage')
    ap.add_argument('--worker', nargs=2, metavar=('AWQ_DIR', 'RESULT_JSON'), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker: return worker(a.worker[0], a.worker[1], a.new_tokens)

    t_end = time.monotonic() + a.deadline
    left = lambda reserve=0: t_end - time.monotonic() - reserve
    date = datetime.date.today().isoformat()
    outdir = Path(os.environ['OUT']) if os.environ.get('OUT') else None
    paths = [ROOT / 'bench' / f'gpu-quantize-{date}.json'] if not a.dry_run else []
    if outdir: paths.append(outdir / f'gpu-quantize-{date}.json')
    if a.dry_run and not outdir: paths.append(Path(tempfile.mkdtemp()) / f'gpu-quantize-{date}.json')
    work = Path(a.work) if a.work else (Path('/dev/shm') if Path('/dev/shm').is_dir() and not a.dry_run else Path(tempfile.mkdtemp()))
    src, out = work / 'aimo2-quant-bf16', work / 'aimo2-quant-awq'
    logp = (outdir or paths[-1].parent) / 'gpu-quantize-logs.txt'
    R = dict(date=date, started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             dry_run=a.dry_run, deadline_s=a.deadline, stages={}, ok=False)
    try:
        import torch
        R.update(torch=torch.__version__, cuda=torch.cuda.is_available(),
                 device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')
    except ImportError: R.update(device='no torch')
    save = lambda: write_json(R, *paths)
    save()
    with open(logp, 'a') as logf:
        # 1. the model
        log('stage 1: model ->', src)
        t0 = time.monotonic()
        if a.dry_run:
            try: make_tiny_cpu_model(src); rc = 0
            except Exception: rc = 1; logf.write(traceback.format_exc())
            dt = round(time.monotonic() - t0, 1)
        else:
            rc, dt = run([sys.executable, GPU_DIR / 'make_random_qwen2.py', '--out', src, '--tok', GPU_DIR / 'r1-tokenizer',
                          *SHAPE_05B], min(120, left(60)), logf)
        R['stages']['model'] = dict(rc=rc, seconds=dt, shape='tiny-cpu' if a.dry_run else 'qwen2.5-0.5b', path=str(src))
        save()
        if rc != 0: log('model failed, see', logp); return 1
        # 2. quantize with our command (offline calibration from the fixtures)
        log('stage 2: aimo2 quantize ->', out)
        cmd = [sys.executable, '-c', 'import sys; from aimo2_nb.cli import main; sys.exit(main(["quantize", *sys.argv[1:]]))',
               src, '--out', out, '--overwrite', '--calib-samples', a.calib_samples, '--calib-seqlen', a.calib_seqlen,
               *sum((['--calib', c] for c in CALIB), []), '--device', 'cpu' if a.dry_run else 'cuda']
        rc, dt = run(cmd, min(240, left(0 if a.dry_run else 110)), logf)
        q = dict(rc=rc, seconds=dt, command='aimo2 quantize ' + ' '.join(map(str, cmd[3:])))
        man = out / 'quantize.json'
        if rc == 0 and man.is_file():
            m = json.loads(man.read_text())
            from aimo2_nb.quantize import awq_layout_errors
            q.update(quantize_s=m['seconds'], calib_blocks=m['calib_blocks'], calib_tokens=m['calib_tokens'],
                     bf16_bytes=m['model_bytes'], awq_bytes=m['awq_bytes'], size_ratio=m['size_ratio'],
                     linear_layers=linear_bytes(src, out), layout_errors=awq_layout_errors(out),
                     quantization_config=json.loads((out / 'config.json').read_text()).get('quantization_config'))
        R['stages']['quantize'] = q
        R['size_ratio'] = q.get('size_ratio')
        save()
        if rc != 0: log('quantize failed, see', logp); return 1
        log(f"size ratio {q['size_ratio']} (linear layers {q['linear_layers']['ratio']}), layout errors {q['layout_errors']}")
        # 3. load in lmdeploy (PyTorch engine, W4KV8) and generate
        if a.dry_run:
            R['stages']['engine'] = 'skipped (dry run)'; R['ok'] = not q['layout_errors']; save(); return 0
        res = work / 'engine-result.json'
        log('stage 3: lmdeploy pipeline(model_format=awq, quant_policy=8)')
        rc, dt = run([sys.executable, Path(__file__), '--worker', out, res, '--new-tokens', a.new_tokens], left(5), logf)
        e = json.loads(res.read_text()) if res.is_file() else {}
        R['stages']['engine'] = dict(rc=rc, seconds=dt, **e)
        R['ok'] = rc == 0 and bool(e.get('ok')) and not q['layout_errors']
        save()
    log('ok' if R['ok'] else 'FAILED', json.dumps({k: R[k] for k in ('device', 'size_ratio', 'ok')}))
    return 0 if R['ok'] else 1

if __name__ == '__main__':
    sys.exit(main())
