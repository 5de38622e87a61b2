"The trace viewer: hostile text stays inert, the page mirrors the trace, run pages and the widget."
from __future__ import annotations
import dataclasses
from html.parser import HTMLParser
from pathlib import Path
import pytest
from aimo2_nb import trace as T
from aimo2_nb.viewer import trace_html, run_html, export_html, TraceViewer

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'eval_run'
HOSTILE = '</pre></details><script>window.pwned=1</script><img src=x onerror="window.pwned=2"><a href="javascript:alert(1)">x</a>" onmouseover="y'

class Tags(HTMLParser):
    "Every start tag and its attributes."
    def __init__(self): super().__init__(); self.tags = []
    def handle_starttag(self, tag, attrs): self.tags.append((tag, dict(attrs)))

def parse(page: str) -> list:
    p = Tags(); p.feed(page); return p.tags

def fixture_questions() -> dict[str, list]:
    return T.by_question(T.read_events(FIXTURE / 'traces.jsonl'))

def poisoned(evs: list) -> list:
    "The same question with hostile text in every free-text field the model or a user controls."
    out = []
    for e in evs:
        if e.kind == 'question_start': e = dataclasses.replace(e, question=HOSTILE, qid=e.qid)
        elif e.kind == 'sample_end': e = dataclasses.replace(e, text=e.text + HOSTILE, error=HOSTILE)
        elif e.kind == 'code_start': e = dataclasses.replace(e, code=HOSTILE)
        elif e.kind == 'code_done': e = dataclasses.replace(e, stdout=HOSTILE, stderr=HOSTILE, error=HOSTILE)
        elif e.kind == 'answer': e = dataclasses.replace(e, raw=HOSTILE)
        elif e.kind == 'question_stop': e = dataclasses.replace(e, detail=HOSTILE)
        elif e.kind == 'vote': e = dataclasses.replace(e, reason=HOSTILE)
        elif e.kind == 'tick': e = dataclasses.replace(e, chunks=[[c[0], HOSTILE, *c[2:]] for c in e.chunks])
        out.append(e)
    out.append(T.Error(evs[0].qid, 1.0, HOSTILE, HOSTILE))
    return out

def test_hostile_text_is_inert():
    evs = poisoned(next(iter(fixture_questions().values())))
    page = trace_html(evs)
    tags = parse(page)
    assert not [t for t, a in tags if t in ('script', 'img', 'a', 'iframe', 'object')]
    assert not [k for t, a in tags for k in a if k.startswith('on')]
    assert '&lt;script&gt;window.pwned=1&lt;/script&gt;' in page
    assert page.count('<details') == page.count('</details>')

def test_lanes_mirror_the_trace():
    for qid, evs in fixture_questions().items():
        start = next(e for e in evs if e.kind == 'question_start')
        page = trace_html(evs)
        tags = parse(page)
        lane_tags = [a for t, a in tags if 'lane' in (a.get('class') or '').split()]
        assert [int(a['data-sample']) for a in lane_tags] == list(range(len(start.kinds)))
        assert [a['data-kind'] for a in lane_tags] == list(start.kinds)
        ends = {e.sample: e for e in evs if e.kind == 'sample_end'}
        assert [a['data-finish'] for a in lane_tags] == [ends[i].finish for i in range(len(start.kinds))]
        answers = [e for e in evs if e.kind == 'answer']
        ans_tags = [a for t, a in tags if t == 'li' and 'answer' in (a.get('class') or '').split()]
        assert [a['data-value'] for a in ans_tags] == [str(e.value) for e in sorted(answers, key=lambda e: e.sample)]
        stops = [e.reason for e in evs if e.kind == 'sample_stop']
        for s in stops: assert f'data-stop="{s}"' in page
        qstop = next(e for e in evs if e.kind == 'question_stop')
        assert f'data-reason="{qstop.reason}"' in page
        end = next(e for e in evs if e.kind == 'question_end')
        assert f'<span class="final-answer">{end.answer}</span>' in page
        assert sum(t == 'details' and 'sample-text' in (a.get('class') or '') for t, a in tags) == len(start.kinds)

def test_run_page(tmp_path):
    p = export_html(FIXTURE, tmp_path / 'run.html')
    page = p.read_text()
    qs = fixture_questions()
    assert page.startswith('<!DOCTYPE html>') and "Content-Security-Policy" in page
    assert page.count('class="aimo2-trace question"') == len(qs) == 10
    for q in qs: assert f'href="#q-{q}"' in page and f'id="q-{q}"' in page
    tags = parse(page)
    assert not [t for t, a in tags if t in ('script', 'link', 'img', 'iframe')]  # self-contained: nothing to load
    assert not [a for t, a in tags if any('http' in (v or '') for k, v in a.items() if k in ('src', 'href'))]

def test_run_html_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='not a run folder'): run_html(tmp_path)

