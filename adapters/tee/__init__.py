"""TEE backends. Today: the sim TEE (no hardware) and trustee's ``sample`` evidence.

* ``sim_evidence`` - the signed sim quote (public: the KBS verifier imports it).
* ``measurement`` - the launch digest over the enclave agent's code and its enclave config.
* ``platform_key`` - the per-host platform key file (quoting-enclave stand-in).
* ``sim`` - ``SimTee`` / ``SampleTee`` evidence providers; ``cli`` - ``enclaveflow tee ...``;
  ``actions`` - ``tee.measure``.
"""
