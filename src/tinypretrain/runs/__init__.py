"""What happens to finished runs: comparing them with error bars, sweeping settings over seeds, trying them
side by side on a web page (play), and pushing a run to the hub."""
