"End to end on CPU with a real model: the solver and `aimo2 solve` on the embedded 0.5B model (llama.cpp)."
from __future__ import annotations
import subprocess, sys
import pytest

llama_cpp = pytest.importorskip('llama_cpp', reason='needs the cpu extra: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install -e ".[cpu]"')

from aimo2_nb.config import profile
from aimo2_nb.engines.base import load_engine
from aimo2_nb.solver import Solver
from aimo2_nb.trace import read_events

def small_cfg(samples=2, tokens=160, seconds=150.0):
    cfg = profile('cpu', model='qwen2.5-coder-0.5b', samples=samples, max_new_tokens=tokens, question_s=seconds)
    return cfg

def test_solver_with_real_cpu_model(tmp_path):
    cfg = small_cfg()
    eng = load_engine(cfg.engine)
    try:
        s = Solver(eng, cfg, trace_path=tmp_path / 't.jsonl')
        r = s.solve('What is 17*23? Give the final answer in \\boxed{}.', 'e2e', 391)
    finally:
        eng.close()
    assert isinstance(r.answer, int) and 0 <= r.answer < 1000
    assert r.elapsed <= r.plan.limit_s + 0.5
    evs = read_events(tmp_path / 't.jsonl')
    ends = [e for e in evs if e.kind == 'sample_end']
    assert len(ends) == 2 and sum(e.tokens for e in ends) > 0  # the model really generated text
    assert any(e.text.strip() for e in ends)
    assert evs[-1].kind == 'question_end' and evs[-1].answer == r.answer

def test_aimo2_solve_command(tmp_path):
    trace = tmp_path / 'trace.jsonl'
    cmd = [sys.executable, '-m', 'aimo2_nb.cli', 'solve', 'What is 17*23?', '--model', 'qwen2.5-coder-0.5b',
           '--samples', '2', '--max-tokens', '160', '--trace', str(trace)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'q1: answer ' in p.stdout and 'votes:' in p.stdout and 'sample  0' in p.stdout and 'sample  1' in p.stdout
    assert f'trace: {trace}' in p.stdout and trace.exists()
    assert 'loading the engine' in p.stderr  # progress is shown

def test_aimo2_solve_bad_input_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, '-m', 'aimo2_nb.cli', 'solve', '--csv', str(tmp_path / 'missing.csv')],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and 'file not found' in p.stderr and 'Traceback' not in p.stderr

def test_aimo2_solve_tir_with_the_real_cpu_model(tmp_path):
    "TIR end to end on the embedded model: every python block it closes runs and its real output is fed back."
    trace = tmp_path / 'trace.jsonl'
    cmd = [sys.executable, '-m', 'aimo2_nb.cli', 'solve', 'Use Python to compute the sum of all positive divisors of 360.',
           '--model', 'qwen2.5-coder-0.5b', '--samples', '2', '--max-tokens', '400', '--trace', str(trace),
           '--set', 'prompts.list=[tir]']
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    evs = read_events(trace)
    assert next(e for e in evs if e.kind == 'question_start').kinds == ['tir', 'tir']
    starts, calls = [e for e in evs if e.kind == 'code_start'], [e for e in evs if e.kind == 'tool_call']
    assert starts, 'the model wrote no python block: nothing of the tool loop ran'
    assert [(c.sample, c.call) for c in calls] == [(s.sample, s.block) for s in starts]  # every block became a tool call
    ends = {e.sample: e for e in evs if e.kind == 'sample_end'}
    for c in calls:
        if c.status != 'cancelled':  # fed back: the real output sits in the sample's text where its code ended
            assert ends[c.sample].text[c.at:c.at + len(c.output)] == c.output and c.output.startswith('\n```output\n')
    assert not [e for e in evs if e.kind == 'error']
