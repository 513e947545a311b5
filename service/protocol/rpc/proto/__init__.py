"""The Open Inference Protocol's gRPC messages and service: Triton's grpc_service.proto and model_config.proto
(NOTICE), a superset of KServe's V2 grpc_predict_v2.proto with the same package, service and messages; the
*_pb2 modules are generated from them (generate.py)."""
