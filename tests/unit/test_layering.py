"""The dependency direction of design.md, checked by scanning imports."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]

ALLOWED: dict[str, set[str]] = {
    "raft": set(),
    "natsd": set(),
    "jetstream": {"raft", "natsd"},
    "meta": {"raft", "natsd", "jetstream"},
    "cli": {"raft", "natsd", "jetstream", "meta", "jepsen"},
    "jepsen": set(),
}

# Pure cores: modules that must not do I/O or read the clock.
PURE_FORBIDDEN = {"trio", "socket", "sqlite3", "time", "asyncio", "threading", "subprocess"}


def imported_roots(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layering_violations(root: pathlib.Path) -> list[str]:
    bad = []
    for pkg, allowed in ALLOWED.items():
        for path in sorted((root / pkg).rglob("*.py")):
            for lineno, name in imported_roots(path):
                top = name.split(".")[0]
                if top in ALLOWED and top != pkg and top not in allowed:
                    bad.append(f"{path.relative_to(root)}:{lineno} imports {name}")
    return bad


def test_import_direction() -> None:
    assert layering_violations(ROOT) == []


def test_checker_catches_a_violation(tmp_path: pathlib.Path) -> None:
    for pkg in ALLOWED:
        (tmp_path / pkg).mkdir()
    (tmp_path / "raft" / "bad.py").write_text("import natsd.protocol\n")
    (tmp_path / "jetstream" / "ok.py").write_text("from raft import core\n")
    assert layering_violations(tmp_path) == ["raft/bad.py:1 imports natsd.protocol"]


def test_pure_cores_do_no_io() -> None:
    """Modules that mark themselves with a `# pure-core` line (in their first five lines) import
    nothing that does I/O or reads the clock."""
    bad = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in ALLOWED:
            continue
        text = path.read_text(encoding="utf-8")
        if not any(line.strip() == "# pure-core" for line in text.splitlines()[:5]):
            continue
        for lineno, name in imported_roots(path):
            if name.split(".")[0] in PURE_FORBIDDEN:
                bad.append(f"{rel}:{lineno} imports {name}")
    assert bad == []
