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
    assert v.question.options and 'class="lane"' in v.html.value
    with pytest.raises(FileNotFoundError): TraceViewer(tmp_path / 'nothing')
