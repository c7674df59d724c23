from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("status", "agent_version", "uptime_seconds")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    status: str
    agent_version: str
    uptime_seconds: float
    def __init__(self, status: _Optional[str] = ..., agent_version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ...) -> None: ...

class IdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IdentityReply(_message.Message):
    __slots__ = ("tee", "launch_digest", "svn", "tee_public_key_sha256", "agent_version", "platform_id")
    TEE_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SVN_FIELD_NUMBER: _ClassVar[int]
    TEE_PUBLIC_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    tee: str
    launch_digest: str
    svn: int
    tee_public_key_sha256: str
    agent_version: str
    platform_id: str
    def __init__(self, tee: _Optional[str] = ..., launch_digest: _Optional[str] = ..., svn: _Optional[int] = ..., tee_public_key_sha256: _Optional[str] = ..., agent_version: _Optional[str] = ..., platform_id: _Optional[str] = ...) -> None: ...

class ActionFailure(_message.Message):
    __slots__ = ("names", "message", "retryable")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    message: str
    retryable: bool
    def __init__(self, names: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("action", "params_json", "idempotency_key", "run_id", "state", "attempt", "results_json", "input_json")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    action: str
    params_json: str
    idempotency_key: str
    run_id: str
    state: str
    attempt: int
    results_json: str
    input_json: str
    def __init__(self, action: _Optional[str] = ..., params_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., run_id: _Optional[str] = ..., state: _Optional[str] = ..., attempt: _Optional[int] = ..., results_json: _Optional[str] = ..., input_json: _Optional[str] = ...) -> None: ...

class RunReply(_message.Message):
    __slots__ = ("result_json", "failure", "replayed")
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    failure: ActionFailure
    replayed: bool
    def __init__(self, result_json: _Optional[str] = ..., failure: _Optional[_Union[ActionFailure, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ContainerRequest(_message.Message):
    __slots__ = ("container_id", "spec_json", "bundle", "timeout_seconds", "manifest_digest", "resources_json")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_JSON_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    spec_json: str
    bundle: str
    timeout_seconds: float
    manifest_digest: str
    resources_json: str
    def __init__(self, container_id: _Optional[str] = ..., spec_json: _Optional[str] = ..., bundle: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., manifest_digest: _Optional[str] = ..., resources_json: _Optional[str] = ...) -> None: ...

class ContainerReply(_message.Message):
    __slots__ = ("status_json", "failure")
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    status_json: str
    failure: ActionFailure
    def __init__(self, status_json: _Optional[str] = ..., failure: _Optional[_Union[ActionFailure, _Mapping]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("container_id", "follow", "offset")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    follow: bool
    offset: int
    def __init__(self, container_id: _Optional[str] = ..., follow: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("container_id", "cmd", "timeout_seconds")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    cmd: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    def __init__(self, container_id: _Optional[str] = ..., cmd: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class ExecReply(_message.Message):
    __slots__ = ("exit_code", "stdout", "stderr", "failure")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    stdout: bytes
    stderr: bytes
    failure: ActionFailure
    def __init__(self, exit_code: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., failure: _Optional[_Union[ActionFailure, _Mapping]] = ...) -> None: ...
