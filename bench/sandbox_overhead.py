"""What the issue-12 sandbox costs and what it stops: p50 latency of the pool before and after, measured in one run.

    python bench/sandbox_overhead.py [--before REF] [--n 20] [--rounds 3] [--out bench/sandbox_overhead.json]

`--before` is a git ref whose `aimo2_nb` is the old executor (default: the parent of the sandbox round-2 commit);
the current checkout is "after". Each round runs both sides one after the other in fresh processes (the same
snippets as bench/exec_latency.py, `workers=1`, no overlap), so that both see the same machine load; the p50 ratio
is after / before. It also runs, on each side, code that slips past the audit hook and writes 288 MB into /dev/shm
from a run limited to 256 MB, and reports how much of /dev/shm stays used after the run (before: all of it).
Needs root for the uid and namespace levels (else both sides run at `guard`); CPU only.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tarfile, tempfile, io
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_COMMIT = 'f825ac950c54ed7b019f312aa9caa9e3b43499df'  # "Sandbox round 2 (issue 12)"

CHILD = r'''
import json, os, sys, time, uuid
import numpy as np
import aimo2_nb
assert aimo2_nb.__file__.startswith(sys.argv[2]), aimo2_nb.__file__
from aimo2_nb.config import ExecConfig
from aimo2_nb.executor import Executor
sys.path.insert(0, os.path.join(sys.argv[3], 'bench'))
from exec_latency import SNIPPETS
n = int(sys.argv[1]); out = {}
_d = {}; exec(open(os.path.join(sys.argv[3], 'tests', 'doubles', 'disarm.py')).read(), _d); DISARM = _d['DISARM']  # one copy
with Executor(ExecConfig(workers=1, timeout=30)) as ex:
    out['isolation'] = ex.isolation
    for name, code in SNIPPETS.items():
        assert ex.submit(code).result().ok
        ts = []
        for _ in range(n):
            t = time.perf_counter(); r = ex.submit(code).result(); ts.append(time.perf_counter() - t); assert r.ok, r
        out[name] = ts
with Executor(ExecConfig(workers=1, timeout=30, memory_mb=256)) as ex:
    tag = uuid.uuid4().hex[:8]
    used = lambda: (lambda s: (s.f_blocks - s.f_bfree) * s.f_frsize)(os.statvfs('/dev/shm'))
    u0 = used()
    code = (f'chunk = b"x" * (1 << 20)\nfor i in range(6):\n    with open(f"/dev/shm/aimo2-bench-{tag}-{{i}}", "wb") as f:\n'
            '        for _ in range(48): f.write(chunk)\nprint("written")')
    r = ex.submit(DISARM + code).result()
    out['shm_run'] = r.stdout.strip() or r.error
    out['shm_left_mb'] = round((used() - u0) / 2**20, 1)
    for f in os.listdir('/dev/shm'):
        if f.startswith(f'aimo2-bench-{tag}'): os.unlink(os.path.join('/dev/shm', f))
print(json.dumps(out))
'''


def export_ref(ref: str, dest: Path) -> Path:
    "The `aimo2_nb` package of git `ref`, unpacked under `dest`."
    data = subprocess.run(['git', '-C', str(ROOT), 'archive', ref, 'aimo2_nb'], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as t: t.extractall(dest)
    return dest


def side(path: Path, n: int) -> dict:
    "One side's timings, from a fresh interpreter importing `aimo2_nb` from `path`."
    env = {**os.environ, 'PYTHONPATH': str(path)}
    p = subprocess.run([sys.executable, '-c', CHILD, str(n), str(path), str(ROOT)], capture_output=True, text=True, env=env, cwd=str(path), timeout=1800)
    if p.returncode: raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--before', default=SANDBOX_COMMIT + '^', help='git ref of the old executor')
    ap.add_argument('--n', type=int, default=20, help='runs per snippet, side and round')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--out', default=str(Path(__file__).with_name('sandbox_overhead.json')))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {'before': export_ref(args.before, Path(tmp)), 'after': ROOT}
        runs = {'before': [], 'after': []}
        for _ in range(args.rounds):
            for k in ('before', 'after'): runs[k].append(side(paths[k], args.n))
    from exec_latency import SNIPPETS
    rep: dict = {'before': args.before, 'n': args.n, 'rounds': args.rounds, 'cpus': os.cpu_count(),
                 'isolation': {k: v[0]['isolation'] for k, v in runs.items()},
                 'shm_left_mb_after_256mb_run': {k: v[-1]['shm_left_mb'] for k, v in runs.items()},
                 'shm_run': {k: v[-1]['shm_run'] for k, v in runs.items()}, 'snippets': {}}
    for name in SNIPPETS:
        p50 = {k: round(float(np.percentile([t for r in v for t in r[name]], 50)) * 1e3, 2) for k, v in runs.items()}
        rep['snippets'][name] = {'p50_ms_before': p50['before'], 'p50_ms_after': p50['after'],
                                 'ratio_after_before': round(p50['after'] / p50['before'], 2)}
    Path(args.out).write_text(json.dumps(rep, indent=2) + '\n')
    print(json.dumps(rep, indent=2))
    return rep


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).parent))
    main()
