"""The closed loop around the engine: what a campaign earned (uplift over its controls),
and, as they land, the report, what-if (diff) and why / why not (explain)."""
