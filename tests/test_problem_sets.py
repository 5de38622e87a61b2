"""The problem sets shipped in aimo2_nb/problems: each is listed in its README with a sha256 that matches the file,
reads as evaluation questions, and the GSM8K subset is the documented one (40 rows, ids by line, answers 0..999)."""
from __future__ import annotations
import hashlib, re
from pathlib import Path
from aimo2_nb.core import problem_csv
from aimo2_nb.eval import read_questions

PROBLEMS = Path(__file__).resolve().parents[1] / 'aimo2_nb' / 'problems'
README = (PROBLEMS / 'README.md').read_text(encoding='utf-8')


def test_every_shipped_set_is_listed_with_its_sha256():
    listed = dict((name, digest) for digest, name in re.findall(r'^    ([0-9a-f]{64})  (\S+\.csv)$', README, re.M))
    files = sorted(p.name for p in PROBLEMS.glob('*.csv'))
    assert sorted(listed) == files
    for name in files:
        assert hashlib.sha256((PROBLEMS / name).read_bytes()).hexdigest() == listed[name], name
        assert f'| {name} |' in README  # in the table too
        assert read_questions(name[:-4]) and all(q.gold is not None for q in read_questions(name[:-4]))


def test_gsm8k_subset_is_the_documented_one():
    qs = read_questions('gsm8k_test_40')
    assert problem_csv('gsm8k_test_40').name == 'gsm8k_test_40.csv'
    assert len(qs) == 40 and all(0 <= q.gold <= 999 for q in qs)
    lines = [int(q.id.removeprefix('gsm8k-test-')) for q in qs]
    assert lines == [n for n in range(1, 43) if n not in (3, 18)]  # the first 40 lines with an answer in 0..999
    assert qs[0].question.startswith('Janet\u2019s ducks lay 16 eggs per day.') and qs[0].gold == 18
    assert qs[-1].gold == 200 and 'b52325ad96ea38979fdc222e881ff5d105f95295' in README
