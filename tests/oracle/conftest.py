import pytest

from quantspec.oracle import GgmlUnavailable


@pytest.fixture(scope="session")
def ggml():
    from quantspec.oracle import ggml as load

    try:
        return load()
    except (GgmlUnavailable, OSError) as exc:
        pytest.skip(f"libggml from llama-cpp-python is not available: {exc}")
