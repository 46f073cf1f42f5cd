"""The evaluation command's tests use the evaluation tests' project and endpoint stub."""

from tests.evaluate.conftest import project_dir, stub_endpoint  # noqa: F401 - fixtures
