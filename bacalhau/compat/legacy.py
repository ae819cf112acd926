"""Bacalhau 0.3 job specs (``APIVersion: V1beta1`` with ``Spec: {Engine: Docker, ...}``)
to our :class:`~bacalhau.models.JobSpec`, by the same rules as :mod:`bacalhau.compat.v1`."""

from __future__ import annotations

from typing import Any

from ..convert import to_data
from ..errors import ValidationError
from ..models import Deal, EngineSpec, InputSpec, JobSpec, OutputSpec, StorageSpec
from ._read import Doc, fail, message_of
from .sources import parse_data_url
from .units import parse_bytes, parse_cpu, parse_duration
from .v1 import Translated, parse_constraint

__all__ = ["spec_from_v03"]

_SOURCES = {"ipfs": "ipfs", "urldownload": "url", "inline": "inline"}


def _storage(doc: Doc, *, output: bool = False) -> tuple[StorageSpec | None, str, str]:
    """A 0.3 ``StorageSpec``: (source or None for an output, name, path)."""
    kind = doc.text("StorageSource", "IPFS") or "IPFS"
    name = doc.text("Name")
    path = doc.text("Path")
    cid = doc.text("CID")
    url = doc.text("URL")
    doc.skip("Metadata", "SourcePath")
    doc.done()
    ours = _SOURCES.get(kind.lower())
    if output:
        return None, name, path
    if ours is None:
        raise fail(doc.at("StorageSource"), f"{kind!r} has no counterpart (IPFS, URLDownload)")
    try:
        if ours == "ipfs" and cid:
            return StorageSpec.ipfs(cid), name, path
        if ours == "url" and url:
            return StorageSpec.from_url(url), name, path
        if ours == "inline" and url:
            return StorageSpec.inline(parse_data_url(url, field=doc.at("URL"))), name, path
    except ValidationError as exc:
        raise fail(doc.path, message_of(exc)) from None
    return None, name, path


