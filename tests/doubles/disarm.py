"""What hostile code can always do in-process: turn the sandbox's audit-hook verdicts into no-ops. The sandbox tests
and bench/sandbox_overhead.py run it before each attack, so that what they test is what the kernel enforces."""
DISARM = '''
import sys as _s
_noop = (lambda *a, **k: None).__code__
for _m in list(_s.modules.values()):
    for _n in ('guard_verdict', 'file_verdict', 'net_verdict', 'process_verdict'):
        try: _f = getattr(_m, _n, None)
        except Exception: _f = None
        if callable(_f) and hasattr(_f, '__code__'): _f.__code__ = _noop
'''
