"""bench/tir_cpu_eval.py: the Wilson interval, and the landed results recompute exactly from the kept run copies."""
from __future__ import annotations
import importlib.util, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('tir_cpu_eval', ROOT / 'bench' / 'tir_cpu_eval.py')
E = importlib.util.module_from_spec(spec); spec.loader.exec_module(E)


def test_wilson():
    assert E.wilson(0, 0) == [0.0, 1.0]
    assert E.wilson(1, 2) == [0.0945, 0.9055]  # symmetric around 1/2
    lo, hi = E.wilson(10, 20)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-3
    assert E.wilson(20, 20)[1] == 1.0 and E.wilson(20, 20)[0] > 0.8


def test_printed_values():
    assert E.printed_values('\n```output\n18.0\n[3, 4] -2\n```\n') == {18, 3, 4, -2}
    assert E.printed_values('File "<code>", line 3\nSyntaxError') == {3}


def test_landed_results_recompute(tmp_path):
    keep = ROOT / 'bench' / 'tir-cpu-eval'
    landed = json.loads((ROOT / 'bench' / 'tir-cpu-eval-2026-11-30.json').read_text())
    out = tmp_path / 'r.json'
    names = [n for n in E.NAMES if n in landed['runs']]
    assert E.main([str(keep / n) for n in names] + ['--out', str(out)]) == 0
    got = json.loads(out.read_text())
    strip = lambda d: {k: {kk: vv for kk, vv in v.items() if kk != 'run'} for k, v in d['runs'].items()}
    assert strip(got) == strip(landed)
    for k in ('paired', 'paired_fixed', 'paired_tir_fixed'): assert got.get(k) == landed.get(k), k
    assert landed['runs']['tir']['questions'] == landed['runs']['code_cot']['questions'] > 0
