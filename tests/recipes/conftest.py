from __future__ import annotations

import pytest

from tests.recipes.synth_run import run_recipe


@pytest.fixture(scope="session")
def recipe_run(tmp_path_factory):
    """(tmp dir, CompletedProcess) of one CI-sized synthetic recipe run, shared by the
    recipe tests: data in tmp/data, the experiment in tmp/exp/tiny_char."""
    tmp = tmp_path_factory.mktemp("recipe")
    return tmp, run_recipe(tmp)
