"""CPU scaling of `evaluate_units` over Ray: the same units in one process, on 1 Ray worker and on 2 Ray workers.

The engine is the model-free scripted engine on a real clock (each sample waits `--delay` seconds, then streams a
boxed answer), so a unit's time is engine time, not CPU: what is measured is what Ray and the driver add, and how
close N workers come to N times one. Writes bench/eval-ray-cpu.json.

    python bench/eval_ray_cpu.py [--units 8] [--questions 5] [--delay 0.3]
"""
from __future__ import annotations
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='eval_ray_cpu.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--units', type=int, default=12, help='full runs (repeats)')
    ap.add_argument('--questions', type=int, default=5, help='questions per run')
    ap.add_argument('--delay', type=float, default=0.3, help='seconds before each sample answers')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'eval-ray-cpu.json'))
    a = ap.parse_args(argv)
    import ray
    from aimo2_nb.core import RealClock
    from aimo2_nb.config import RunConfig, PromptConfig, PromptSpec, SpeedConfig, Tier
    from aimo2_nb.engines.replay import ScriptedEngine
    from aimo2_nb import eval_ray as R
    cfg = RunConfig()
    cfg.prompts = PromptConfig([PromptSpec('cot', 'sys', '', '', 4)])
    cfg.speed = SpeedConfig([Tier(3, 4, 30.0, 4, [])], adaptive=False)
    cfg.budget.total_s, cfg.budget.reserve_s = 3600, 10
    tmp = Path(tempfile.mkdtemp(prefix='eval-ray-bench-'))
    csv = tmp / 'q.csv'
    csv.write_text('id,question,answer\n' + ''.join(f'q{i},What is {i}+{i}?,{2 * i}\n' for i in range(a.questions)))
    plan = R.EvalPlan(repeats=a.units)
    delay = a.delay
    engine = lambda: ScriptedEngine(delay_s=delay, tok_s=400, clock=RealClock())
    res = dict(date=time.strftime('%Y-%m-%d'), host=platform.node(), cpus=os.cpu_count(), python=platform.python_version(),
               ray=ray.__version__, units=a.units, questions_per_unit=a.questions, delay_s=a.delay, runs={})
    def timed(name, **kw):
        t0 = time.monotonic()
        m = R.evaluate_units(csv, cfg, engine, tmp / name, plan, progress=False, plots=False, **kw)
        wall = time.monotonic() - t0
        assert m['units']['ok'] == a.units, m['units']
        walls = [r['wall_s'] for r in R.E.read_jsonl(tmp / name / 'units.jsonl')]
        res['runs'][name] = dict(wall_s=round(wall, 2), units_per_s=round(a.units / wall, 3),
                                 unit_wall_s_mean=round(sum(walls) / len(walls), 3))
        print(f"{name}: {wall:.2f}s ({a.units / wall:.2f} units/s)", flush=True)
    timed('local')
    t0 = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, namespace='aimo2', log_to_driver=False)
    res['ray_init_s'] = round(time.monotonic() - t0, 2)
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    timed('ray_1_worker', ray_address='auto', workers=1)
    timed('ray_2_workers', ray_address='auto', workers=2)
    ray.shutdown()
    r = res['runs']
    res['speedup_2_vs_1'] = round(r['ray_1_worker']['wall_s'] / r['ray_2_workers']['wall_s'], 3)
    res['per_worker_efficiency_2'] = round(res['speedup_2_vs_1'] / 2, 3)
    res['ray_1_vs_local'] = round(r['local']['wall_s'] / r['ray_1_worker']['wall_s'], 3)
    # a unit's own time on a worker vs in the single process: what N workers give once they are up
    res['unit_time_local_vs_ray_2'] = round(r['local']['unit_wall_s_mean'] / r['ray_2_workers']['unit_wall_s_mean'], 3)
    res['note'] = ('wall time includes starting the workers (actor start, module import); the scripted engine waits '
                   'on a real clock, so this measures the overhead of Ray and of the driver, not model compute')
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    print(json.dumps(res, indent=1))
    return 0

if __name__ == '__main__': sys.exit(main())
