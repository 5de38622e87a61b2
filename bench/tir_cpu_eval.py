"""TIR vs the seed's code + CoT mix on CPU (issue 16): metrics of two `aimo2 eval` run folders, read from their traces.

Reads each run's `results.jsonl` and `traces.jsonl` (tick events are not needed: a trace without them, as kept in
bench/tir-cpu-eval/, gives the same numbers) and writes one JSON with, per run: accuracy of the voted answers and of
single samples, each with a 95% Wilson interval; the share of samples that ran code (TIR: a `tool_call`; `code`
samples: a one-shot `code_start`), code runs per sample, the share of answers that equal a value the sample's code
printed, tokens per sample and per answer, seconds per question, stop and finish reasons; and a question-by-question
comparison of the two runs. A short Markdown table goes next to the JSON.

    python bench/tir_cpu_eval.py bench/tir-cpu-eval/code_cot bench/tir-cpu-eval/tir \\
        --out bench/tir-cpu-eval-2026-11-30.json
"""
from __future__ import annotations
import argparse, json, math, re, sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_NUM = re.compile(r'-?\d+(?:\.\d+)?')


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    "95% Wilson score interval of a proportion k/n."
    if n == 0: return [0.0, 1.0]
    p = k / n
    d = 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 4), round(min(1.0, c + h), 4)]


def printed_values(text: str) -> set[int]:
    "Every integral number in printed output (18 and 18.0 both give 18)."
    out = set()
    for m in _NUM.findall(text or ''):
        try: v = float(m)
        except ValueError: continue
        if math.isfinite(v) and v == int(v): out.add(int(v))
    return out


def read_jsonl(p: Path) -> list[dict]:
    rows = []
    if not p.exists(): return rows  # a run that has not finished a question yet
    for line in p.read_text(encoding='utf-8').splitlines():
        try: rows.append(json.loads(line))
        except json.JSONDecodeError: pass  # a torn last line
    return rows


