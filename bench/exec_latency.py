"""Latency of the pre-warmed sandbox pool vs a fresh `python -c` per snippet (what the seed did), and of a call on a
warm executor session (TIR) vs a one-shot pool run.

    python bench/exec_latency.py [--n 30] [--out bench/exec_latency.json]

Each snippet runs N times one after another (no overlap) in each way; the time is from submitting the code to
having its result. Pool runs and calls on a warm session alternate, so that both see the same load; a cold session
is a new session's first call with no pre-started spare (its start-up included). Writes p50/p90/p95 per snippet and
way, the pool's p50 speed-up over fresh, and the session/pool ratio of p50 and p90 (goal: p50 ratio <= 1) to the JSON file.
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
    "p50, p90 and p95 of `xs` in milliseconds."
    return {f'p{q}_ms': round(float(np.percentile(xs, q)) * 1e3, 2) for q in (50, 90, 95)}


def _timed(fut_of) -> float:
    "Seconds from calling `fut_of()` (which submits) to its result, which must be ok."
    t = time.perf_counter(); r = fut_of().result(); dt = time.perf_counter() - t
    assert r.ok, r
    return dt


def time_pool_and_session(ex: Executor, code: str, n: int) -> tuple[list[float], list[float]]:
    "Seconds per run of `code` through the pool and per call on one warm session, `n` of each, alternating (after a warm-up of each)."
    with ex.session() as s:
        _timed(lambda: ex.submit(code)); _timed(lambda: s.submit(code))
        pool, sess = [], []
        for _ in range(n):
            pool.append(_timed(lambda: ex.submit(code))); sess.append(_timed(lambda: s.submit(code)))
    return pool, sess


def time_cold_session(ex: Executor, code: str, n: int) -> list[float]:
    "Seconds from opening a session (no spare ready) to the result of its first call, `n` times."
    out = []
    for _ in range(n):
        t = time.perf_counter()
        with ex.session() as s: r = s.submit(code).result(); out.append(time.perf_counter() - t)
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
            pool, sess = map(pct, time_pool_and_session(ex, code, args.n))
            cold, fresh = pct(time_cold_session(ex, code, args.n)), pct(time_fresh(cfg.preamble, code, args.n))
            res[name] = {'pool': pool, 'session': sess, 'session_cold': cold, 'fresh': fresh,
                         'speedup_p50': round(fresh['p50_ms'] / pool['p50_ms'], 1),
                         'session_vs_pool_p50': round(sess['p50_ms'] / pool['p50_ms'], 3),
                         'session_vs_pool_p90': round(sess['p90_ms'] / pool['p90_ms'], 3)}
    report = {'n': args.n, 'isolation': isolation, 'python': platform.python_version(), 'cpus': os.cpu_count(),
              'machine': platform.platform(), 'load_avg': [round(x, 2) for x in os.getloadavg()], 'snippets': res}
    print(f"{'snippet':<18} {'pool p50':>9} {'pool p90':>9} {'sess p50':>9} {'sess p90':>9} {'sess/pool p50':>13} {'cold p50':>9} "
          f"{'fresh p50':>10} {'speedup':>8}   (ms; n={args.n}, isolation={isolation})")
    for name, r in res.items():
        print(f"{name:<18} {r['pool']['p50_ms']:>9.1f} {r['pool']['p90_ms']:>9.1f} {r['session']['p50_ms']:>9.1f} {r['session']['p90_ms']:>9.1f} "
              f"{r['session_vs_pool_p50']:>13.3f} {r['session_cold']['p50_ms']:>9.1f} {r['fresh']['p50_ms']:>10.1f} {r['speedup_p50']:>7.1f}x")
    Path(args.out).write_text(json.dumps(report, indent=2) + '\n')
    return report


if __name__ == '__main__':
    main()
