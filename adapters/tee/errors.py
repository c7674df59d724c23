"""Typed errors of the TEE adapter (sim evidence, platform key, launch measurement).

Every class name is a stable error ``name`` that workflow retry policies and the KBS can match on.
Messages are one sentence saying what went wrong and what to do next; they never carry key bytes,
report data contents beyond what is public, or evidence signatures.
"""

from __future__ import annotations

from engine.errors import PermanentError, TransientError


class TeeError(PermanentError):
    """Root of the TEE adapter's errors (all permanent: retrying the same evidence cannot help)."""


class MalformedEvidence(TeeError):
    """The evidence is not a well-formed sim evidence document (bad JSON, field, size or encoding)."""


class UntrustedPlatform(TeeError):
    """The evidence names a platform whose key the verifier was not told to trust."""


class EvidenceSignatureInvalid(TeeError):
    """The platform signature over the evidence does not verify: it was tampered with or forged."""


class ReportDataMismatch(TeeError):
    """The evidence's report_data does not bind the expected nonce and TEE public key."""


class PlatformKeyMissing(TeeError):
    """No platform key file exists where one was expected."""


class PlatformKeyInvalid(TeeError):
    """The platform key file exists but is unreadable, of the wrong type or has unsafe permissions."""


class MeasurementError(TeeError):
    """The launch measurement could not be computed (unreadable code file, config not JSON-able)."""


# -- the enclave and its agent ------------------------------------------------------------------------


class EnclaveLost(TransientError):
    """The pod's enclave is gone (agent killed, OOM, host reboot): its keyring and storage died with it.

    The engine reacts to this name: the run goes to the spec's ``on_enclave_lost`` state (rebuild the
    enclave, attest again), up to ``max_enclave_rebuilds``.
    """


class AgentUnavailable(TransientError):
    """The enclave is alive but its agent did not answer (starting, busy, or a broken connection)."""


class EnclaveStartFailed(PermanentError):
    """The sandbox tool could not start the enclave (bad config, missing program, no namespaces)."""


class AgentProtocolError(PermanentError):
    """The agent refused a call as malformed: unknown action, bad params, missing deadline, too large."""


class MissingDeadline(AgentProtocolError):
    """An agent call came without a deadline; every call must carry one so nothing hangs forever."""


class MessageTooLarge(AgentProtocolError):
    """A request or reply was larger than the agent's message limit."""


class AgentBusy(TransientError):
    """The agent is already running its maximum number of concurrent calls."""


class QuotingUnavailable(TransientError):
    """The host's quoting service did not answer the agent (its worker is restarting, or it refused)."""
