import pytest

from quantspec.oracle import GgmlAborted, GgmlUnavailable


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """An input on which ggml aborts has no ggml result to compare with."""
    try:
        return (yield)
    except GgmlAborted as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def ggml():
    from quantspec.oracle import ggml as load

    try:
        return load()
    except (GgmlUnavailable, OSError) as exc:
        pytest.skip(f"libggml from llama-cpp-python is not available: {exc}")
