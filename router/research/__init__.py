"""Offline research on routing: evaluation on public routing tables (`skiff router eval`), the
metrics it reports, the data loaders, an embedding cache, and fitting the prior skiff ships.
The runtime router never imports this package (an import-linter contract says so)."""
