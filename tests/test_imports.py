"""The import rules of ARCHITECTURE.md, read from the source (ast), so the layout stays one way.

* no import cycles among the project's modules (lazy imports inside functions count: a cycle
  hidden in a function is still two modules that cannot be understood apart);
* no stage imports the daemon or a command line (edge.daemon, edge.cli, calibration.cli), and
  calibration never imports edge.cli; the stages of the flow never import edge.pipeline;
* tensorrt, pycuda, jtop and GStreamer pipelines each live in one module.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "calibration")
# Modules that only wire stages together: the only ones that may import the daemon or a CLI.
TOP = {"edge.cli", "edge.__main__", "calibration.cli", "calibration.__main__"}
FORBIDDEN_FOR_STAGES = {"edge.daemon", "edge.cli", "calibration.cli"}
# Hardware and platform seams: (what, the one module allowed to use it).
SEAMS = {
    "tensorrt": "edge.inference.engines.trt_api",
    "pycuda": "edge.inference.engines.cuda",
    "jtop": "edge.health.jetson",
}
# The stages of the flow, which the pipeline strings together: none of them imports the pipeline.
STAGES = ("edge.capture", "edge.inference", "edge.parse", "edge.track", "edge.fall", "edge.skeleton", "edge.alerts")
GSTREAMER_MARKERS = ("nvarguscamerasrc", "CAP_GSTREAMER", "appsink")
GSTREAMER_HOME = "edge.capture.sources"


def module_files(root: Path, packages: Iterable[str] = PACKAGES) -> Dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(name: str, path: Path, known: Set[str]) -> List[Tuple[str, int]]:
    """``(imported module, line)`` for each import in the file (top level or inside functions), the
    project's modules resolved to the deepest known module; others by their top-level name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def resolve(dotted: str) -> str:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                return ".".join(parts[:end])
        return parts[0]

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(resolve(a.name), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from edge.x import y` may import the module edge.x.y
                candidate = "%s.%s" % (module, alias.name)
                found.append((candidate if candidate in known else resolve(module), node.lineno))
    return [(m, line) for m, line in found if m != name]


def import_graph(root: Path = REPO) -> Dict[str, Dict[str, int]]:
    files = module_files(root)
    known = set(files)
    graph: Dict[str, Dict[str, int]] = {}
    for name, path in files.items():
        graph[name] = {}
        for module, line in imports_of(name, path, known):
            graph[name].setdefault(module, line)
    return graph


def cycles(graph: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def problems(root: Path = REPO) -> List[str]:
    """Every broken rule, one line each."""
    graph = import_graph(root)
    found = ["import cycle: " + " <-> ".join(c) for c in cycles(graph)]
    for name, imported in sorted(graph.items()):
        if name.startswith("calibration.") and "edge.cli" in imported:
            found.append("%s imports edge.cli (line %d): calibration never imports the fallwatch CLI"
                         % (name, imported["edge.cli"]))
        if "edge.pipeline" in imported and any(name == s or name.startswith(s + ".") for s in STAGES):
            found.append("%s imports edge.pipeline (line %d): the pipeline strings the stages together, not "
                         "the other way round" % (name, imported["edge.pipeline"]))
        if name not in TOP:
            for module in sorted(FORBIDDEN_FOR_STAGES & set(imported)):
                found.append("%s imports %s (line %d): stages never import the daemon or a CLI"
                             % (name, module, imported[module]))
        for what, home in SEAMS.items():
            if what in imported and name != home:
                found.append("%s imports %s (line %d): only %s may" % (name, what, imported[what], home))
    for name, path in sorted(module_files(root).items()):
        text = path.read_text(encoding="utf-8")
        if name != GSTREAMER_HOME and any(marker in text for marker in GSTREAMER_MARKERS):
            found.append("%s builds GStreamer pipelines: only %s may" % (name, GSTREAMER_HOME))
    return found


def test_the_project_keeps_its_import_rules():
    assert problems() == []


def test_the_seams_are_where_the_rules_say():
    """The rules name real modules: a seam that moved would make its rule vacuous."""
    files = module_files(REPO)
    graph = import_graph()
    for what, home in SEAMS.items():
        assert home in files, home
        assert what in graph[home], "%s no longer imports %s" % (home, what)
    assert any(m in files[GSTREAMER_HOME].read_text() for m in GSTREAMER_MARKERS)


def _write(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


@pytest.mark.parametrize("files, expected", [
    # the cycles this layout removed, as they were: engines <-> pose (a lazy import inside a function) ...
    ({"edge/engines/__init__.py": "def create():\n    from edge.engines.tensorrt import open_checked\n",
      "edge/engines/tensorrt.py": "from edge.engines import EngineError\n"
                                  "def check():\n    from edge.pose import model_path\n",
      "edge/pose.py": "from edge.engines import Engine\n"},
     "import cycle: edge.engines <-> edge.engines.tensorrt <-> edge.pose"),
    # ... and mqtt <-> mqttcheck
    ({"edge/mqtt.py": "def check():\n    from edge.mqttcheck import run_checks\n",
      "edge/mqttcheck.py": "from edge.mqtt import Topics\n"},
     "import cycle: edge.mqtt <-> edge.mqttcheck"),
    ({"edge/a.py": "from . import b\n", "edge/b.py": "from .a import x\n"}, "import cycle: edge.a <-> edge.b"),
    ({"calibration/data.py": "def f():\n    from edge.cli import load_config_for\n", "edge/cli.py": ""},
     "calibration.data imports edge.cli (line 2): stages never import the daemon or a CLI"),
    ({"calibration/cli.py": "from edge.cli import load_config_for\n", "edge/cli.py": ""},
     "calibration.cli imports edge.cli (line 1): calibration never imports the fallwatch CLI"),
    ({"edge/fall.py": "import edge.daemon\n", "edge/daemon.py": ""},
     "edge.fall imports edge.daemon (line 1): stages never import the daemon or a CLI"),
    ({"edge/pose.py": "def f():\n    import tensorrt as trt\n"},
     "edge.pose imports tensorrt (line 2): only edge.inference.engines.trt_api may"),
    ({"edge/board.py": "from jtop import jtop\n"}, "edge.board imports jtop (line 1): only edge.health.jetson may"),
    ({"edge/track.py": "from edge.pipeline import People\n", "edge/pipeline.py": ""},
     "edge.track imports edge.pipeline (line 1): the pipeline strings the stages together, not the other way round"),
    ({"edge/replay.py": "PIPE = 'v4l2src ! appsink'\n"},
     "edge.replay builds GStreamer pipelines: only edge.capture.sources may"),
])
def test_each_rule_catches_what_it_is_for(tmp_path, files, expected):
    assert expected in problems(_write(tmp_path, files))
