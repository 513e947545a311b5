"""The protocol layer: HTTP (the typed /v1 routes and the Open Inference Protocol at /v2) through one
edge and one router; nothing below it knows HTTP."""
