"""Everything that reads the outside world: profiles, lists, areas and traces."""
