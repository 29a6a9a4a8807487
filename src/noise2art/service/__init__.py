"""The service: `noise2art serve` (FastAPI app, job worker, security) over the store."""
