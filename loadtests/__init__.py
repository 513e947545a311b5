"""Load tests and benchmarks: Locust users, make bench and its peers, soak, overload, memory, rollout, swarm."""
