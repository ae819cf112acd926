"""``bacalhau docker run`` argument handling (no engine needed)."""

from __future__ import annotations

import argparse
import doctest

import pytest

import bacalhau.cli.docker
from bacalhau.cli.docker import DEFAULT_OUTPUT, add_docker_parser, build_docker_job, spec_from_args
from bacalhau.errors import ValidationError
from bacalhau.models import InputSpec, OutputSpec, StorageSpec

CID = "QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bacalhau")
    add_docker_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_architecture_example_command_line() -> None:
    ns = parse(
        [
            "docker",
            "run",
            "-v",
            f"{CID}:/file.txt",
            "-o",
            "apples:/output_folder",
            "ubuntu",
            "bash",
            "-c",
            "cat /file.txt > /output_folder/file.txt",
        ]
    )
    assert (ns.command, ns.docker_command) == ("docker", "run")
    spec = spec_from_args(ns)
    assert spec.engine.type == "docker"
    assert spec.engine.params == {
        "image": "ubuntu",
        "cmd": ["bash", "-c", "cat /file.txt > /output_folder/file.txt"],
    }
    assert spec.inputs == (InputSpec(StorageSpec.ipfs(CID), "/file.txt"),)
    assert spec.outputs == (OutputSpec("apples", "/output_folder"),)


def test_flags_after_the_image_belong_to_the_command() -> None:
    ns = parse(["docker", "run", "--env", "A=1", "busybox", "ls", "-l", "--env", "-v", "x"])
    spec = spec_from_args(ns)
    assert spec.engine.params["cmd"] == ["ls", "-l", "--env", "-v", "x"]
    assert spec.env == {"A": "1"}


def test_limits_timeout_entrypoint_workdir_and_deal() -> None:
    ns = parse(
        [
            "docker",
            "run",
            "--cpu",
            "0.5",
            "--memory",
            "64Mi",
            "--timeout",
            "30",
            "--entrypoint",
            "/bin/sh",
            "-w",
            "/work",
            "-e",
            "K=v=w",
            "--concurrency",
            "3",
            "--confidence",
            "2",
            "--min-bids",
            "3",
            "--verifier",
            "deterministic",
            "--publisher",
            "local",
            "-l",
            "demo",
            "busybox",
            "-c",
            "echo hi",
        ]
    )
    spec = spec_from_args(ns)
    assert spec.resources.cpu == 0.5
    assert spec.resources.memory == 64 * 1024 * 1024
    assert spec.timeout == 30
    assert spec.engine.params["entrypoint"] == ["/bin/sh"]
    assert spec.engine.params["workdir"] == "/work"
    assert spec.engine.params["cmd"] == ["-c", "echo hi"]
    assert spec.env == {"K": "v=w"}
    assert (spec.deal.concurrency, spec.deal.confidence, spec.deal.min_bids) == (3, 2, 3)
    assert (spec.verifier, spec.publisher, spec.labels) == ("deterministic", "local", ("demo",))


def test_default_output_volume_unless_an_input_sits_there() -> None:
    assert build_docker_job("busybox").outputs == (DEFAULT_OUTPUT,)
    taken = build_docker_job("busybox", volumes=[f"{CID}:/outputs"])
    assert taken.outputs == ()
    assert build_docker_job("busybox", outputs=["a:/a"]).outputs == (OutputSpec("a", "/a"),)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"volumes": ["not-a-cid:/x"]}, "volume"),
        ({"volumes": [CID]}, "volume"),
        ({"outputs": ["apples"]}, "output"),
        ({"outputs": ["../x:/x"]}, "name"),
        ({"env": ["NOVALUE"]}, "env"),
        ({"memory": "lots"}, None),
        ({"cpu": 0}, "cpu"),
        ({"workdir": "rel"}, None),
    ],
)
def test_bad_arguments_name_what_is_wrong(kwargs: dict[str, object], field: str | None) -> None:
    with pytest.raises(ValidationError) as info:
        build_docker_job("busybox", **kwargs)  # type: ignore[arg-type]
    if field is not None:
        assert field in str(info.value)


def test_a_command_is_required_image() -> None:
    with pytest.raises(SystemExit):
        parse(["docker", "run"])


def test_module_docstring_example_runs() -> None:
    failures, tried = doctest.testmod(bacalhau.cli.docker)
    assert tried >= 2
    assert failures == 0