def run_metrics(folders: list[Path]) -> tuple[dict, dict]:
    "(metrics of one configuration's run folders (batches of distinct questions), {question id: correct})."
    results = {str(r['id']): r for run in folders for r in read_jsonl(run / 'results.jsonl')}
    calls, code, starts = defaultdict(list), defaultdict(list), Counter()  # (qid, sample) -> events
    for e in (e for run in folders for e in read_jsonl(run / 'traces.jsonl')):
        k = e.get('kind')
        if k == 'tool_call': calls[e['qid'], e['sample']].append(e)
        elif k == 'code_done': code[e['qid'], e['sample']].append(e)
        elif k == 'code_start': starts[e['qid'], e['sample']] += 1
    n_q = len(results)
    q_ok = {q: bool(r.get('correct')) for q, r in results.items()}
    per_kind: dict[str, Counter] = defaultdict(Counter)
    stops, finishes, reasons = Counter(), Counter(), Counter()
    for q, r in results.items():
        reasons[r['reason']] += 1
        for s in r['samples']:
            c = per_kind[s['kind']]
            key = (q, s['i'])
            runs = calls.get(key) if s['kind'] == 'tir' else code.get(key)
            runs = runs or []
            # TIR: what each call printed is in its output block; a code sample: its runs' stdout
            vals, last = set(), set()
            for e in runs:
                vals |= printed_values(e.get('output') if s['kind'] == 'tir' else e.get('stdout'))
                if e.get('value') is not None: last.add(e['value'])
            c['samples'] += 1; c['tokens'] += s['tokens']
            c['with_code'] += bool(runs); c['code_runs'] += len(runs)
            c['code_ok'] += sum(e.get('status') == 'ok' for e in runs)
            c['answered'] += s['vote'] is not None
            c['correct'] += s['vote'] is not None and s['vote'] == r['gold']
            c['answer_in_output'] += s['vote'] is not None and s['vote'] in vals
            c['answer_is_code_value'] += s['vote'] is not None and s['vote'] in last
            c['unstarted'] += s['tokens'] == 0
            if s['kind'] == 'tir' and starts[key] > len(runs):  # a block closed, its output never came back
                c['block_not_fed_back'] += 1
                c['block_not_fed_back_finish_stop'] += s['finish'] == 'stop'  # the turn's own end (EOS) ended the sample
            stops[f"{s['kind']}:{s['stop']}"] += 1; finishes[f"{s['kind']}:{s['finish']}"] += 1
    tot = Counter()
    for c in per_kind.values(): tot.update(c)

    def summary(c: Counter) -> dict:
        n, a = c['samples'], c['answered']
        return dict(samples=n, answered=a, answered_share=round(a / n, 4) if n else None,
                    sample_accuracy=round(c['correct'] / n, 4) if n else None, sample_accuracy_ci95=wilson(c['correct'], n),
                    accuracy_of_answers=round(c['correct'] / a, 4) if a else None,
                    share_ran_code=round(c['with_code'] / n, 4) if n else None,
                    code_runs_per_sample=round(c['code_runs'] / n, 3) if n else None,
                    code_runs_ok_share=round(c['code_ok'] / c['code_runs'], 4) if c['code_runs'] else None,
                    share_answers_from_code_output=round(c['answer_in_output'] / a, 4) if a else None,
                    share_answers_equal_code_value=round(c['answer_is_code_value'] / a, 4) if a else None,
                    tokens_per_sample=round(c['tokens'] / n, 1) if n else None,
                    tokens_per_answer=round(c['tokens'] / a, 1) if a else None,
                    samples_never_started=c['unstarted'],
                    tir_block_not_fed_back=c['block_not_fed_back'], tir_block_not_fed_back_finish_stop=c['block_not_fed_back_finish_stop'])
    k = sum(q_ok.values())
    el = [r['elapsed'] for r in results.values()]
    out = dict(run=[str(f) for f in folders], questions=n_q, correct=k, accuracy=round(k / n_q, 4) if n_q else None,
               accuracy_ci95=wilson(k, n_q), seconds_per_question=round(sum(el) / n_q, 1) if n_q else None,
               seconds_max=round(max(el), 1) if el else None, total_seconds=round(sum(el), 1),
               tokens_per_question=round(sum(r['tokens'] for r in results.values()) / n_q, 1) if n_q else None,
               question_end_reasons=dict(reasons), all_samples=summary(tot),
               by_kind={kind: summary(c) for kind, c in sorted(per_kind.items())},
               sample_stops=dict(stops), sample_finishes=dict(finishes))
    return out, q_ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='tir_cpu_eval.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('runs', nargs='+', help="run folders of the baseline (code + cot), of tir, and optionally of tir on a later "
                    "commit (tir_fixed); several batches of one configuration: 'DIR1,DIR2'")
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'tir-cpu-eval-2026-11-30.json'))
    ap.add_argument('--commands', default='', help='a file holding the exact commands run (copied into the JSON)')
    ap.add_argument('--notes', default='', help='a Markdown file put above the table in the .md')
    ap.add_argument('--rerun-unfed', action='store_true',
                    help="run (in the sandbox) each TIR block whose output never came back: would it have printed the gold answer?")
    ap.add_argument('--keep', default='', help='copy each run (results, meta, config, trace without tick events) to KEEP/<name>')
    a = ap.parse_args(argv)
    if len(a.runs) not in (2, 3): ap.error('two or three run folders (lists)')
    names = NAMES[:len(a.runs)]
    runs = [[Path(d) for d in r.split(',')] for r in a.runs]
    if a.keep:
        for name, folders in zip(names, runs): keep(folders, Path(a.keep) / name)
        runs = [[Path(a.keep) / name] for name in names]
    res, oks = {}, {}
    for name, run in zip(names, runs):
        res[name], oks[name] = run_metrics(run)
    doc = dict(what='TIR vs the seed code+cot mix, embedded qwen2.5-coder-0.5b (llama.cpp) on CPU, GSM8K test subset',
               problem_set='aimo2_nb/problems/gsm8k_test_40.csv (provenance in aimo2_nb/problems/README.md)',
               runs=res, paired=paired(oks, 'tir'),
               commands=Path(a.commands).read_text().splitlines() if a.commands else [])
    if 'tir_fixed' in oks: doc['paired_fixed'], doc['paired_tir_fixed'] = paired(oks, 'tir_fixed'), paired(oks, 'tir_fixed', 'tir')
    if a.rerun_unfed: doc['unfed_blocks_rerun'] = rerun_unfed(runs[1])
    out = Path(a.out)
    out.write_text(json.dumps(doc, indent=1) + '\n')
    md = (Path(a.notes).read_text().rstrip() + '\n\n' if a.notes else '') + markdown(doc)
    out.with_suffix('.md').write_text(md)
    print(markdown(doc))
    return 0


NAMES = ['code_cot', 'tir', 'tir_fixed']


def paired(oks: dict, name: str, base: str = 'code_cot') -> dict:
    "Question-by-question comparison of run `base` with run `name`, over the questions both answered."
    common = sorted(set(oks[base]) & set(oks[name]))
    pairs = Counter((oks[base][q], oks[name][q]) for q in common)
    out = dict(questions=len(common), both_right=pairs[True, True], only_code_cot=pairs[True, False],
               only_tir=pairs[False, True], both_wrong=pairs[False, False],
               per_question={q: dict(code_cot=oks[base][q], tir=oks[name][q]) for q in common})
    if base != 'code_cot':
        out[f'only_{base}'], out[f'only_{name}'] = out.pop('only_code_cot'), out.pop('only_tir')
        out['per_question'] = {q: {base: oks[base][q], name: oks[name][q]} for q in common}
    return out


def rerun_unfed(folders: list[Path]) -> dict:
    "Each TIR block whose output never came back (a `code_start` with no `tool_call` of its number), run now: its value vs gold."
    sys.path.insert(0, str(ROOT))
    from aimo2_nb.answers import code_answer
    from aimo2_nb.executor import run_code
    gold = {str(r['id']): r['gold'] for f in folders for r in read_jsonl(f / 'results.jsonl')}
    starts, called = {}, set()
    for e in (e for f in folders for e in read_jsonl(f / 'traces.jsonl')):
        if e.get('kind') == 'code_start': starts[e['qid'], e['sample'], e['block']] = e['code']
        elif e.get('kind') == 'tool_call': called.add((e['qid'], e['sample'], e['call']))
    rows = []
    for (q, i, b), code in sorted(starts.items()):
        if (q, i, b) in called: continue
        res = run_code(code, 6.0)
        v = code_answer(res.stdout or '')
        rows.append(dict(qid=q, sample=i, block=b, status=res.status, value=v, gold=gold.get(q), prints_gold=v == gold.get(q)))
    return dict(blocks=len(rows), prints_gold=sum(r['prints_gold'] for r in rows), rows=rows)


