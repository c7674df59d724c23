"""The built-in attestation service: verifiers per TEE, RVPS, appraisal policy, EAR building."""
