"""The Instasent connector: the HTTP client of its Transactional API (and a faithful fake for tests)."""
