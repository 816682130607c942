"""One module per page of the console; each holds a `router` and maybe `NAV = (label, path)`."""
