"""One stage contract, checked on the source: no stage package imports another, and no shared module imports a
stage. What two stages share lives below them (pipeline/*.py, pipeline/formats/, pipeline/tracking/); only the main
job runs the stages, so only it imports them. No module imports itself back through others (no import cycle), and
only the store (pipeline.paths, pipeline.storage) tells a local path from a URI.

Every import counts: at the top of a module or inside a function, absolute or relative, `import a.b` or
`from a import b`."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from pipeline.config import REPO_ROOT

STAGE_PACKAGES = ("data", "eda", "train", "evaluate", "predict", "report", "batch")
SHARED_PACKAGES = ("config", "formats", "retrain", "tracking")  # retrain: its job module is a top module (below)
MAIN_JOB = "pipeline.run"
# Above the stages: the main job, the retrain stage (it runs train and evaluate), the registry naming every
# stage, the command line built from it, and what a scheduler asks of the deployment (its workflows' stages).
# Nothing below them imports them, except the report, whose structure table documents the registry itself.
TOP_MODULES = (MAIN_JOB, "pipeline.retrain.job", "pipeline.stages", "pipeline.cli", "pipeline.deployment")
DOCUMENTS_THE_REGISTRY = {("pipeline.report.sections", "pipeline.stages")}


def module_name(path: Path, root: Path) -> str:
    """pipeline/predict/stage.py -> pipeline.predict.stage; pipeline/formats/__init__.py -> pipeline.formats."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str) -> Iterator[tuple[ast.stmt, str]]:
    """(statement, module it imports) for every import in the file; `from p import m` yields p and p.m, since m
    may be a module (`from pipeline import predict`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..data import y
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield node, base
            for alias in node.names:
                yield node, f"{base}.{alias.name}"


def modules_in(root: Path) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in STAGE_PACKAGES else None


def layering_violations(root: Path) -> list[str]:
    """One line per import that breaks the contract, naming the module, the line and the import."""
    found = []
    for module, path in modules_in(root).items():
        if module in TOP_MODULES:
            continue
        own = stage_of(module)
        seen = set()
        for node, imported in imports(path, module):
            target = stage_of(imported)
            top = next((m for m in TOP_MODULES if imported == m or imported.startswith(f"{m}.")), None)
            if top is not None and (module, top) not in DOCUMENTS_THE_REGISTRY:
                problem = f"imports {top}, which sits above the stages"
            elif target is not None and own is None:
                problem = f"is shared but imports stage package pipeline.{target}"
            elif target is not None and target != own:
                problem = f"is in stage package pipeline.{own} but imports stage package pipeline.{target}"
            else:
                continue
            line = f"{module} (line {node.lineno}: {ast.unparse(node)}) {problem}"
            if line not in seen:
                seen.add(line)
                found.append(line)
    return found


def test_no_stage_imports_another_and_no_shared_module_imports_a_stage():
    violations = layering_violations(REPO_ROOT / "pipeline")
    assert not violations, "stage contract broken:\n" + "\n".join(violations)


def test_every_package_is_known_as_a_stage_or_shared():
    """A new package must be declared here, so that it cannot slip past the check as 'shared' by accident."""
    packages = {p.parent.name for p in (REPO_ROOT / "pipeline").glob("*/__init__.py")}
    assert packages == set(STAGE_PACKAGES) | set(SHARED_PACKAGES)


def test_the_check_names_every_kind_of_import_across_the_layers(tmp_path):
    root = tmp_path / "pipeline"
    files = {
        "__init__.py": "",
        "run.py": "from pipeline.predict.stage import run_prediction\n",
        "scoring.py": "import numpy as np\nfrom pipeline import storage\n",
        "layout.py": "from pipeline.stages import STAGES\n",
        "storage.py": "def f():\n    from pipeline.predict import model_source\n",
        "formats/__init__.py": "",
        "formats/readers.py": "from ..data import ingest\n",
        "evaluate/__init__.py": "",
        "evaluate/stage.py": "from pipeline import predict, scoring\nimport pipeline.data.prepare as p\n"
                             "from . import figures\n",
        "evaluate/figures.py": "from pipeline.run import STAGES\n",
        "predict/__init__.py": "",
        "predict/model_source.py": "from .stage import x\nfrom ..evaluate.stage import y\n",
        "predict/stage.py": "",
        "data/__init__.py": "",
        "data/ingest.py": "",
        "data/prepare.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert layering_violations(root) == [
        "pipeline.evaluate.figures (line 1: from pipeline.run import STAGES) imports pipeline.run, which sits above "
        "the stages",
        "pipeline.evaluate.stage (line 1: from pipeline import predict, scoring) is in stage package "
        "pipeline.evaluate but imports stage package pipeline.predict",
        "pipeline.evaluate.stage (line 2: import pipeline.data.prepare as p) is in stage package pipeline.evaluate "
        "but imports stage package pipeline.data",
        "pipeline.formats.readers (line 1: from ..data import ingest) is shared but imports stage package "
        "pipeline.data",
        "pipeline.layout (line 1: from pipeline.stages import STAGES) imports pipeline.stages, which sits above the "
        "stages",
        "pipeline.predict.model_source (line 2: from ..evaluate.stage import y) is in stage package "
        "pipeline.predict but imports stage package pipeline.evaluate",
        "pipeline.storage (line 2: from pipeline.predict import model_source) is shared but imports stage package "
        "pipeline.predict",
    ]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Every module of the tree and the modules of the tree it imports, a package's own parents left out (importing
    pipeline.a.b runs pipeline/__init__.py and pipeline/a/__init__.py first: that is no cycle)."""
    modules = modules_in(root)
    return {module: {imported for _, imported in imports(path, module)
                     if imported in modules and imported != module and not module.startswith(f"{imported}.")}
            for module, path in modules.items()}


