"""Latency of the pre-warmed sandbox pool vs a fresh `python -c` per snippet (what the seed did).

    python bench/exec_latency.py [--n 30] [--out bench/exec_latency.json]

Each snippet runs N times one after another (no overlap) in both ways; the time is from submitting the code to
having its result. Writes p50/p95 per snippet and way, and the p50 speed-up, to the JSON file.
"""
from __future__ import annotations
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path
import numpy as np
from aimo2_nb.config import ExecConfig
from aimo2_nb.executor import Executor

SNIPPETS = {
    'plain arithmetic': 'print(sum(i * i for i in range(1000)) % 1000)',
    'sympy factorint': 'import sympy as sp; print(sp.factorint(2**64 - 1))',
    'numpy': 'import numpy as np\na = np.arange(40000, dtype=np.int64).reshape(200, 200) % 97\nprint(int((a @ a).trace()) % 1000)',
}


def pct(xs: list[float]) -> dict[str, float]:
    "p50 and p95 of `xs` in milliseconds."
    return {'p50_ms': round(float(np.percentile(xs, 50)) * 1e3, 2), 'p95_ms': round(float(np.percentile(xs, 95)) * 1e3, 2)}


def time_pool(ex: Executor, code: str, n: int) -> list[float]:
    "Seconds per run of `code` through the pool, `n` runs (after one warm-up)."
    assert ex.submit(code).result().ok
    out = []
    for _ in range(n):
        t = time.perf_counter(); r = ex.submit(code).result(); out.append(time.perf_counter() - t)
        assert r.ok, r
    return out


def time_fresh(preamble: str, code: str, n: int) -> list[float]:
    "Seconds per run of `code` in a fresh interpreter with the seed's imports, `n` runs (after one warm-up)."
    cmd = [sys.executable, '-c', preamble + code]
    subprocess.run(cmd, capture_output=True, check=True)
    out = []
    for _ in range(n):
        t = time.perf_counter(); subprocess.run(cmd, capture_output=True, check=True, timeout=60); out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=30, help='runs per snippet and way')
    ap.add_argument('--out', default=str(Path(__file__).with_name('exec_latency.json')))
    args = ap.parse_args(argv)
    cfg = ExecConfig(workers=1, timeout=30)
    res: dict = {}
    with Executor(cfg) as ex:
        isolation = ex.isolation
        for name, code in SNIPPETS.items():
            pool, fresh = pct(time_pool(ex, code, args.n)), pct(time_fresh(cfg.preamble, code, args.n))
            res[name] = {'pool': pool, 'fresh': fresh, 'speedup_p50': round(fresh['p50_ms'] / pool['p50_ms'], 1)}
    report = {'n': args.n, 'isolation': isolation, 'python': platform.python_version(), 'cpus': os.cpu_count(),
              'machine': platform.platform(), 'snippets': res}
    print(f"{'snippet':<18} {'pool p50':>9} {'pool p95':>9} {'fresh p50':>10} {'fresh p95':>10} {'speedup':>8}   (ms; n={args.n}, isolation={isolation})")
    for name, r in res.items():
        print(f"{name:<18} {r['pool']['p50_ms']:>9.1f} {r['pool']['p95_ms']:>9.1f} {r['fresh']['p50_ms']:>10.1f} {r['fresh']['p95_ms']:>10.1f} {r['speedup_p50']:>7.1f}x")
    Path(args.out).write_text(json.dumps(report, indent=2) + '\n')
    return report


if __name__ == '__main__':
    main()
