"""Containers inside the enclave: runc bundles from the CRI ContainerConfig, CRI logs, exit status.

``manager.ContainerManager`` is the API the agent calls; ``actions`` wraps it as the engine actions
``runtime.start`` and ``runtime.stop``.
"""
