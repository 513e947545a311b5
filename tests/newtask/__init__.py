"""A task nnserve does not ship, added as a user would add one: this package and one registration line
(tests/integration/test_new_task.py makes the line, serves a model of it, and checks it all)."""