def keep(folders: list[Path], dest: Path) -> None:
    "One small folder that gives the same metrics as run folders `folders`: their results and traces without tick events."
    dest.mkdir(parents=True, exist_ok=True)
    (dest / 'config.yaml').write_bytes((folders[0] / 'config.yaml').read_bytes())
    metas = [json.loads((f / 'meta.json').read_text()) for f in folders]
    (dest / 'meta.json').write_text(json.dumps(metas, indent=1) + '\n')  # one per batch
    for name, skip in (('results.jsonl', None), ('traces.jsonl', 'tick')):
        rows = [json.dumps(e, ensure_ascii=False) for f in folders for e in read_jsonl(f / name) if skip is None or e.get('kind') != skip]
        (dest / name).write_text('\n'.join(rows) + '\n', encoding='utf-8')


def markdown(doc: dict) -> str:
    "The short table of the results."
    r = doc['runs']
    names = [n for n in NAMES if n in r]
    head = {'code_cot': 'code + cot (seed mix)', 'tir': 'tir', 'tir_fixed': 'tir, later commit'}
    pct = lambda x: '-' if x is None else f'{100 * x:.0f}%'
    ci = lambda c: f'[{100 * c[0]:.0f}, {100 * c[1]:.0f}]'
    s = lambda n, k: r[n]['all_samples'][k]
    rows = [('questions', lambda n: r[n]['questions']),
            ('accuracy (voted answer)', lambda n: f"{r[n]['correct']}/{r[n]['questions']} = {pct(r[n]['accuracy'])} {ci(r[n]['accuracy_ci95'])}"),
            ('seconds per question', lambda n: r[n]['seconds_per_question']),
            ('tokens per question', lambda n: r[n]['tokens_per_question']),
            ('sample accuracy', lambda n: f"{pct(s(n, 'sample_accuracy'))} {ci(s(n, 'sample_accuracy_ci95'))}"),
            ('samples answered', lambda n: pct(s(n, 'answered_share'))),
            ('samples that ran code (tir: a tool call)', lambda n: pct(s(n, 'share_ran_code'))),
            ('code runs (tool calls) per sample', lambda n: s(n, 'code_runs_per_sample')),
            ('answers equal to a number the code printed', lambda n: pct(s(n, 'share_answers_from_code_output'))),
            ('tokens per sample', lambda n: s(n, 'tokens_per_sample')),
            ('tokens per answer', lambda n: s(n, 'tokens_per_answer'))]
    lines = ['| | ' + ' | '.join(head[n] for n in names) + ' |', '| --- |' + ' --- |' * len(names)]
    lines += ['| ' + label + ' | ' + ' | '.join(str(f(n)) for n in names) + ' |' for label, f in rows]
    lines.append('')
    for key, name in (('paired', 'tir'), ('paired_fixed', 'tir, later commit')):
        if (p := doc.get(key)):
            lines.append(f"Paired with {name} over {p['questions']} questions: both right {p['both_right']}, only code+cot "
                         f"{p['only_code_cot']}, only {name} {p['only_tir']}, both wrong {p['both_wrong']}.")
    if (p := doc.get('paired_tir_fixed')):
        lines.append(f"tir against tir on the later commit over {p['questions']} questions: both right {p['both_right']}, "
                     f"only tir {p['only_tir']}, only the later commit {p['only_tir_fixed']}, both wrong {p['both_wrong']}.")
    lines.append("Intervals: 95% Wilson (sample intervals ignore that a question's samples are correlated: read them as "
                 "narrower than they should be).")
    for n in names[1:]:
        t = r[n]['all_samples']
        lines.append(f"\n{head[n]}: samples with a closed python block whose output never came back: {t['tir_block_not_fed_back']} "
                     f"of {t['samples']}; {t['tir_block_not_fed_back_finish_stop']} of them ended with finish 'stop' (the turn's "
                     "own end right after the block ended the sample instead of pausing it).")
        if n == 'tir' and (u := doc.get('unfed_blocks_rerun')):
            lines.append(f"Run now in the sandbox, {u['prints_gold']} of those {u['blocks']} blocks print the gold answer.")
    for n in names:
        lines.append(f"\n{head[n]} by prompt kind: " + '; '.join(
            f"{k}: {v['samples']} samples, {pct(v['sample_accuracy'])} right, {pct(v['share_ran_code'])} ran code, "
            f"{v['code_runs_per_sample']} runs/sample, {pct(v['share_answers_from_code_output'])} of answers from code output"
            for k, v in r[n]['by_kind'].items()))
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main())
