"""What happens to finished runs: comparing them with error bars, sweeping settings over seeds,
and pushing a run to the hub."""