def test_widget_switches_runs_and_questions(tmp_path):
    import shutil
    shutil.copytree(FIXTURE, tmp_path / 'a'); shutil.copytree(FIXTURE, tmp_path / 'b')
    v = TraceViewer(tmp_path)
    assert [o[0] for o in v.run.options] == ['a', 'b'] and len(v.question.options) == 10
    first = v.question.options[0]
    assert v.question.value == first and f'data-qid="{first}"' in v.html.value  # opens on a question, not blank
    q = v.question.options[-1]
    v.question.value = q
    assert f'data-qid="{q}"' in v.html.value
    v.run.value = str(tmp_path / 'b')
    assert v.question.options and 'class="lane"' in v.page and 'class="lane"' not in v.html.value  # the page is in the frame
    with pytest.raises(FileNotFoundError): TraceViewer(tmp_path / 'nothing')

# A TIR sample: turns of reasoning, code run, the output block shown to the model; where it answered.
O1, O2 = '\n```output\n42\n```\n', '\n```output\nNameError: y\n```\n'
TURNS = ['I compute it. ' + HOSTILE + '\n```python\nx = 6*7\nprint(x)\n```', 'Now y.\n```python\nprint(y)\n```',
         'The state was lost; 42 stands. \\boxed{42}']

def tir_events(ats=None, text=None, payload: str = '') -> list:
    "One TIR question made from the trace event classes: sample 0 calls twice and answers, sample 1 is CoT."
    full = TURNS[0] + O1 + TURNS[1] + O2 + TURNS[2]
    at = ats or [len(TURNS[0]), len(TURNS[0] + O1 + TURNS[1])]
    return [T.QuestionStart('tir', 0.0, question='q', speed=3, samples=2, limit_s=60, avg_s_left=300, gold=42, kinds=['tir', 'cot']),
            T.ToolCall('tir', 1.0, 0, 0, 'x = 6*7\nprint(x)' + payload, O1, 0.02, 'ok', 42, 20, at[0], False, 'uid' + payload),
            T.ToolCall('tir', 2.0, 0, 1, 'print(y)', O2, 0.01, 'error' + payload, None, 35, at[1], True, 'guard'),
            T.Answer('tir', 3.0, 0, 'boxed', 42, '42', 50),
            T.SampleEnd('tir', 3.5, 0, 'stop', 52, text=full if text is None else text),
            T.SampleEnd('tir', 3.6, 1, 'stop', 40, text='\\boxed{41}'), T.QuestionEnd('tir', 4.0, 42, 'all_done', 92)]

def text_of(tags_html: str) -> str:
    "The text content of an HTML fragment (entities decoded)."
    class P(HTMLParser):
        def __init__(self): super().__init__(); self.parts = []
        def handle_data(self, d): self.parts.append(d)
    p = P(); p.feed(tags_html); p.close(); return ''.join(p.parts)

def test_tir_sample_shows_its_turns_in_order():
    page = trace_html(tir_events())
    lane = page[page.index('data-sample="0"'):page.index('data-sample="1"')]
    tags = parse(lane)
    assert [a['data-turn'] for t, a in tags if t == 'li' and 'turn' in a.get('class', '').split()] == ['0', '1', '2']
    calls = [a for t, a in tags if 'turn-call' in a.get('class', '').split()]
    assert [(a['data-call'], a['data-status'], a['data-restarted'], a['data-isolation']) for a in calls] == \
        [('0', 'ok', 'false', 'uid'), ('1', 'error', 'true', 'guard')]
    # reasoning, code, output shown, in the order of the text, the answer marked in the last turn
    txt = text_of(lane[lane.index('<ol class="turns">'):])
    order = [txt.index(s) for s in ('I compute it.', 'x = 6*7', '```output\n42', 'Now y.', 'print(y)', 'NameError: y',
                                    'The state was lost', '\\boxed{42}')]
    assert order == sorted(order)
    assert '<li class="turn answered" data-turn="2">' in lane and '<mark class="boxed" data-value="42">\\boxed{42}</mark>' in lane
    assert 'session restarted' in lane and 'sandbox guard' in lane
    assert [a['data-call'] for t, a in tags if t == 'li' and 'tool-call' in a.get('class', '').split()] == ['0', '1']
    assert 'votes <b>42</b>' in lane  # a TIR sample votes with its boxed answer

def test_tir_hostile_text_and_offsets_stay_inert(tmp_path):
    for ats, text in [(None, None), ([10**9, -7], None), ([60, 3], None), ([5, 5], ''), (None, HOSTILE * 3)]:
        page = trace_html(tir_events(ats, text, payload=HOSTILE))
        tags = parse(page)
        assert not [t for t, a in tags if t in ('script', 'img', 'a', 'iframe', 'object')]
        assert not [k for t, a in tags for k in a if k.startswith('on')]
        assert page.count('<details') == page.count('</details>') and page.count('<pre') == page.count('</pre>')
        assert page.count('<li class="turn') == 3
    # the same events through a file: a crafted offset of the wrong type is refused by the reader, the rest render
    p = tmp_path / 'traces.jsonl'
    lines = [T.to_json(e) for e in tir_events(payload=HOSTILE)]
    lines[1] = lines[1].replace(f'"at":{len(TURNS[0])}', '"at":"<img src=x onerror=alert(1)>"')
    p.write_text('\n'.join(lines) + '\n')
    evs = T.read_events(p)
    assert [e.call for e in evs if e.kind == 'tool_call'] == [1]
    page = run_html(tmp_path)
    assert not [t for t, a in parse(page) if t in ('script', 'img')] and page.count('<li class="turn') == 2

