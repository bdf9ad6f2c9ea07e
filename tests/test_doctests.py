"""Every `>>>` example in the pure modules runs, and a wrong one fails the suite."""
import doctest
import importlib

import pytest

MODULES = ["zyn.scoring", "zyn.calibration", "zyn.evaluation", "zyn.prompts", "zyn.textstats", "zyn.answers", "zyn.api", "zyn.probe",
           "zyn.backends.remote.protocols", "zyn.integrations.chatformat", "zyn.corpus.select", "zyn.corpus.shards",
           "experiments.common.hacking", "zyn.backends.tokens", "zyn.integrations.shared"]
# These document their maths with examples; finding none means the runner lost them.
MUST_HAVE_EXAMPLES = {"zyn.scoring", "zyn.calibration", "zyn.evaluation"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _docstrings(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder().find(module) if t.examples]


def _run(test: doctest.DocTest) -> tuple[doctest.TestResults, str]:
    """Run one docstring's examples; the runner's report of any failure, as text."""
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    return runner.run(test, out=report.append, clear_globs=True), "".join(report)


EXAMPLES = [t for name in MODULES for t in _docstrings(name)]


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_examples_run(test):
    result, report = _run(test)
    assert result.failed == 0, report


@pytest.mark.parametrize("module_name", sorted(MUST_HAVE_EXAMPLES))
def test_maths_modules_have_examples(module_name):
    assert any(t.name.startswith(module_name + ".") for t in EXAMPLES)


def test_a_wrong_example_fails():
    # sigmoid(0) is 0.5, not 0.4: the runner must report it rather than pass silently
    wrong = doctest.DocTestParser().get_doctest(">>> sigmoid(0.0)\n0.4\n", {"sigmoid": lambda x: 0.5},
                                                "wrong", "wrong.py", 0)
    result, report = _run(wrong)
    assert result == (1, 1) and "Expected:\n    0.4\nGot:\n    0.5" in report
