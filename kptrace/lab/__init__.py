"""Real netfilter in throwaway network namespaces: the kernel as the ground truth (root only)."""
