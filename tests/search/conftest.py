"""Fixtures for search tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"
