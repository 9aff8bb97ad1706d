"""The Stage base: every stage kind is one registered class, and its runs hold exactly the files it declares."""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from ticketlab import paths
from ticketlab.stage import STAGE_MODULES, STAGES, Stage, describe, import_stage_kinds
from ticketlab.store import atomic_write_text, list_runs

PACKAGE = Path(__file__).parents[1] / "src" / "ticketlab"


@dataclass
class Note(Stage):
    """A stage kind of the tests': writes one note, and maybe a second."""

    KIND = "testnote"
    ARTIFACTS = ("note.txt",)
    MAY_WRITE = ("extra/*.txt",)

    @staticmethod
    def describe(hparams, summary):
        return f"a note of {summary['words']} words", {"val_acc": 0.5}


def _write(made, files):
    def write(_):
        for name in files:
            (made.run.path / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(made.run.file(name), "x")
        return {"words": len(files)}
    made.produce(False, lambda: ({}, None), write)


def test_a_stage_writes_its_declared_files_and_is_listed_and_described_by_its_class(tmp_path):
    made = Note(Note.run_for({"n": 1}, tmp_path))
    _write(made, ["note.txt", "extra/a.txt"])
    assert made.run.name.startswith("testnote-") and made.summary == {"words": 2} and not made.cached
    again = Note(Note.run_for({"n": 1}, tmp_path))
    _write(again, ["note.txt"])
    assert again.cached and again.summary == {"words": 2}
    [row] = list_runs(tmp_path)
    assert describe(row) == ("a note of 2 words", {"val_acc": 0.5})


@pytest.mark.parametrize("files, complaint", [(["note.txt", "stray.bin"], "wrote stray.bin, not in its ARTIFACTS"),
                                              (["extra/a.txt"], "did not write its artifacts note.txt")])
def test_a_stage_that_writes_an_undeclared_file_or_misses_a_declared_one_stops_unfinished(tmp_path, files, complaint):
    made = Note(Note.run_for({"n": 2}, tmp_path))
    with pytest.raises(RuntimeError, match=complaint):
        _write(made, files)
    assert not made.run.done


def test_a_kind_declared_by_two_classes_is_refused():
    with pytest.raises(TypeError, match="stage kind 'testnote' is declared twice"):
        class Impostor(Stage):
            KIND = "testnote"


def _declared_kinds() -> dict[str, str]:
    """Every `KIND = "..."` in a class of the package, by kind: the module that declares it."""
    kinds = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if (isinstance(item, ast.Assign) and [getattr(t, "id", None) for t in item.targets] == ["KIND"]
                            and isinstance(item.value, ast.Constant)):
                        module = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
                        kinds[item.value.value] = module
    return kinds


def test_every_stage_kind_is_declared_in_a_module_that_import_stage_kinds_imports():
    declared = _declared_kinds()
    assert set(declared) == {"train", "earlybird", "prune", "search", "shrink", "small", "level", "control", "ticket",
                             "lottery", "comparison", "structured", "valsize", "sweep", "sensitivity", "similarity",
                             "orthogonality"}
    assert set(declared.values()) <= set(STAGE_MODULES)
    import_stage_kinds()
    assert set(declared) <= set(STAGES)
    for kind in declared:
        assert STAGES[kind].KIND == kind and STAGES[kind].ARTIFACTS, kind


def test_every_artifact_a_stage_declares_is_a_name_from_paths():
    names = {value for value in vars(paths).values() if isinstance(value, str)}
    import_stage_kinds()
    for kind, stage in STAGES.items():
        if kind == "testnote":
            continue
        for pattern in stage.ARTIFACTS + stage.MAY_WRITE:
            assert pattern in names or pattern.startswith(paths.CHECKPOINTS + "/"), (kind, pattern)
