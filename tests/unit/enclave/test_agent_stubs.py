"""The committed agent stubs are what specs/agent.proto generates (they cannot go stale silently)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

from adapters.protogen import STAMP, generator_version
from adapters.tee.agent.gen import agent_pb2 as pb
from adapters.tee.agent.gen.build import GEN_DIR, OUTPUTS, generate_here


def test_committed_agent_stubs_match_the_proto(tmp_path: Path) -> None:
    descriptors = tmp_path / "agent.desc"
    out = generate_here(tmp_path, descriptors)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file[-1]
    for message in fresh.message_type:
        for field in message.field:
            field.ClearField("json_name")  # descriptor sets carry them, the embedded descriptor does not
    committed = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(committed)
    assert committed == fresh, "specs/agent.proto changed: run python -m adapters.tee.agent.gen.build"
    if (GEN_DIR / STAMP).read_text() == generator_version():  # same generator: byte-identical output
        for name in OUTPUTS:
            assert (out / name).read_bytes() == (GEN_DIR / name).read_bytes(), f"{name} is stale"
    grpc_module = (GEN_DIR / "agent_pb2_grpc.py").read_text()
    assert "grpc._utilities" not in grpc_module  # public grpc API only