def spec_from_v03(data: Any, *, path: str = "") -> Translated:
    """Translate a Bacalhau 0.3 job (the whole document, or its ``Spec``).

    Raises:
        ValidationError: naming the offending key (``Spec.Docker.Image``).
    """
    top = Doc.of(data, path)
    warnings: list[str] = []
    if top.has("Spec"):
        version = top.text("APIVersion")
        if version and version.lower() != "v1beta1":
            raise fail(top.at("APIVersion"), f"expected V1beta1 (Bacalhau 0.3), got {version!r}")
        top.skip("Metadata", "Status", "ID", "RequesterNodeID", "RequesterPublicKey", "ClientID")
        top.skip("CreatedAt")
        spec = top.doc("Spec")
        top.done()
    else:
        spec = top
    env: dict[str, str] = {}
    engine_name = spec.text("Engine").lower()
    docker, wasm = spec.doc("Docker"), spec.doc("Wasm")
    if engine_name == "docker":
        params: dict[str, Any] = {"image": docker.text("Image")}
        if docker.has("Entrypoint"):
            params["entrypoint"] = docker.texts("Entrypoint")
        params["cmd"] = docker.texts("Parameters")
        if docker.text("WorkingDirectory"):
            params["workdir"] = docker.text("WorkingDirectory")
        for item in docker.texts("EnvironmentVariables"):
            key, sep, value = item.partition("=")
            if not sep:
                raise fail(docker.at("EnvironmentVariables"), f"{item!r} is not NAME=value")
            env[key] = value
        docker.done()
        if not params["image"]:
            raise fail(docker.at("Image"), "a Docker job needs an Image")
        engine = EngineSpec("docker", params)
    elif engine_name == "wasm":
        module, _, _ = _storage(wasm.doc("EntryModule"))
        if module is None:
            raise fail(wasm.at("EntryModule"), "a Wasm job needs an EntryModule with a CID")
        if wasm.raw("ImportModules"):
            raise fail(wasm.at("ImportModules"), "import modules have no counterpart here")
        engine = EngineSpec(
            "wasm",
            {
                "module": to_data(module),
                "entry_point": wasm.text("EntryPoint") or "_start",
                "args": wasm.texts("Parameters"),
            },
        )
        env.update(wasm.text_map("EnvironmentVariables"))
        wasm.done()
    elif engine_name == "noop":
        engine = EngineSpec("noop", {})
    else:
        raise fail(spec.at("Engine"), f"expected Docker, Wasm or Noop, got {engine_name!r}")
    verifier = spec.text("Verifier", "Noop").lower() or "noop"
    if verifier not in ("noop", "deterministic"):
        raise fail(spec.at("Verifier"), f"{verifier!r} has no counterpart (Noop, Deterministic)")
    publisher = spec.text("Publisher", "IPFS").lower() or "ipfs"
    if publisher == "estuary":
        warnings.append(f"{spec.at('Publisher')}: Estuary is gone; results are published to IPFS")
        publisher = "ipfs"
    if publisher not in ("ipfs", "noop", "local"):
        raise fail(spec.at("Publisher"), f"{publisher!r} has no counterpart (IPFS, Local, Noop)")
    inputs: list[InputSpec] = []
    for doc in spec.docs("inputs"):
        source, _, target = _storage(doc)
        if source is None:
            raise fail(doc.path, "an input needs a CID (IPFS) or URL (URLDownload)")
        try:
            inputs.append(InputSpec(source, target))
        except ValidationError as exc:
            raise fail(doc.at("Path"), message_of(exc)) from None
    outputs: list[OutputSpec] = []
    for doc in spec.docs("outputs"):
        _, name, target = _storage(doc, output=True)
        try:
            outputs.append(OutputSpec(name, target))
        except ValidationError as exc:
            raise fail(doc.path, message_of(exc)) from None
    resources = spec.doc("Resources")
    cpu = resources.raw("CPU", "") or None
    memory = resources.raw("Memory", "") or None
    disk = resources.raw("Disk", "") or None
    gpu = resources.raw("GPU", "") or "0"
    resources.done()
    network = spec.doc("Network")
    if str(network.raw("Type", "None")).lower() not in ("none", "", "0"):
        raise fail(network.at("Type"), "jobs run without network access here")
    network.skip("Domains")
    network.done()
    deal = spec.doc("Deal")
    concurrency = deal.integer("Concurrency", 1) or 1
    confidence = deal.integer("Confidence")
    min_bids = deal.integer("MinBids")
    deal.done()
    labels = spec.texts("Annotations")
    selectors = [parse_constraint(s) for s in spec.docs("NodeSelectors")]
    timeout = spec.raw("Timeout")
    spec.skip("DoNotTrack", "Sharding", "ExecutionPlan", "Contexts", "Language", "Job")
    spec.skip("JobSpecLanguage", "JobSpecDocker", "JobSpecWasm")
    spec.done()
    kwargs: dict[str, Any] = {}
    if timeout:
        kwargs["timeout"] = parse_duration(timeout, field=spec.at("Timeout"))
    if selectors:
        kwargs["selectors"] = tuple(selectors)
    from ..models import Resources

    defaults = Resources()
    try:
        res = Resources(
            cpu=parse_cpu(cpu, field=resources.at("CPU")) if cpu else defaults.cpu,
            memory=parse_bytes(memory, field=resources.at("Memory")) if memory else defaults.memory,
            disk=parse_bytes(disk, field=resources.at("Disk")) if disk else 0,
            gpu=int(gpu),
        )
    except ValidationError as exc:
        raise fail(exc.field or resources.path, message_of(exc)) from None
    except ValueError:
        raise fail(resources.at("GPU"), f"expected a whole number of GPUs, got {gpu!r}") from None
    try:
        out = JobSpec(
            engine=engine,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            env=env,
            resources=res,
            deal=Deal(concurrency=concurrency, confidence=confidence, min_bids=min_bids),
            verifier=verifier,
            publisher=publisher,
            labels=tuple(labels),
            **kwargs,
        )
    except ValidationError as exc:
        raise fail(f"{spec.path}.{exc.field or ''}".strip("."), message_of(exc)) from None
    return Translated(spec=out, warnings=tuple(warnings))
