"""The committed stubs in adapters/cri/gen are what specs/cri/api.proto generates, and the proto
keeps the upstream runtime.v1 names and field numbers kubelet and crictl rely on."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

from adapters.cri.gen import api_pb2 as pb
from adapters.cri.gen.build import GEN_DIR, OUTPUTS
from adapters.cri.gen.build import generate_here as generate
from adapters.protogen import STAMP, generator_version


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    descriptors = tmp_path / "api.desc"
    out = generate(tmp_path, descriptors)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file[-1]
    _drop_json_names(fresh)  # protoc adds them to descriptor sets, not to the embedded descriptor
    committed = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(committed)
    assert committed == fresh, "specs/cri/api.proto changed: run python -m adapters.cri.gen.build"
    if (GEN_DIR / STAMP).read_text() == generator_version():  # same generator: byte-identical output
        for name in OUTPUTS:
            assert (out / name).read_bytes() == (GEN_DIR / name).read_bytes(), f"{name} is stale"


def _drop_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    def walk(message: descriptor_pb2.DescriptorProto) -> None:
        for f in message.field:
            f.ClearField("json_name")
        for nested in message.nested_type:
            walk(nested)

    for message in file.message_type:
        walk(message)


def test_wire_names_and_numbers_are_upstreams() -> None:
    assert pb.DESCRIPTOR.package == "runtime.v1"
    runtime = pb.DESCRIPTOR.services_by_name["RuntimeService"]
    image = pb.DESCRIPTOR.services_by_name["ImageService"]
    assert {"RunPodSandbox", "ExecSync", "ListContainerStats", "UpdateRuntimeConfig", "Exec"} <= set(
        runtime.methods_by_name
    )
    assert set(image.methods_by_name) == {"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"}
    numbers = {f.name: f.number for f in pb.ContainerConfig.DESCRIPTOR.fields}
    assert numbers["log_path"] == 11 and numbers["linux"] == 15 and numbers["windows"] == 16
    security = {f.name: f.number for f in pb.LinuxContainerSecurityContext.DESCRIPTOR.fields}
    assert security["run_as_group"] == 12 and security["seccomp"] == 15 and security["apparmor_profile"] == 9
    sandbox = {f.name: f.number for f in pb.PodSandboxStatusResponse.DESCRIPTOR.fields}
    assert sandbox == {"status": 1, "info": 2, "containers_statuses": 3, "timestamp": 4}
