"""Fixtures for the unpack tests (blob helpers live in unpack_helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_keys():  # type: ignore[no-untyped-def]
    from adapters.image.ocicrypt import LocalKeySource

    return LocalKeySource([])
