"""The node daemon: the CRI socket, the engine workers, the pods' enclaves and the admin HTTP API."""
