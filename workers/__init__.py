"""Cloud execution (DESIGN §8): the Redis queue, the dispatcher, workers and their runtimes,
the recovery sweeper and callbacks."""
