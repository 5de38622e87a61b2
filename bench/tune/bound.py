"""How much any stop rule can save on a recording: two bounds, computed directly (no policy, no simulator).

    python bench/tune/bound.py [DATA.csv|trace|run] [--n 10] [--boot 2000]    # writes bench/tune/bound.md and bound.json

Model: the first `--n` recorded samples of a question start together and generate at one common speed, the
simulator's: each sample's rate is `simulate.sample_rate(samples generating, mean context)` from the decode curve
(`--curve`, for gpt-oss the one `compare.py` uses), re-read every `ctx_step` tokens and at each finish, plus the
simulator's `overhead_s` a question.
"No early stop" waits for every sample and votes (the default profile's vote) over all answers. Two bounds:
- **first answer**: stop at the first answer, whatever it is. No rule that waits for an answer stops earlier, so
  this bounds the savings of every rule, at any number of changed answers.
- **oracle**: stop at the first moment the vote over the answers so far equals the no-early-stop answer (knowing
  it). It changes no answer, and every rule that changes no answer on a question stops there at this moment or
  later, so this bounds the savings of every rule that changes no answer. (A rule may change 0.25 answers in 30, i.e.
  on 0.8% of questions: the `allowance` row lets the oracle stop at the first answer on that share of questions,
  the ones where that saves most; fractional questions count in proportion.) Where no sample answers at all, both
  bounds stop at time 0 (generous: no rule can know it).
Savings are aggregate (sum over questions), as in `compare.md`; intervals: bootstrap over questions.
"""
from __future__ import annotations
import argparse, json, random, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from aimo2_nb.config import profile
from aimo2_nb.simulate import CURVES, SimConfig, load_input, sample_rate
from aimo2_nb.vote import SampleAnswer, vote

GOAL = dict(tokens=0.35, time=0.60, changed_per_30=0.25)


def answers(s) -> tuple:
    "A recorded sample's (finish time, answer or None): its first boxed or code answer."
    a = next((m.value for m in s.marks if m.what in ('boxed', 'code') and m.value is not None), None)
    return s.n_tokens, a


def finish_times(L: list, sim: SimConfig) -> list:
    "Seconds at which samples of sorted lengths `L`, started together, finish (the simulator's speed model)."
    out, g, t = [], 0.0, 0.0
    for k, x in enumerate(L):
        while g < x:
            step = min(x, g + sim.ctx_step - g % sim.ctx_step)
            t += (step - g) / sample_rate(len(L) - k, sim.prompt_tokens + g, sim); g = step
        out.append(t + sim.overhead_s)
    return out


def question(q, n: int, vcfg, sim: SimConfig) -> dict:
    "Tokens and time of no stop, the first-answer bound and the oracle for one question."
    S = sorted(answers(s) for s in q.samples[:n])
    L = [t for t, _ in S]
    F = finish_times(L, sim)
    final_of = lambda k: vote([SampleAnswer(i, boxed=a, order=t) for i, (t, a) in enumerate(S[:k]) if a is not None], vcfg)
    final = final_of(len(S))
    used = lambda t: sum(min(x, t) for x in L)
    ks = [k for k in range(1, len(S) + 1) if S[k - 1][1] is not None]
    if not ks: return dict(tokens=used(max(L)), time=F[-1], first=(0, 0, False), oracle=(0, 0))
    k1 = ks[0]
    first_ans = final_of(k1).answer
    ko = next(k for k in ks if final_of(k).answer == final.answer)
    return dict(tokens=used(max(L)), time=F[-1], first=(used(L[k1 - 1]), F[k1 - 1], first_ans != final.answer),
                oracle=(used(L[ko - 1]), F[ko - 1]))


def summarise(rows: list, share: float) -> dict:
    "Aggregate savings of the bounds over `rows` (one dict a question); `share`: questions the allowance may change."
    T, M = sum(r['tokens'] for r in rows), sum(r['time'] for r in rows) or 1
    out = {}
    for name in ('first', 'oracle'):
        tok = sum(r[name][0] for r in rows); tim = sum(r[name][1] for r in rows)
        out[name] = dict(tokens_saved=1 - tok / T, time_saved=1 - tim / M,
                         changed_per_30=30 * sum(r['first'][2] for r in rows) / len(rows) if name == 'first' else 0.0)
    # the allowance: switch the oracle to the first answer on `share` of the questions where that saves the most time
    gain = sorted(((r['oracle'][1] - r['first'][1], r['oracle'][0] - r['first'][0]) for r in rows), reverse=True)
    budget, dt, dk = share * len(rows), 0.0, 0.0
    for g_t, g_k in gain:
        w = min(1.0, budget)
        if w <= 0: break
        dt += w * g_t; dk += w * g_k; budget -= w
    tok = sum(r['oracle'][0] for r in rows) - dk; tim = sum(r['oracle'][1] for r in rows) - dt
    out['allowance'] = dict(tokens_saved=1 - tok / T, time_saved=1 - tim / M, changed_per_30=GOAL['changed_per_30'])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('data', nargs='?', default=str(ROOT / 'data/traces/gptoss120b-aimo3-answers.csv'))
    ap.add_argument('--n', type=int, default=10, help='samples a question (the default profile first tier: 10)')
    ap.add_argument('--boot', type=int, default=2000)
    ap.add_argument('--curve', default='h100-gptoss120b-est', choices=sorted(CURVES))
    ap.add_argument('--out', default=str(ROOT / 'bench/tune/bound'))
    a = ap.parse_args()
    vcfg = profile('default').vote
    sim = SimConfig(curve=a.curve)
    rows = [question(q, a.n, vcfg, sim) for q in load_input(a.data)]
    share = GOAL['changed_per_30'] / 30
    point = summarise(rows, share)
    rng = random.Random(0)
    reps = [summarise([rows[rng.randrange(len(rows))] for _ in rows], share) for _ in range(a.boot)]
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
    res = dict(data=Path(a.data).name, questions=len(rows), samples_per_question=a.n, curve=a.curve, goal=GOAL, bounds={})
    for name, v in point.items():
        res['bounds'][name] = {k: round(x, 4) for k, x in v.items()}
        for k in ('tokens_saved', 'time_saved'):
            xs = [r[name][k] for r in reps]
            res['bounds'][name][k + '_ci95'] = [round(q(xs, 0.025), 4), round(q(xs, 0.975), 4)]
    names = {'first': 'first answer (any rule)', 'oracle': 'oracle (any rule that changes no answer)',
             'allowance': 'oracle + 0.25 changes in 30 (any rule within the goal)'}
    md = [f"# The most a stop rule can save: {res['data']}, {len(rows)} questions, <= {a.n} samples each\n",
          f"`python bench/tune/bound.py --n {a.n} --curve {a.curve}`; model and definitions in the script's docstring. 95% intervals: "
          f"{a.boot} bootstrap replicates over questions. Goal (issue 15): >= 35% of tokens and >= 60% of time saved "
          "with <= 0.25 answers changed in 30.\n",
          "| bound | tokens saved [95% CI] | time saved [95% CI] | answers changed in 30 |", "|---|---|---|---|"]
    for name, v in res['bounds'].items():
        ci = lambda k: f"{100 * v[k]:.1f}% [{100 * v[k + '_ci95'][0]:.1f}, {100 * v[k + '_ci95'][1]:.1f}]"
        md.append(f"| {names[name]} | {ci('tokens_saved')} | {ci('time_saved')} | {v['changed_per_30']:.2f} |")
    Path(a.out + '.json').write_text(json.dumps(res, indent=1) + '\n')
    Path(a.out + '.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__':
    main()
