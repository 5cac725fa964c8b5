"""The package's import graph: every import of a fastnn module by another, at module
level and inside functions alike (a function-level import only hides a circle until the
function runs; imports under `if TYPE_CHECKING:` never run and do not count), read from
the source with ast. No circle between fastnn.distributed and fastnn.nn, the MPI
helpers a leaf, and no circle elsewhere beyond those listed here as still open."""

import ast
from pathlib import Path

import fastnn

ROOT = Path(fastnn.__file__).resolve().parent

# Circles that exist in the sources today, each an import graph's strongly connected
# component (or a part of one). Remove an entry once its circle is gone; a circle not
# listed here, or one that grows, fails the tests.
KNOWN_UNIT_CYCLES = []
# Modules inside the package that import from the package itself (a circle through
# fastnn/__init__, which imports them): none; fastnn._version holds the version.
KNOWN_ROOT_IMPORTS = set()


def _modules():
    """{dotted name: (path, is a package)} for every .py file of fastnn."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


MODULES = _modules()
KNOWN_MODULE_CYCLES = [
    *KNOWN_UNIT_CYCLES,
]


def _run_time_nodes(tree):
    """Every node of tree except those under `if TYPE_CHECKING:` (imports for type
    annotations only, which never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(name):
    """The fastnn modules that module `name` imports anywhere in its source. `from X
    import y` imports X.y when that is a module of the package, else X (a name defined
    in X, or a compiled extension of X's folder)."""
    path, package = MODULES[name]
    here = name if package else name.rpartition(".")[0]
    found = set()
    for node in _run_time_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fastnn")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "fastnn":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    found.discard(name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _unit(name):
    """The top-level part of the package a module belongs to: fastnn.nn for
    fastnn.nn.linear, fastnn.distributed for itself."""
    return ".".join(name.split(".")[:2])


def _without_root(graph):
    """The graph without imports of the package itself (see KNOWN_ROOT_IMPORTS)."""
    return {m: {t for t in targets if t != "fastnn"} for m, targets in graph.items()}


def _units(graph):
    units = {}
    for m, targets in graph.items():
        units.setdefault(_unit(m), set()).update(_unit(t) for t in targets)
    return {u: targets - {u} for u, targets in units.items()}


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for t in graph.get(todo.pop(), ()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def _cycles(graph):
    """The strongly connected components of more than one node."""
    reach = {n: _reachable(graph, n) for n in graph}
    components = {frozenset({n} | {m for m in reach[n] if n in reach.get(m, ())})
                  for n in graph}
    return sorted((set(c) for c in components if len(c) > 1), key=sorted)


def _unknown(cycles, known):
    return [sorted(c) for c in cycles if not any(c <= k for k in known)]


def test_the_graph_is_read():
    assert "fastnn.nn.syncbatchnorm" in MODULES and "fastnn.nn" in MODULES
    assert {"fastnn._mpi", "fastnn.nn.batchnorm", "fastnn.nn.container"} <= GRAPH[
        "fastnn.nn.syncbatchnorm"]
    assert "fastnn._mpi" in GRAPH["fastnn.distributed"]
    assert "fastnn.train" in GRAPH["fastnn"]  # the package imports its parts


def test_distributed_and_nn_do_not_import_each_other():
    """Not directly, not through other modules: layers declare what data parallelism
    needs (Module.collective, buffer names), and both sides share fastnn._mpi."""
    nn = {m for m in MODULES if _unit(m) == "fastnn.nn"}
    from_distributed = _reachable(GRAPH, "fastnn.distributed")
    assert not from_distributed & nn, sorted(from_distributed & nn)
    for m in sorted(nn):
        assert "fastnn.distributed" not in _reachable(GRAPH, m), m


def test_mpi_helpers_are_a_leaf():
    assert GRAPH["fastnn._mpi"] == set()


def test_augment_runs_transforms_by_what_they_declare():
    """The planner, the stages and the runner read what transforms declare (role,
    border, fixes_size, antialias): none imports a module of transforms or Compose,
    through any path, so that Transform.__call__ can run in a Runner."""
    transforms = {f"fastnn.augment.{m}" for m in
                  ("_transform", "_affine", "_flip_crop", "_distortion", "_compose",
                   "_preview")}
    for m in ("_plan", "_stages", "_runner"):
        reached = _reachable(GRAPH, f"fastnn.augment.{m}") & transforms
        assert not reached, (m, sorted(reached))


def test_no_module_cycles():
    assert _unknown(_cycles(_without_root(GRAPH)), KNOWN_MODULE_CYCLES) == []


def test_no_cycles_between_the_parts_of_the_package():
    """fastnn.nn, fastnn.optim, fastnn.distributed, fastnn.io, ... as one node each: a
    part that imports another is never imported by it, through any path."""
    assert _unknown(_cycles(_units(_without_root(GRAPH))), KNOWN_UNIT_CYCLES) == []


def test_modules_do_not_import_the_package_itself():
    """fastnn/__init__ imports the parts of the package: a part that imports from it
    closes a circle. Only the command line (fastnn.__main__, which nothing imports)
    may."""
    importers = {m for m, targets in GRAPH.items() if "fastnn" in targets}
    assert importers - {"fastnn.__main__"} <= KNOWN_ROOT_IMPORTS, sorted(importers)


def test_cycles_are_found():
    """The detection itself, on a small graph."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [{"a", "b", "c"}]
    assert _unknown(_cycles(graph), [{"a", "b", "c", "x"}]) == []
    assert _unknown(_cycles(graph), [{"a", "b"}]) == [["a", "b", "c"]]