def import_cycles(root: Path) -> list[list[str]]:
    """Each group of modules that import one another, round or through others (Tarjan's strongly connected
    components), sorted; an import inside a function counts like one at the top."""
    graph, order, low, stack, found = import_graph(root), {}, {}, [], []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return sorted(found)


def test_no_module_imports_itself_back_through_others():
    assert import_cycles(REPO_ROOT / "pipeline") == []


def test_the_cycle_check_finds_a_cycle_closed_inside_a_function(tmp_path):
    root = tmp_path / "pipeline"
    files = {"__init__.py": "", "storage.py": "def f():\n    from pipeline import locks\n",
             "locks.py": "from pipeline import storage\n", "outputs.py": "from pipeline import locks, storage\n",
             "formats/__init__.py": "from pipeline.formats import idx\n", "formats/idx.py": "import pipeline.outputs\n"}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert import_cycles(root) == [["pipeline.locks", "pipeline.storage"]]


# The store: the only modules that look at a path's scheme. Elsewhere a path is asked (paths.local_path, is_uri,
# absolute, as_url) or handed to the store, so the local and remote cases cannot drift apart.
STORE_MODULES = ("pipeline.paths", "pipeline.storage")
# A file-system scheme, or the separator that every URI holds; tracking (sqlite:, http:) and registry (models:/)
# URIs are not paths and are not looked for.
FILE_SYSTEM_SCHEMES = ("file:", "hdfs:", "s3a:", "s3:", "s3n:", "gs:", "abfs:", "abfss:", "wasb:", "viewfs:")
# Strings that look like a scheme and are not one: a .keras file's model version is "file:<sha256 prefix>".
NOT_A_SCHEME = {("pipeline.batch.model", "file:")}


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and its functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def scheme_branches(root: Path) -> list[str]:
    """One line per string in code (not in a docstring or comment) outside the store that names a file-system
    scheme or the "://" separator: the module, the line and the string."""
    found = []
    for module, path in modules_in(root).items():
        if module in STORE_MODULES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        skip = docstrings(tree)
        strings = sorted((node.lineno, node.col_offset, node.value) for node in ast.walk(tree)
                         if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip)
        found += [f"{module} (line {line}): {text!r}" for line, _, text in strings
                  if (text == "://" or text.lower().startswith(FILE_SYSTEM_SCHEMES))
                  and (module, text) not in NOT_A_SCHEME]
    return found


def test_only_the_store_tells_a_local_path_from_a_uri():
    assert scheme_branches(REPO_ROOT / "pipeline") == []


def test_the_scheme_check_finds_every_way_of_asking(tmp_path):
    root = tmp_path / "pipeline"
    files = {"__init__.py": "", "storage.py": 'def f(p):\n    return "://" in p\n',
             "scoring.py": '"""Models on hdfs:// are copied."""\ndef f(p):\n    """file:// too."""\n'
                           '    if "://" not in p or p.startswith("file://"):\n        return p\n'
                           '    return f"file://{p}"  # s3a:// in a comment\n',
             "tracking.py": 'STORE = "sqlite:///x"\nREGISTRY = "models:/"\nSERVER = ("http://", "https://")\n'
                            'HDFS = "HDFS://nn/x"\n'}
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    assert scheme_branches(root) == [
        "pipeline.scoring (line 4): '://'", "pipeline.scoring (line 4): 'file://'",
        "pipeline.scoring (line 6): 'file://'", "pipeline.tracking (line 4): 'HDFS://nn/x'"]


def test_every_job_is_a_registered_stage_named_and_nothing_else():
    """jobs/<name>.py is `stage_job("<name>")`: its options, --from and the report come from the registry. The one
    other job is the main job, run_pipeline.py, which runs the registered stages in order."""
    from pipeline.stages import ALL_STAGES
    jobs = {path.stem: path for path in (REPO_ROOT / "jobs").glob("*.py")}
    assert set(jobs) - {"run_pipeline"} == {stage.name for stage in ALL_STAGES}
    for name, path in jobs.items():
        tree = ast.parse(path.read_text())
        made = [node.args for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "stage_job"]
        defined = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)]
        if name != "run_pipeline":
            assert [ast.literal_eval(args[0]) for args in made] == [name] and not defined, path
