"""A TIR turn that ends (EOS: finish 'stop') right after its python block, as the 0.5B model does. Expected: the code runs
and the sample resumes with the real output, then answers 18. Seen: see the printout."""
import sys; sys.path.insert(0, 'tests')
from test_tir import solver, config, of, Step, say
for name, first in [('fence, then EOS in its own chunk', [Step(0.5, "Compute.\n```python\nprint(18)\n```", 10), Step(0.1, '', 1, 'stop')]),
                    ('fence and EOS in one chunk', [Step(0.5, "Compute.\n```python\nprint(18)\n```", 10, 'stop')])]:
    def script(req, first=first):
        return first if not req.prefix else say("It printed 18, so \\boxed{18}.", 20, 8)
    s, eng = solver(script, config())
    r = s.solve('q')
    e = of(r, 'sample_end')[0]
    print(f"{name}: answer {r.answer}, code_start {len(of(r, 'code_start'))}, tool_call {len(of(r, 'tool_call'))}, "
          f"sample_end finish={e.finish!r} tokens={e.tokens} text={e.text!r}")
