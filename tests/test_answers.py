"Streaming equivalence and linear work of `AnswerParser` on long realistic texts."
import random
import pytest
from aimo2_nb.answers import (AnswerParser, BoxedAnswer, CodeBlock, OutputFence, parse_all, extract_code,
                              boxed_answer, code_answer, normalize, _TAIL, _HEAD, _MAX_BOX)

BOXED = [r'42', r'\frac{1}{2}', r'1{,}000', r'42^\circ', r'\text{no solution}', r'0', r'-5', r'12.7', r'x = 17',
         r'\dfrac{84}{2}', r'\{1, 2\}', r'\left(\frac{3}{4}\right)', r'{{{7}}}', r'1\,000', r'\mathbf{99}']
PROSE = [r'Let $f(x) = x^{2} + \frac{a}{b}$ for all $x \in \{1, 2, 3\}$.', 'We count the cases carefully.',
         r'By AM-GM, $\sqrt{ab} \le \frac{a+b}{2}$, with equality iff $a=b$.', 'Wait, that is not right. Let me redo it.',
         r'So $\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$ and the remainder is small.', 'Check: ``inline`` backticks ` here.']
TOKENS = ['\\boxed', '\\boxed ', '\\fbox']
CODE = ['from sympy import *\nx = symbols("x")\nprint(solve(x**2 - 4, x))',
        'd = {1: {2: {3: 4}}}\ns = "\\\\boxed{9}"\nprint(len(d), s)',
        'ans = 0\nfor i in range(1000):\n    if i % 7 == 3:\n        ans += i\nprint("{", ans % 1000)',
        'def f(n):\n    return n*(n+1)//2\n\nprint(f(100))', 'print(r"\\fbox{1}" + "}}}")']

def realistic(n_chars: int, seed: int = 0):
    "A long model-like text, with the code blocks and well-formed boxed contents it holds (in order)."
    rng, parts, codes, boxed, size = random.Random(seed), [], [], [], 0
    while size < n_chars:
        k = rng.random()
        if k < 0.45: s = ' '.join(rng.choice(PROSE) for _ in range(rng.randint(1, 4))) + '\n'
        elif k < 0.65:
            b = rng.choice(BOXED); boxed.append(b)
            tok = rng.choice(TOKENS)
            s = f"Therefore the answer is ${tok}{{{b}}}$.\n"
        elif k < 0.8:
            c = rng.choice(CODE); codes.append(c)
            s = f"```{rng.choice(['python', 'py', 'python3', 'Python'])}\n{c}\n```\n"
            if rng.random() < 0.6:
                b = rng.choice(BOXED); boxed.append(b)
                s += f"```{rng.choice(['output', 'text', 'plaintext', 'stdout'])}\n{rng.randint(0, 999)}\n\\boxed{{{b}}}\n```\n"
        elif k < 0.88: s = '```latex\n\\begin{align} a &= b \\end{align}\n```\n'
        elif k < 0.94: s = 'An unfinished \\boxed{\\frac{1}{2 and then\n\nwe move on.\n'
        else: s = '\n'
        parts.append(s); size += len(s)
    return ''.join(parts), codes, boxed

TEXT, CODES, BOXES = realistic(60_000)

def feed_chunks(text, sizes):
    p, ev, i = AnswerParser(), [], 0
    for n in sizes:
        ev += p.feed(text[i:i + n]); i += n
        assert len(p._tail) <= _TAIL and len(p._head) <= _HEAD
        if i >= len(text): break
    return ev + p.finish(), p

def test_realistic_text_is_parsed():
    assert len(TEXT) >= 50_000
    ev = parse_all(TEXT)
    assert extract_code(TEXT) == CODES
    assert [e.raw for e in ev if isinstance(e, BoxedAnswer)] == BOXES
    assert sum(isinstance(e, OutputFence) for e in ev) > 10
    for e in ev:
        if isinstance(e, BoxedAnswer): assert TEXT[e.start:e.end] in (f'\\boxed{{{e.raw}}}', f'\\boxed {{{e.raw}}}', f'\\fbox{{{e.raw}}}')
        if isinstance(e, CodeBlock): assert TEXT[e.start:e.end].startswith('```') and TEXT[e.start:e.end].endswith(f'{e.code}\n```')
        if isinstance(e, OutputFence): assert TEXT[e.start:e.start + 3] == '```'
    assert [e.index for e in ev if isinstance(e, CodeBlock)] == list(range(len(CODES)))
    starts = [e.start for e in ev if not isinstance(e, OutputFence)]
    assert starts == sorted(starts)

def test_one_char_at_a_time_equals_whole():
    ev, p = feed_chunks(TEXT, [1] * len(TEXT))
    assert ev == parse_all(TEXT)
    assert p.text == TEXT and p.steps == len(TEXT)

@pytest.mark.parametrize('seed', range(5))
def test_random_chunks_equal_whole(seed):
    rng = random.Random(seed)
    text = TEXT if seed == 0 else realistic(20_000, seed)[0]
    sizes = [rng.choice([1, 2, 3, 5, 8, 17, 64, 300]) for _ in range(len(text))]
    assert feed_chunks(text, sizes)[0] == parse_all(text)

def test_ends_without_newline():
    for tail in ['```', '```\n', '```  ']:
        text = TEXT + '```python\nprint(1)\n' + tail
        assert feed_chunks(text, [1] * len(text))[0][-1] == CodeBlock('print(1)', len(CODES), len(TEXT), len(TEXT) + 22)

def steps_per_char(text):
    p = AnswerParser()
    for c in text: p.feed(c)
    p.finish()
    return p.steps / len(text)

@pytest.mark.parametrize('kind', ['realistic', 'unclosed_box', 'deep_braces', 'one_long_code_block'])
def test_work_is_linear(kind):
    "Work per character does not grow with the text: 20 KB and 200 KB cost the same per character."
    def make(n):
        if kind == 'realistic': return realistic(n, 1)[0]
        if kind == 'unclosed_box': return ('\\boxed{' + 'x' * 50 + ' ') * (n // 58)
        if kind == 'deep_braces': return '\\boxed{' + '{' * n
        return '```python\n' + 'x = {1: 2}\n' * (n // 11) + '```\n'
    small, big = steps_per_char(make(20_000)), steps_per_char(make(200_000))
    assert 0.5 <= big / small <= 2.0
    assert big <= 1.0

def test_unclosed_box_is_abandoned_and_later_answers_count():
    text = '\\boxed{' + 'y' * (_MAX_BOX + 10) + ' then \\boxed{5}'
    assert [e.value for e in parse_all(text) if isinstance(e, BoxedAnswer)] == [5]

def test_whole_text_helpers():
    assert boxed_answer(TEXT) == normalize(BOXES[-1])
    assert code_answer('\\boxed{0}') == 0 and code_answer('Answer: 0\n7') == 0
