"""The README's "Large artifacts: client settings" names MLflow's own variables.

Users copy these names into their shells; a misspelt or renamed one is silently ignored
by MLflow. Each name the section gives must be a variable of the installed MLflow
(``mlflow.environment_variables``), and each default it quotes as a number right after
the name must be MLflow's default, so upgrading MLflow fails here when one changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlflow.environment_variables as mlflow_env
import pytest

pytestmark = pytest.mark.unit
README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "### Large artifacts: client settings"
NAME = re.compile(r"`(MLFLOW_[A-Z0-9_]+)(?:=[^`]*)?`")
#: ``NAME` (default ...` : a number in parentheses right after the name.
QUOTED_DEFAULT = re.compile(r"`(MLFLOW_[A-Z0-9_]+)`\s+\((-?\d+)")


def section() -> str:
    text = README.read_text()
    start = text.index(HEADING)
    end = text.find("\n#", start + len(HEADING))
    return text[start:end]


def variables() -> dict[str, object]:
    return {
        v.name: v
        for v in vars(mlflow_env).values()
        if isinstance(v, mlflow_env._EnvironmentVariable)
    }


def test_every_variable_the_section_names_exists_in_mlflow():
    names = set(NAME.findall(section()))
    # The variables the section is about, so an emptied or moved section fails too.
    assert {
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
        "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE",
        "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE",
        "MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE",
    } <= names
    assert sorted(names - variables().keys()) == []


def test_every_default_the_section_quotes_is_mlflows():
    quoted = dict(QUOTED_DEFAULT.findall(section()))
    assert len(quoted) >= 4, quoted
    known = variables()
    wrong = {
        name: (value, known[name].default)
        for name, value in quoted.items()
        if str(known[name].default) != value
    }
    assert wrong == {}
