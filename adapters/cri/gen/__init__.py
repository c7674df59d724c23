"""Python stubs generated from ``specs/cri/api.proto`` (package ``runtime.v1``); do not edit.

Regenerate with ``python -m adapters.cri.gen.build``.
"""
