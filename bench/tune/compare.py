"""The profiles compared on recorded data: `seed`, `aimo3_prize`, `default` and no early stop, with intervals.

    python bench/tune/compare.py [--bootstrap 50] [--jobs 2]    # writes bench/tune/compare.md and compare.json

Three views of the same policies:
1. stop rules alone ("isolation"): time never binds (huge limits, one fixed tier), so the answers changed vs no
   early stop, the tokens and the time to decision saved are the stop rules' own (the issue's goals);
2. the whole policy on the competition budget (5 h for 50 questions, scaled to the recording) with a decode curve,
   questions in random order, hard first and hard last (hard = more tokens per sample);
3. a run where no sample ever answers (50 questions, the full budget): the time rules alone.
"""
from __future__ import annotations
import argparse, json, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from aimo2_nb.config import profile
from aimo2_nb.simulate import (RecQuestion, RecSample, SimConfig, compare, load_input, no_early_stop, report_table,
                               simulate_run)
from aimo2_nb.tune import apply_settings

PROFILES = ('seed', 'aimo3_prize', 'default')
UNBOUND = {'budget.total_s': 1e8, 'budget.call_limit_s': 1e7, 'budget.cap_s': 1e7, 'speed.adaptive': False,
           'speed.tiers.*.timeout_s': 1e7}
GPTOSS = {'sampling.max_new_tokens': 131072, 'answers.modulus': 100000}
DATA = {  # name: (path, run settings, simulator settings)
    'gpt-oss-120b (73 q, recorded answers)': (ROOT / 'data/traces/gptoss120b-aimo3-answers.csv', GPTOSS, {'curve': 'h100-gptoss120b-est'}),
    'scripted fixture (12 q)': (ROOT / 'tests/fixtures/sim_trace.jsonl', {}, {}),
    'CPU model recording (10 q)': (ROOT / 'tests/fixtures/ref_cpu_trace.jsonl', {}, {}),
    'CPU 0.5B on GSM8K (20 q x 8, log-probabilities)': (ROOT / 'data/traces/cpu-qwen05b-gsm8k20-logprobs.jsonl',
                                                        {'sampling.max_new_tokens': 500}, {}),
}


# The most any stop rule can save: stop each question at its first answer, whatever it is (the earliest moment a rule
# that waits for an answer can stop). Shown with the stop rules alone; the goal of >= 35% tokens and >= 60% time saved
# is out of reach of every rule on a data set where this bound is below it.
FIRST_ANSWER = {'stop.rules': [{'agree': 1, 'among': 1}], 'stop.use_min_answers': False, 'stop.decided': False,
                'stop.sequential': 'off', 'speed.tiers.*.early': []}


def policies(extra: dict, bound: bool = False) -> dict:
    out = {'no early stop': no_early_stop(apply_settings(profile('seed'), extra))}
    out.update({p: apply_settings(profile(p), extra) for p in PROFILES})
    if bound: out['bound: stop at the first answer'] = apply_settings(profile('seed'), {**extra, **FIRST_ANSWER})
    return out


def job(args) -> tuple:
    title, name, order, isolate, boot = args
    path, run_set, sim_set = DATA[name]
    extra = {**run_set, **(UNBOUND if isolate else {})}
    sim = SimConfig(bootstrap=boot, seed=0, order=order, **sim_set)
    t0 = time.time()
    reps = compare(load_input(path), policies(extra, bound=isolate), sim)
    return title, name, order, isolate, [json.loads(r.to_json()) | {'questions': []} for r in reps], report_table(reps), time.time() - t0


def dead_run(name: str, curve: str) -> list:
    "50 questions, no sample ever answers, the full 5 h budget: each question's limit."
    cfg = profile(name)
    cfg.sampling.max_new_tokens = 10 ** 7
    n = max(t.samples for t in cfg.speed.tiers)
    qs = [RecQuestion(f'q{i}', 1, tuple(RecSample(j, 'cot' if j % 2 else 'code', 10 ** 7) for j in range(n))) for i in range(50)]
    return [r.limit_s for r in simulate_run(qs, cfg, SimConfig(curve=curve))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--bootstrap', type=int, default=50)
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--out', default=str(ROOT / 'bench/tune'))
    a = ap.parse_args()
    jobs = [('Stop rules alone (time never binds)', n, 'random', True, a.bootstrap) for n in DATA]
    jobs += [(f'Whole policy, 5 h / 50 questions, order: {o}', n, o, False, a.bootstrap) for o in ('random', 'hard_first', 'hard_last') for n in DATA]
    with ProcessPoolExecutor(a.jobs) as ex: res = list(ex.map(job, jobs))
    md = [f"# Profiles compared on recorded data\n\n`python bench/tune/compare.py --bootstrap {a.bootstrap}` (paired bootstrap: "
          "every policy sees the same replicates; intervals are 2.5-97.5% quantiles over them; 'changed' and 'saved' "
          "are against each policy's own no-early-stop run: the same time rules, every early stop off).\n",
          "\nThe row 'bound: stop at the first answer' (stop rules alone) stops each question at its first answer, whatever "
          "it is: no rule that waits for an answer stops earlier, so it bounds every stop rule's savings on that data set, "
          "at the price of many changed answers. `bound.md` (`bench/tune/bound.py`) adds the bound for rules that keep "
          "the answers: an oracle that stops once the vote equals the no-early-stop answer. On the gpt-oss recording "
          "(about 8 samples a question, started together) any rule within 0.25 changed answers in 30 saves at most "
          "26.1% [22.1, 30.2] of tokens and 50.7% [45.2, 55.7] of time, so the issue's goal (>= 35% and >= 60%) is out "
          "of reach there for every rule; the held-out 40-sample data it was set on is not available here.\n"]
    seen = None
    for title, name, order, isolate, reports, table, secs in res:
        if title != seen: md.append(f"\n## {title}\n"); seen = title
        md.append(f"\n### {name}\n\n{table}\n")
    md.append("\n## A run where no sample ever answers (50 questions, full 5 h budget): question limits in seconds\n\n"
              "| profile | curve | min | mean | max | min / mean |\n|---|---|---|---|---|---|")
    dead = {}
    for p in PROFILES:
        for curve in ('h200-14b-awq', 'slow-4x'):
            lim = dead_run(p, curve); dead[f'{p}/{curve}'] = lim
            md.append(f"| {p} | {curve} | {min(lim):.0f} | {sum(lim) / len(lim):.0f} | {max(lim):.0f} | {min(lim) / (sum(lim) / len(lim)):.2f} |")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out / 'compare.md').write_text('\n'.join(md) + '\n')
    (out / 'compare.json').write_text(json.dumps({'bootstrap': a.bootstrap, 'results': [
        {'view': t, 'data': n, 'order': o, 'reports': r} for t, n, o, _, r, _, _ in res], 'dead_run_limits': dead}, indent=1))
    print('\n'.join(md))


if __name__ == '__main__':
    main()
