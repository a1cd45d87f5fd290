"""Domain rules: plain, mostly synchronous code over small dataclasses. No SQL, no gRPC."""
