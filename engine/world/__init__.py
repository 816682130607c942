"""The synthetic world: generated subscribers, lists, areas, campaigns and traces (`gen`),
and the guided tour of `sigmatch demo` on one of them (`demo`)."""
