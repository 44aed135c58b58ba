import pytest
from quant_helpers import tiny_vim, tiny_vmamba


@pytest.fixture(scope="session")
def vim_model():
    return tiny_vim()


@pytest.fixture(scope="session")
def vmamba_model():
    return tiny_vmamba()
