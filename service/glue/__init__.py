"""BentoML and uvicorn glue: each change to them here, with the measured reason for it."""
