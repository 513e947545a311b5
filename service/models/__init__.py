"""The models layer: the registry (the table of what is served, swapped in one assignment), the
planner (what to load), versions and their policy (the one control plane), management."""
