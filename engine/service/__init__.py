"""The service parts of `sigmatch run`: the daemon and its sources, the checkpoint store,
Prometheus metrics and the policy lookup."""
