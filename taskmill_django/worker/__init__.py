"""The parts of a worker process, each doing one job on its own thread (see ``dispatcher``)."""
