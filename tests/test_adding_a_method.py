"""The example in docs/adding_a_method.md is a working method: its code block is run here and put through the
whole method contract (the tests of test_method_contract.py, with this module's ``contract_run`` fixture)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_method_contract import (  # noqa: E402,F401  (collected here again, on the example method)
    loaded,
    test_evaluates,
    test_exports_every_declared_kind,
    test_renders_every_declared_output,
    test_trains_on_its_default_demo_checkpoints_and_resumes,
    test_viewer_renders_a_frame,
    train_and_resume,
)

DOC = Path(__file__).parents[1] / "docs" / "adding_a_method.md"


def example_source() -> str:
    text = DOC.read_text()
    section = text[text.index("## 3. The smallest complete method") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory):
    from recon.methods import get_method

    # Run the block as the module file it stands for would be imported (registering the method); dont_inherit:
    # this file's `from __future__ import annotations` must not apply to it.
    module = types.ModuleType("recon_docs_example")
    sys.modules[module.__name__] = module
    exec(compile(example_source(), str(DOC), "exec", dont_inherit=True), module.__dict__)
    assert get_method("blobs") is module.Blobs
    return "blobs", train_and_resume("blobs", tmp_path_factory.mktemp("blobs"))
