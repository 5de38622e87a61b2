"The notebooks as documentation: one-line summaries make whole module docstrings; defect citations land on the list."
from __future__ import annotations
import ast, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))

def cells(p: Path, kind: str) -> list[str]:
    return [''.join(c['source']) for c in json.loads(p.read_text(encoding='utf-8'))['cells'] if c['cell_type'] == kind]

def module_of(p: Path) -> Path | None:
    m = next((re.search(r'^#\|\s*default_exp\s+(\S+)', s, re.M) for s in cells(p, 'code') if 'default_exp' in s), None)
    return ROOT / 'aimo2_nb' / (m[1].replace('.', '/') + '.py') if m else None

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_one_line_summary_is_the_whole_docstring(nb):
    "nbdev reads only the first `> ` line of the title cell (module docstring, page description): it must be all of it."
    title = cells(nb, 'markdown')[0].split('\n')
    assert title[0].startswith('# '), title[0]
    quotes = [l for l in title if l.startswith('>')]
    assert len(quotes) == 1, f"{nb.name}: the summary spans {len(quotes)} lines; nbdev keeps only the first"
    summary = quotes[0].lstrip('> ').strip()
    assert summary[-1] in '.?!)`', f"{nb.name}: summary ends mid-sentence: {summary!r}"
    mod = module_of(nb)
    if mod: assert ast.get_docstring(ast.parse(mod.read_text(encoding='utf-8'))) == summary

def test_defect_citations_land_on_the_list():
    page = '\n'.join(cells(ROOT / 'nbs' / 'seed_defects.ipynb', 'markdown'))
    listed = [int(n) for n in re.findall(r'^(\d+)\. <a id="defect-(?:\d+)"></a>', page, re.M)]
    assert listed == list(range(1, len(listed) + 1)) and len(listed) >= 10
    for n in listed: assert f'<a id="defect-{n}"></a>' in page
    for nb in NBS:
        for s in cells(nb, 'markdown'):
            for n in re.findall(r'seed_defects\.ipynb#defect-(\d+)', s): assert int(n) in listed, (nb.name, n)
            bare = re.findall(r'(?<!\[)\bdefects? \d+(?![^\[]*\]\()', s)
            assert not bare, f"{nb.name}: unlinked defect citation {bare}"

def _mixed(src: str) -> bool:
    "nbdev's docs build runs a cell that imports; with other code in it the lesson runs without its earlier cells."
    lines = src.split('\n')
    dirs = [l[3:].split()[0] for l in lines if l.startswith('#|') and l[3:].split()]
    if set(dirs) & {'export', 'exports', 'exporti', 'exec_doc', 'eval:'} or 'nbdev_export()' in src: return False
    try: tree = ast.parse('\n'.join(l for l in lines if not l.lstrip().startswith(('%', '!'))))
    except SyntaxError: return False
    has = lambda types: any(isinstance(n, types) for n in ast.walk(tree))
    return has((ast.Import, ast.ImportFrom)) and has((ast.Expr, ast.Assign))

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_imports_in_their_own_cells(nb):
    "nbdev_docs executes every cell holding an import (FAQ: 'cells containing imports and other code'): keep them apart."
    bad = [s.split('\n')[0] for s in cells(nb, 'code') if _mixed(s)]
    assert not bad, f"{nb.name}: move the imports of these cells into the hidden test-import cell: {bad}"

BAD_OUTPUT = re.compile(r'/tmp/|/work/|/root/|/home/|PosixPath\(|\bat 0x[0-9a-f]+|\d{4}-\d{2}-\d{2}[ T]\d\d:\d\d|Traceback')

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_stored_outputs_are_short_and_clean(nb):
    "Stored outputs show what a lesson cell produces: short text, no machine paths, dates, tracebacks or images."
    for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
        for o in c.get('outputs', []):
            assert o['output_type'] in ('stream', 'execute_result', 'display_data'), (nb.name, o['output_type'])
            assert o.get('name', 'stdout') == 'stdout', f"{nb.name}: stored stderr"
            data = {'text': o['text']} if 'text' in o else o['data']
            assert set(data) <= {'text', 'text/plain', 'text/markdown', 'text/html'}, (nb.name, set(data))
            for mime, v in data.items():
                s = ''.join(v) if isinstance(v, list) else v
                assert len(s) <= (6000 if mime == 'text/html' else 2000), f"{nb.name}: a {len(s)}-character output"
                assert not BAD_OUTPUT.search(s), f"{nb.name}: output holds {BAD_OUTPUT.search(s).group(0)!r}"
