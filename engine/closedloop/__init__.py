"""The closed loop around the engine: what a campaign earned (`report`: uplift over its
controls, the non-responders), what a change would do (`diff`, the what-if) and why a
subscriber got an offer or not (`explain`)."""