def test_code_runs_show_their_isolation():
    evs = next(iter(fixture_questions().values()))
    done = next(e for e in evs if e.kind == 'code_done')
    page = trace_html([dataclasses.replace(e, isolation='namespace') if e is done else e for e in evs])
    assert page.count('data-isolation="namespace"') == 1

def test_widget_frames_the_page(tmp_path):
    "The widget's HTML is one sandboxed frame whose document carries the exported page's CSP; nothing else."
    import html, shutil
    run = tmp_path / 'run'; shutil.copytree(FIXTURE, run)
    bad = [dataclasses.replace(e, qid='hostile') for e in next(iter(fixture_questions().values()))]
    tw = T.TraceWriter(run / 'traces.jsonl')
    for e in bad: tw.add(dataclasses.replace(e, text=HOSTILE) if e.kind == 'sample_end' else e)
    v = TraceViewer(run)
    v.question.value = 'hostile'
    tags = parse(v.html.value)
    assert [t for t, a in tags] == ['iframe']
    frame = tags[0][1]
    assert frame['sandbox'] == '' and frame['data-qid'] == 'hostile' and not [k for k in frame if k.startswith('allow')]
    assert frame['srcdoc'] == v.page and html.unescape(v.html.value).count('<script>') == 0
    inner = parse(frame['srcdoc'])
    csp = [a for t, a in inner if t == 'meta' and a.get('http-equiv') == 'Content-Security-Policy']
    assert len(csp) == 1 and "default-src 'none'" in csp[0]['content'] and 'script-src' not in csp[0]['content']
    assert not [t for t, a in inner if t in ('script', 'img', 'a', 'iframe')]
    assert '&lt;script&gt;window.pwned=1&lt;/script&gt;' in v.page

def test_a_solver_tir_run_shows_its_turns():
    "A TIR question run by the solver (scripted engine and sandbox): the real output shown, the invented one gone."
    import re
    from types import SimpleNamespace
    from aimo2_nb.config import RunConfig, PromptConfig, PromptSpec, SpeedConfig, Tier
    from aimo2_nb.engines.replay import ScriptedExecutor, Step, TimedEngine, say
    from aimo2_nb.solver import Solver
    def run_print(code):
        v = re.search(r'print\((\d+)\)', code).group(1)
        return SimpleNamespace(status='ok', stdout=v + '\n', stderr='', truncated=False, duration=0.01, error=None)
    def script(req):
        if req.prefix.count('```output') == 0:
            return [Step(0.5, f"Compute.\n```python\nprint({7 + req.index})\n```\n", 10), Step(0.5, '```output\n999\n```', 7), Step(1e9, 'x')]
        if req.index == 0 and req.prefix.count('```output') == 1:
            return [Step(0.5, "Check.\n```python\nprint(8)\n```\n", 10), Step(1e9, 'x')]
        return say(f"So \\boxed{{{req.prefix.split('```output')[-1].split()[0]}}}.", 20, 8)
    cfg = RunConfig()
    cfg.prompts = PromptConfig([PromptSpec('tir', 'sys', '', '', 2)])
    cfg.speed = SpeedConfig([Tier(3, 2, 100.0, 99, [])], adaptive=False)
    cfg.stop.rules, cfg.stop.use_min_answers = [], False
    cfg.budget.total_s, cfg.budget.reserve_s, cfg.budget.n_questions = 10_000.0, 0.0, 1
    eng = TimedEngine(script)
    r = Solver(eng, cfg, executor=ScriptedExecutor(run_print, eng.clock, 0.5)).solve('q', 'q1', 8)
    page = trace_html(r.trace)
    lane = page[page.index('data-sample="0"'):page.index('data-sample="1"')]
    tags = parse(lane)
    assert [a['data-turn'] for t, a in tags if t == 'li' and 'turn' in a.get('class', '').split()] == ['0', '1', '2']
    assert [a['data-call'] for t, a in tags if 'turn-call' in a.get('class', '').split()] == ['0', '1']
    txt = text_of(lane[lane.index('<ol class="turns">'):])
    order = [txt.index(s) for s in ('Compute.', 'print(7)', '```output\n7', 'Check.', 'print(8)', '```output\n8', 'So \\boxed{8}')]
    assert order == sorted(order) and '999' not in txt
    assert '<li class="turn answered" data-turn="2">' in lane and 'votes <b>8</b>' in lane
    assert 'class="code-run"' not in lane and 'class="tool-call"' in lane  # its blocks are shown as tool calls, not pending runs
