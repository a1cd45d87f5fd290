"""The SMS channel service: gRPC server, storage, domain rules and the callback sidecar."""
