"""Sources fetch raw text (a file, stdin; later the local node, SSH, the Kubernetes API) and nothing else."""
