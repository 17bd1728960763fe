"""tools/nbclean.py: stable notebook metadata, the Colab install cell, executed
cells."""

import sys

import nbformat

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import nbclean  # noqa: E402
from book import repository_url, toc_files, toc_notebooks  # noqa: E402


def executed_notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(nbclean.install_cell_source(), execution_count=1)
    ]
    for count, source in enumerate(sources, start=2):
        nb.cells.append(nbformat.v4.new_code_cell(source, execution_count=count))
    return nbclean.clean(nb)


def test_every_chapter_is_clean_and_fully_executed(capsys):
    assert nbclean.main(["--check"]) == 0


def test_every_chapter_in_the_table_of_contents_exists():
    stems = [path.stem for path in toc_notebooks()]
    # The data page comes first: every chapter fetches its files through it.
    assert stems[:3] == ["appendix_data", "ch01_understanding_llms", "ch02_text_data"]
    for entry in toc_files():
        assert any((ROOT / f"{entry}{suffix}").exists() for suffix in (".md", ".ipynb"))


def test_the_install_cell_does_nothing_outside_colab_and_uses_the_repository():
    source = nbclean.install_cell_source()
    assert f"git+{repository_url()}" in source
    assert 'if "google.colab" in sys.modules:' in source
    # outside Colab: no pip, no error
    exec(compile(source, "install", "exec"), {})


def test_every_chapter_starts_with_the_install_cell():
    for path in toc_notebooks():
        first = next(
            c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
        )
        assert first.source == nbclean.install_cell_source(), path


def test_clean_fixes_kernelspec_and_metadata_but_keeps_outputs():
    nb = executed_notebook("print(1)")
    nb.metadata = {
        "kernelspec": {"name": "conda-env-x", "display_name": "x"},
        "widgets": {},
    }
    nb.cells[1].metadata = {
        "tags": ["b", "a", "a"],
        "execution": {"iopub.status.busy": "2026"},
        "collapsed": True,
    }
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    cleaned = nbclean.clean(nb)
    assert cleaned.metadata == {
        "kernelspec": nbclean.KERNELSPEC,
        "language_info": {"name": "python"},
    }
    assert cleaned.cells[1].metadata == {"tags": ["a", "b"]}
    assert (
        cleaned.cells[1].outputs[0].text == "1\n"
        and cleaned.cells[1].execution_count == 2
    )


def test_clean_inserts_a_missing_install_cell_which_then_needs_executing():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("x = 1", execution_count=1),
    ]
    cleaned = nbclean.clean(nb)
    assert cleaned.cells[1].source == nbclean.install_cell_source()
    assert any(
        "was not executed" in problem for problem in nbclean.execution_problems(cleaned)
    )


def test_clean_is_idempotent():
    once = nbclean.clean(executed_notebook("x = 1\n\n\n"))
    assert nbclean.serialize(nbclean.clean(once)) == nbclean.serialize(once)


def test_an_unexecuted_cell_is_a_problem():
    nb = executed_notebook("x = 1")
    nb.cells[1].execution_count = None
    assert nbclean.execution_problems(nb) == ["code cell 2 ('x = 1') was not executed"]


def test_out_of_order_execution_counts_are_a_problem():
    nb = executed_notebook("x = 1", "y = 2")
    nb.cells[1].execution_count, nb.cells[2].execution_count = 3, 2
    problems = nbclean.execution_problems(nb)
    assert len(problems) == 2 and "expected 2" in problems[0]


def test_an_error_output_is_a_problem_unless_the_cell_is_tagged_for_it():
    nb = executed_notebook("1 / 0")
    nb.cells[1].outputs = [
        nbformat.v4.new_output(
            "error", ename="ZeroDivisionError", evalue="", traceback=[]
        )
    ]
    assert nbclean.execution_problems(nb) == ["code cell 2 ('1 / 0') shows an error"]
    nb.cells[1].metadata["tags"] = ["raises-exception"]
    assert nbclean.execution_problems(nb) == []


def test_check_mode_reports_a_notebook_that_is_not_clean(tmp_path, capsys):
    nb = executed_notebook("x = 1")
    nb.metadata["kernelspec"] = {"name": "other", "display_name": "other"}
    path = tmp_path / "chapter.ipynb"
    path.write_text(nbformat.writes(nb), encoding="utf-8")
    assert nbclean.main(["--check", str(path)]) == 1
    assert "not clean" in capsys.readouterr().err
    assert nbclean.main([str(path)]) == 0
    assert nbclean.main(["--check", str(path)]) == 0


def test_cells_that_need_the_network_are_skipped_but_must_stay_empty():
    nb = executed_notebook("x = 1", "download()", "y = 2")
    nb.cells[2].metadata["tags"] = ["skip-execution", "nbval-skip"]
    nb.cells[2].execution_count = None
    nb.cells[3].execution_count = 3
    assert nbclean.execution_problems(nb) == []
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    assert nbclean.execution_problems(nb) == [
        "a cell tagged skip-execution has outputs: clear them"
    ]
