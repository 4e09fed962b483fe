"""What runs on each node: rendezvous from the allocation, the torchrun argv, the NodeTask."""
