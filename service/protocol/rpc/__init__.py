"""The Open Inference Protocol over gRPC, a second protocol on the one data plane: the gRPC edge (edge.py), the
inference service (inference.py), the health service (health.py), and the server each worker runs (server.py)
on nnserve's own HTTP/2 (http2.py)."""
