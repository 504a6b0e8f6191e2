"""Pure pieces of every workload the controller renders: names, owner references, inputs hashes, Secret refs, CA and claim mounts."""
