"""Ray for a machine without network, within the device call's carry limit (64 MiB with the other folders).

    python bench/pack_ray.py DOWNLOADS OUT     # DOWNLOADS: `pip download ray==2.60.0` with its dependencies (cp312)

Writes OUT/ray-site.tar.xz (the ray wheel's files less what a local cluster of Python workers never loads: the Java
jar, the dashboard's web UI, and the rllib/serve/tune/train/data/llm libraries; about 79 MB -> 30 MB) and copies the
dependency wheels to OUT. On the GPU machine: `tar xJf OUT/ray-site.tar.xz -C .site` next to the pip install of the
wheels (a wheel is its files: extracting it is what `pip install --target` does, less the console scripts).
"""
from __future__ import annotations
import shutil, sys, tarfile, zipfile
from pathlib import Path

DROP = ('ray/jars/', 'ray/dashboard/client/', 'ray/rllib/', 'ray/serve/', 'ray/tune/', 'ray/train/', 'ray/data/',
        'ray/llm/', 'ray/air/examples/', 'ray/cpp/')

def main(src: str, out: str) -> int:
    s, o = Path(src), Path(out)
    o.mkdir(parents=True, exist_ok=True)
    whl = next(s.glob('ray-*.whl'))
    with zipfile.ZipFile(whl) as z, tarfile.open(o / 'ray-site.tar.xz', 'w:xz', preset=6) as t:
        for i in z.infolist():
            if i.is_dir() or i.filename.startswith(DROP): continue
            info = tarfile.TarInfo(i.filename); info.size = i.file_size
            info.mode = (i.external_attr >> 16) & 0o777 or 0o644
            with z.open(i) as f: t.addfile(info, f)
    for w in s.glob('*.whl'):
        if not w.name.startswith('ray-'): shutil.copy(w, o / w.name)
    for p in sorted(o.iterdir()): print(f"{p.stat().st_size / 2**20:6.1f} MiB  {p.name}")
    return 0

if __name__ == '__main__': sys.exit(main(*sys.argv[1:3]))
