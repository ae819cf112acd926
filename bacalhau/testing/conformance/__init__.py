"""Conformance suites: one set of checks per interface, run against every implementation.

=============================  ===================================================
:mod:`.transport`              :class:`~bacalhau.transport.base.Transport`
:mod:`.executor`               :class:`~bacalhau.executor.base.Executor`
:mod:`.storage`                :class:`~bacalhau.storage.base.StorageProvider`
:mod:`.publisher`              :class:`~bacalhau.publisher.base.Publisher`
:mod:`.verifier`               :class:`~bacalhau.verifier.base.Verifier`
=============================  ===================================================

Each module holds ``CHECKS`` (name -> async check) and what a check needs from you: a
factory (transports) or a *harness*, a small class that says how to make your
implementation and how to express the few things the checks ask of it. A harness
declares the optional ``features`` it can express; :func:`checks_for` lists the checks
that apply. A plugin's own test module runs the suite like this (the executor one)::

    from bacalhau.testing.conformance import executor as suite

    @pytest.mark.parametrize("check", suite.checks_for(MyHarness))
    async def test_conformance(check: str, tmp_path: Path) -> None:
        await suite.CHECKS[check](MyHarness(), tmp_path)

Importable without pytest. For compatibility, the transport suite's names are also
available from this package (``from bacalhau.testing.conformance import CHECKS``).
"""

from __future__ import annotations

from .transport import CHECKS, RecordingHandler, TransportFactory, running, status_count

__all__ = ["CHECKS", "RecordingHandler", "TransportFactory", "running", "status_count"]
