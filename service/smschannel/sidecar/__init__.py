"""The HTTP sidecar: receives Instasent's callbacks and turns them into RPCs on the server."""
