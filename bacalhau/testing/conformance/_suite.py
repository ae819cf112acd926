"""What the harness-based suites share: a registry of checks with the features they need."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

H = TypeVar("H")

Check = Callable[[H, Path], Awaitable[None]]


class Suite(Generic[H]):
    """Named checks; each may need features that a harness declares it can express."""

    def __init__(self) -> None:
        self.checks: dict[str, Check[H]] = {}
        self.needs: dict[str, frozenset[str]] = {}

    def check(self, *needs: str) -> Callable[[Check[H]], Check[H]]:
        """Register ``check_NAME`` as ``NAME``, applicable when the harness has ``needs``."""

        def register(fn: Check[H]) -> Check[H]:
            name = fn.__name__.removeprefix("check_")
            self.checks[name] = fn
            self.needs[name] = frozenset(needs)
            return fn

        return register

    def checks_for(self, harness: Any) -> list[str]:
        """The names of the checks that apply to ``harness`` (a harness class or instance),
        sorted: those whose needed features are all in ``harness.features``."""
        features = frozenset(getattr(harness, "features", frozenset()))
        return sorted(name for name, needs in self.needs.items() if needs <= features)
