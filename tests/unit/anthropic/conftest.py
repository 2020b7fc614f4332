from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from anthropic_fakes import FakeApi


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def client(api: FakeApi) -> Iterator[anthropic.Anthropic]:
    with api.client() as sdk:
        yield sdk
