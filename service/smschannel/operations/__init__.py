"""Use cases: each one orchestrates storage and domain rules for the API and the sidecar alike."""
